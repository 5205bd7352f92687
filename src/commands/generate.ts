// `generate` and `score`: the engine from the command line, with JSON lines for machines.

import { readFileSync } from 'node:fs';
import { InvalidInputError } from '../errors.ts';
import { outputClosed } from './output.ts';
import type { GeneratedToken, ScoredPosition } from '../runtime/types.ts';
import type { LogitsParams } from '../runtime/logits-processors.ts';
import { signalsJson, tokenRecordJson, type TokenRecordJson } from '../monitor/token-record.ts';
import { numberFlag, requiredString } from './options.ts';
import { registerCliInterventions, setupEngine } from './setup.ts';
import { MODEL_FLAGS, type CommandSpec, type Flag } from './flags.ts';

const INTERVENE: Flag = {
  name: 'intervene',
  type: 'string',
  arg: 'L.I=MODE[:V]',
  repeatable: true,
  help: 'intervention on a last-layer neuron, MODE one of clamp, scale, add, mean_ablate (e.g. 3.5=clamp:10)',
};

/** `generate`'s flags (one line per flag). */
export const GENERATE_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  { name: 'prompt', type: 'string', required: true, help: 'text to continue' },
  { name: 'max-tokens', type: 'integer', min: 1, default: 64, help: 'most tokens to generate' },
  { name: 'temperature', type: 'number', min: 0, max: 100, default: 0, help: 'sampling temperature; 0 = greedy' },
  { name: 'top-p', type: 'number', min: 0, exclusiveMin: true, max: 1, default: 1, help: 'nucleus sampling mass' },
  { name: 'top-k', type: 'integer', min: 0, default: 0, help: 'sample among the k most likely tokens; 0 = off' },
  { name: 'seed', type: 'integer', min: 0, help: 'seed for reproducible sampling' },
  { name: 'stop', type: 'string', repeatable: true, help: 'stop string (not included in the output)' },
  { name: 'frequency-penalty', type: 'number', min: -2, max: 2, default: 0, help: "OpenAI's: logit -= count * X" },
  { name: 'presence-penalty', type: 'number', min: -2, max: 2, default: 0, help: "OpenAI's: logit -= X once seen" },
  { name: 'repetition-penalty', type: 'number', min: 0, exclusiveMin: true, default: 1, help: "vLLM's; 1 = off" },
  { name: 'min-p', type: 'number', min: 0, max: 1, default: 0, help: "vLLM's: drop tokens below X * p_max; 0 = off" },
  INTERVENE,
  { name: 'json', type: 'boolean', help: 'one JSON line per token with its confidence signals, then a summary line' },
];

export const generateCommand: CommandSpec = {
  name: 'generate',
  summary: 'generate a completion and (with --json) its per-token confidence signals',
  flags: GENERATE_FLAGS,
  examples: [
    'confidence-sidecar generate --prompt "The capital of France is" --max-tokens 8',
    'confidence-sidecar generate --prompt "Once upon a time" --json --intervene 3.5=clamp:10 | head -3',
  ],
  run: (values) => runGenerate(values),
};

export const SCORE_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  { name: 'text', type: 'string', help: 'text to score (give --text or --ids)' },
  { name: 'ids', type: 'string', arg: 'JSON|@FILE', help: 'token ids as a JSON array, or @FILE holding one' },
  { name: 'json', type: 'boolean', help: 'one JSON line per position instead of a table' },
  { name: 'activations', type: 'boolean', help: 'add every last-layer activation (mlp_act) to each JSON line' },
  INTERVENE,
];

export const scoreCommand: CommandSpec = {
  name: 'score',
  summary: 'teacher-forced pass: per-position entropy, norm scale, next-token logprob',
  flags: SCORE_FLAGS,
  examples: [
    'confidence-sidecar score --text "The cat sat on the mat"',
    "confidence-sidecar score --ids '[464, 3797, 3332]' --json",
  ],
  run: (values) => runScore(values),
};

/** Six decimals for readable lines; non-finite values stay so (JSON writes them as null). */
const round = (x: number, digits = 6) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);

/** The per-token JSON line of `generate --json`: the token record's wire form (src/monitor/token-record.ts). */
export const tokenJson = (t: GeneratedToken): TokenRecordJson => tokenRecordJson(t, (x) => round(x));

export function scoredJson(p: ScoredPosition): Record<string, unknown> {
  return {
    position: p.position,
    token_id: p.tokenId,
    next_logprob: p.nextLogprob === null ? null : round(p.nextLogprob),
    ...signalsJson(p, (x) => round(x)),
    ...(p.mlpAct ? { mlp_act: p.mlpAct } : {}),
  };
}

