// What every architecture's config parsing shares: the ModelSpec/ArchitectureDetails types, typed
// access to config.json, RoPE, activations and special tokens. Each adapter in src/model/architectures
// parses its own model_type's fields with these; architectures/index.ts dispatches on model_type.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.ts';
import type { ModelSpec } from './types.ts';

/** MLP non-linearity. `gelu_tanh` covers gelu_new / gelu_fast / gelu_pytorch_tanh (same formula). */
export type Activation = 'gelu' | 'gelu_tanh' | 'silu' | 'relu';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    };

export interface RopeConfig {
  theta: number;
  /** Leading dims of each head that are rotated (GPT-NeoX rotates only rotary_pct of them). */
  rotaryDim: number;
  scaling: RopeScaling | null;
}

export interface ArchitectureDetails {
  activation: Activation;
  /** LLaMA-style SwiGLU: act(gate(x)) * up(x). */
  gatedMlp: boolean;
  /** null = learned absolute positions (GPT-2). */
  rope: RopeConfig | null;
  /** GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x)) instead of two sequential residual steps. */
  parallelResidual: boolean;
  qkvBias: boolean;
  attentionOutBias: boolean;
  mlpBias: boolean;
  /** Mistral: a query attends only to the last `slidingWindow` positions (itself included). */
  slidingWindow: number | null;
  /** Factor applied to q·k per layer (1/sqrt(head_dim), GPT-2 may add 1/(layer+1)). */
  attentionScales: number[];
}

export interface CheckpointConfig {
  dir: string;
  spec: ModelSpec;
  details: ArchitectureDetails;
}

/** What an architecture adapter's config parser returns; the registry adds the special tokens. */
export interface ParsedConfig {
  spec: Omit<ModelSpec, 'bosTokenId' | 'eosTokenIds' | 'modelType'>;
  details: ArchitectureDetails;
}

/** config.json as typed fields (every problem a ModelLoadError naming the file). */
export function readConfigFields(dir: string): ConfigFields {
  const file = join(dir, 'config.json');
  return new ConfigFields(file, readJsonObject(file));
}

/** The full config: an adapter's parse plus BOS/EOS (config.json, generation_config.json). */
export function completeConfig(dir: string, cfg: ConfigFields, modelType: string, parsed: ParsedConfig): CheckpointConfig {
  const spec: ModelSpec = { ...parsed.spec, modelType, ...specialTokens(dir, cfg) };
  return { dir, spec, details: parsed.details };
}

export function ropeConfig(cfg: ConfigFields, headDim: number, rotaryFraction: number): RopeConfig {
  // Newer transformers releases move the RoPE fields into `rope_parameters`.
  const params = cfg.optionalObject('rope_parameters');
  const theta =
    cfg.optionalNumber('rope_theta') ??
    (params?.rope_theta as number | undefined) ??
    cfg.optionalNumber('rotary_emb_base') ??
    10000;
  // HF truncates rotary_pct * head_dim to an integer; the rotation needs an even count.
  const rotaryDim = Math.trunc(headDim * rotaryFraction);
  if (rotaryDim <= 0 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    cfg.fail(
      `rotary dimension ${rotaryDim} (head_dim ${headDim} x ${rotaryFraction}) must be even and in 2..head_dim`,
    );
  }
  return { theta, rotaryDim, scaling: ropeScaling(cfg, cfg.optionalObject('rope_scaling') ?? params) };
}

function ropeScaling(cfg: ConfigFields, raw: Record<string, unknown> | null): RopeScaling | null {
  if (!raw) return null;
  const type = raw.rope_type ?? raw.type ?? 'default';
  const num = (key: string): number => {
    const v = raw[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) cfg.fail(`rope_scaling.${key} must be a number`);
    return v as number;
  };
  switch (type) {
    case 'default':
      return null;
    case 'linear':
      return { type: 'linear', factor: num('factor') };
    case 'llama3':
      return {
        type: 'llama3',
        factor: num('factor'),
        lowFreqFactor: num('low_freq_factor'),
        highFreqFactor: num('high_freq_factor'),
        originalMaxPositions: num('original_max_position_embeddings'),
      };
    default:
      return cfg.fail(
        `rope_scaling type "${String(type)}" is not supported (supported: default, linear, llama3)`,
      );
  }
}

const ACTIVATIONS: Record<string, Activation> = {
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_fast: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  silu: 'silu',
  swish: 'silu',
  relu: 'relu',
};

export function activation(cfg: ConfigFields, key: string, fallback: string): Activation {
  const name = cfg.optionalString(key) ?? fallback;
  const act = ACTIVATIONS[name];
  if (!act) cfg.fail(`${key} "${name}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  return act!;
}

export function divide(cfg: ConfigFields, a: number, b: number, aKey: string, bKey: string): number {
  if (a % b !== 0) cfg.fail(`${aKey} (${a}) is not divisible by ${bKey} (${b})`);
  return a / b;
}

/** BOS from config.json; EOS from generation_config.json when present (it is what generate() uses). */
function specialTokens(dir: string, cfg: ConfigFields): Pick<ModelSpec, 'bosTokenId' | 'eosTokenIds'> {
  const genFile = join(dir, 'generation_config.json');
  const gen = existsSync(genFile) ? new ConfigFields(genFile, readJsonObject(genFile)) : null;
  const bos = gen?.tokenIds('bos_token_id')[0] ?? cfg.tokenIds('bos_token_id')[0] ?? null;
  const genEos = gen?.tokenIds('eos_token_id') ?? [];
  return { bosTokenId: bos, eosTokenIds: genEos.length > 0 ? genEos : cfg.tokenIds('eos_token_id') };
}

function readJsonObject(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new ModelLoadError(file, 'file not found');
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelLoadError(file, 'must hold a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Typed access to a JSON object; every problem becomes a ModelLoadError naming the file. */
export class ConfigFields {
  constructor(
    readonly file: string,
    readonly raw: Record<string, unknown>,
  ) {}

  fail(problem: string): never {
    throw new ModelLoadError(this.file, problem);
  }

  string(key: string): string {
    return this.optionalString(key) ?? this.fail(`missing "${key}"`);
  }

  optionalString(key: string): string | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.fail(`"${key}" must be a string, got ${JSON.stringify(v)}`);
    return v as string;
  }

  int(key: string): number {
    return this.optionalInt(key) ?? this.fail(`missing "${key}"`);
  }

  optionalInt(key: string): number | null {
    const v = this.optionalNumber(key);
    if (v !== null && (!Number.isInteger(v) || v <= 0))
      this.fail(`"${key}" must be a positive integer, got ${v}`);
    return v;
  }

  optionalNumber(key: string): number | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isFinite(v))
      this.fail(`"${key}" must be a number, got ${JSON.stringify(v)}`);
    return v as number;
  }

  optionalBool(key: string): boolean | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'boolean') this.fail(`"${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  }

  optionalObject(key: string): Record<string, unknown> | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(`"${key}" must be an object`);
    return v as Record<string, unknown>;
  }

  /** A token id field that may be a number, a list of numbers or absent. */
  tokenIds(key: string): number[] {
    const v = this.raw[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isInteger(x) && (x as number) >= 0)) {
      this.fail(`"${key}" must be a token id or a list of token ids`);
    }
    return list as number[];
  }
}
