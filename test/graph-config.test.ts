// config.json -> ModelSpec / architecture details, its error messages, and RoPE frequencies.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ropeInverseFrequencies } from '../src/model/architectures/rope.ts';
import { readCheckpointConfig, readModelSpec } from '../src/model/architectures/index.ts';
import { ModelLoadError } from '../src/errors.ts';
import { fixture } from './helpers/shared.ts';
import { BASE_CONFIGS } from './helpers/random-checkpoint.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function configDir(config: unknown, raw?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cs-config-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'config.json'), raw ?? JSON.stringify(config));
  return dir;
}

function loadError(fn: () => unknown): ModelLoadError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ModelLoadError);
    return e as ModelLoadError;
  }
  throw new Error('expected a ModelLoadError');
}

describe('readModelSpec', () => {
  it('reads the aidreams260K LLaMA config (with generation_config.json)', () => {
    expect(readModelSpec(fixture('aidreams260K'))).toEqual({
      architecture: 'llama',
      modelType: 'llama',
      nLayers: 4,
      dModel: 64,
      nHeads: 4,
      nKvHeads: 4,
      headDim: 16,
      dMlp: 172,
      vocabSize: 512,
      maxPositions: 128,
      normType: 'rmsnorm',
      normEps: 1e-5,
      bosTokenId: 1,
      eosTokenIds: [2],
      tiedEmbeddings: true,
    });
  });

  it('reads the GPT-2 config: n_inner null means 4 * n_embd', () => {
    const spec = readModelSpec(fixture('gpt2-tiny-random'));
    expect(spec).toMatchObject({
      architecture: 'gpt2',
      dModel: 64,
      nHeads: 4,
      nKvHeads: 4,
      headDim: 16,
      dMlp: 256,
    });
    expect(spec).toMatchObject({
      vocabSize: 50257,
      maxPositions: 256,
      normType: 'layernorm',
      eosTokenIds: [50256],
      tiedEmbeddings: true,
    });
  });

  it('maps qwen2 and mistral onto the llama architecture with their own details', () => {
    const qwen = readCheckpointConfig(configDir(BASE_CONFIGS.qwen2));
    expect(qwen.spec).toMatchObject({
      architecture: 'llama',
      modelType: 'qwen2',
      nKvHeads: 1,
      headDim: 8,
      eosTokenIds: [2, 3],
    });
    expect(qwen.details).toMatchObject({
      qkvBias: true,
      attentionOutBias: false,
      gatedMlp: true,
      activation: 'silu',
    });
    const mistral = readCheckpointConfig(configDir(BASE_CONFIGS.mistral));
    expect(mistral.details.slidingWindow).toBe(3);
    const llama = readCheckpointConfig(configDir({ ...BASE_CONFIGS.llama, attention_bias: true }));
    expect(llama.spec.headDim).toBe(12);
    expect(llama.details).toMatchObject({ qkvBias: true, attentionOutBias: true, slidingWindow: null });
  });

  it('reads GPT-NeoX rotary_pct, rotary_emb_base and the residual layout', () => {
    const neox = readCheckpointConfig(configDir({ ...BASE_CONFIGS.gpt_neox, use_parallel_residual: false }));
    expect(neox.spec).toMatchObject({ architecture: 'gpt_neox', headDim: 16, normType: 'layernorm' });
    expect(neox.details).toMatchObject({
      parallelResidual: false,
      activation: 'gelu',
      rope: { theta: 10000, rotaryDim: 4, scaling: null },
    });
  });

  it('names config.json and the problem for unknown model types, missing fields and bad JSON', () => {
    let e = loadError(() => readModelSpec(configDir({ ...BASE_CONFIGS.gpt2, model_type: 'bert' })));
    expect(e.message).toContain('config.json');
    expect(e.message).toContain('unsupported model_type "bert"');
    const { n_head: _dropped, ...noHeads } = BASE_CONFIGS.gpt2;
    e = loadError(() => readModelSpec(configDir(noHeads)));
    expect(e.message).toMatch(/config\.json: missing "n_head"/);
    e = loadError(() => readModelSpec(configDir(null, '{"model_type": "gpt2",')));
    expect(e.message).toMatch(/config\.json: not valid JSON/);
    e = loadError(() => readModelSpec(configDir({ ...BASE_CONFIGS.llama, num_key_value_heads: 3 })));
    expect(e.message).toContain('not a multiple of num_key_value_heads');
    const empty = mkdtempSync(join(tmpdir(), 'cs-empty-'));
    dirs.push(empty);
    e = loadError(() => readModelSpec(empty));
    expect(e.message).toMatch(/config\.json: file not found/);
  });

  it('refuses RoPE scaling types and activations it does not implement', () => {
    let e = loadError(() =>
      readModelSpec(configDir({ ...BASE_CONFIGS.llama, rope_scaling: { rope_type: 'yarn', factor: 4 } })),
    );
    expect(e.message).toContain('rope_scaling type "yarn" is not supported');
    e = loadError(() => readModelSpec(configDir({ ...BASE_CONFIGS.gpt2, activation_function: 'mish' })));
    expect(e.message).toContain('activation_function "mish" is not supported');
  });
});

describe('ropeInverseFrequencies', () => {
  it('is theta^(-2i/d) without scaling and divides by the factor with linear scaling', () => {
    const plain = ropeInverseFrequencies({ theta: 10000, rotaryDim: 8, scaling: null });
    expect(Array.from(plain)).toEqual([1, 0.1, 0.01, 0.001].map((v) => expect.closeTo(v, 12)));
    const linear = ropeInverseFrequencies({
      theta: 10000,
      rotaryDim: 8,
      scaling: { type: 'linear', factor: 4 },
    });
    expect(Array.from(linear)).toEqual([0.25, 0.025, 0.0025, 0.00025].map((v) => expect.closeTo(v, 12)));
  });

  it('applies the Llama 3 rule: short wavelengths kept, long ones divided, the middle blended', () => {
    // original_max 1024, low_freq_factor 1, high_freq_factor 4: a wavelength 2*pi/f above
    // 1024 / 1 is long, below 1024 / 4 = 256 is short, in between is blended.
    const scaling = {
      type: 'llama3' as const,
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositions: 1024,
    };
    const inv = ropeInverseFrequencies({ theta: 10000, rotaryDim: 8, scaling });
    expect(inv[0]).toBeCloseTo(1, 12); // wavelength 6.28 < 256: unchanged
    expect(inv[1]).toBeCloseTo(0.1, 12); // 62.8 < 256: unchanged
    // 628 is between 256 and 1024: smooth = (1024 / 628.3 - 1) / 3, blend of f / 8 and f.
    const f = 0.01;
    const smooth = (1024 / ((2 * Math.PI) / f) - 1) / 3;
    expect(inv[2]).toBeCloseTo((1 - smooth) * (f / 8) + smooth * f, 12);
    expect(inv[3]).toBeCloseTo(0.001 / 8, 12); // 6283 > 1024: divided by the factor
  });
});