/** The sampling adjustments of runtime/logits-processors.ts from their flags; absent when all are off. */
function logitsFlags(values: Record<string, unknown>): { logits?: LogitsParams } {
  const p: LogitsParams = {};
  const num = (k: string) => (values[k] === undefined ? undefined : Number(values[k]));
  if (num('frequency-penalty')) p.frequencyPenalty = num('frequency-penalty');
  if (num('presence-penalty')) p.presencePenalty = num('presence-penalty');
  if (num('repetition-penalty') !== undefined && num('repetition-penalty') !== 1) p.repetitionPenalty = num('repetition-penalty');
  if (num('min-p')) p.minP = num('min-p');
  return Object.keys(p).length > 0 ? { logits: p } : {};
}

export async function runGenerate(values: Record<string, unknown>): Promise<void> {
  const prompt = requiredString(values, 'prompt');
  const params = {
    maxTokens: numberFlag(values, 'max-tokens', { min: 1, integer: true })!,
    temperature: numberFlag(values, 'temperature', { min: 0, max: 100 })!,
    topP: numberFlag(values, 'top-p', { min: 0, max: 1, exclusiveMin: true })!,
    topK: numberFlag(values, 'top-k', { min: 0, integer: true })!,
    seed: numberFlag(values, 'seed', { min: 0, integer: true }),
    stop: (values.stop as string[] | undefined) ?? [],
    topLogprobs: 0,
    ...logitsFlags(values),
  };
  const { engine, registry } = await setupEngine(values);
  try {
    registerCliInterventions(registry, values.intervene as string[] | undefined);
    const promptIds = engine.encode(prompt);
    const json = values.json === true;
    const it = engine.generate({
      promptIds,
      params,
      interventions: () => registry.activeFor(),
      signal: outputClosed.signal,
    });
    let r = await it.next();
    while (!r.done) {
      if (json) process.stdout.write(JSON.stringify(tokenJson(r.value)) + '\n');
      else process.stdout.write(r.value.text);
      r = await it.next();
    }
    const s = r.value;
    if (outputClosed.signal.aborted) return; // nobody reads the summary
    if (json) {
      process.stdout.write(
        JSON.stringify({
          type: 'summary',
          prompt_tokens: s.promptTokens,
          completion_tokens: s.completionTokens,
          finish_reason: s.finishReason,
          tokens_per_s: round(s.tokensPerS, 2),
          ...(s.trailingText ? { trailing_text: s.trailingText } : {}),
        }) + '\n',
      );
    } else {
      process.stdout.write(s.trailingText + '\n');
    }
  } finally {
    await engine.close();
  }
}

function parseIds(raw: string): number[] {
  let ids: unknown;
  try {
    ids = JSON.parse(raw.startsWith('@') ? readFileSync(raw.slice(1), 'utf8') : raw);
  } catch {
    throw new InvalidInputError(`--ids must be a JSON array of token ids, got ${JSON.stringify(raw.slice(0, 40))}`, 'ids');
  }
  if (!Array.isArray(ids) || !ids.every((x) => Number.isInteger(x))) {
    throw new InvalidInputError('--ids must be a JSON array of integer token ids', 'ids');
  }
  return ids as number[];
}

export async function runScore(values: Record<string, unknown>): Promise<void> {
  const hasText = typeof values.text === 'string';
  const hasIds = typeof values.ids === 'string';
  if (hasText === hasIds) throw new InvalidInputError('give exactly one of --text or --ids', 'text');
  const ids = hasIds ? parseIds(values.ids as string) : null;
  const { engine, registry } = await setupEngine(values);
  try {
    registerCliInterventions(registry, values.intervene as string[] | undefined);
    const seq = ids ?? engine.encode(values.text as string);
    const positions = await engine.score(seq, {
      activations: values.activations === true,
      interventions: registry.activeFor(),
    });
    for (const p of positions) {
      if (values.json === true || values.activations === true) process.stdout.write(JSON.stringify(scoredJson(p)) + '\n');
      else {
        process.stdout.write(
          `${String(p.position).padStart(5)} ${String(p.tokenId).padStart(6)} ` +
            `H=${p.entropy.toFixed(4)} sigma=${p.normScale.toFixed(4)} top1=${p.top1Prob.toFixed(4)} ` +
            `next_logprob=${p.nextLogprob === null ? '-' : p.nextLogprob.toFixed(4)} ${JSON.stringify(engine.tokenizer.tokenText(p.tokenId))}\n`,
        );
      }
    }
  } finally {
    await engine.close();
  }
}
