// One batch row's result from a step's outputs: its next token (sampled, teacher-forced or the
// graph's argmax) and the signals of the distribution it came from. Sampling goes through
// sampleRow (sampling.ts), the one per-row entry point.

import type * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../model/types.ts';
import { rowSignals } from '../monitor/signals.ts';
import type { OwnKv } from './kv-batch.ts';
import { sampleRow, type RowSampler } from './sampling.ts';
import type { Adjustment, SequenceLogits } from './logits-processors.ts';
import type { IvUpdate, StepResult } from './protocol.ts';

export interface RowConfig {
  spec: ModelSpec;
  watch: number[];
  logPFreq: Float32Array | null;
}

export interface Row {
  id: number;
  mode: 'generate' | 'score';
  sampler: RowSampler;
  /** Penalties and biases: the row is sampled after them, the signals stay the raw row's. */
  logits: SequenceLogits | null;
  topLogprobs: number;
  maxTokens: number;
  eos: Set<number>;
  /** Tokens not in the cache yet: prompt chunks, then the one token the next step feeds. */
  toFeed: number[];
  /** Scoring: the tokens whose probabilities the next steps read, in order. */
  forced: number[];
  produced: number;
  credit: number;
  iv: IvUpdate;
  /** The cache while the row is outside the batch (null while in it). */
  own: OwnKv | null;
  /** Real tokens in the cache. */
  len: number;
  reserved: number;
  idle: number;
  stopped: boolean;
}

/** The next token of row b: sampled (after the row's adjustments), forced or (greedy) the graph's argmax. */
function pick(r: Row, row: Float32Array | null, argmax: number): number {
  if (r.mode === 'score') return r.forced.shift()!;
  if (!row) return argmax;
  if (!r.logits) return sampleRow(row, r.sampler);
  const id = sampleRow(r.logits.process(row), r.sampler);
  r.logits.observe([id]);
  return id;
}

/** What changed the row a generated token was drawn from (empty: the raw row). */
const adjustmentsOf = (r: Row): Adjustment[] => (r.logits ? r.logits.active : []);

export function rowFromGraph(
c: RowConfig,
out: ort.InferenceSession.OnnxValueMapType,
r: Row,
b: number,
readRow: boolean,
): StepResult {
  const { spec } = c;
  const f64 = (name: string) => out[name]!.data as Float64Array;
  const topLp = f64(IO.topLogprobs);
  const topIds = out[IO.topIds]!.data as BigInt64Array;
  const k = out[IO.topLogprobs]!.dims[2]!;
  const base = b * k;
  const lse = f64(IO.logSumExp)[b]!;
  const row = readRow ? (out[IO.logits]!.data as Float32Array).subarray(b * spec.vocabSize, (b + 1) * spec.vocabSize) : null;
  const tokenId = pick(r, row, Number(topIds[base]!));
  let topLogprobs: [number, number][];
  if (r.topLogprobs <= k) {
    topLogprobs = [];
    for (let j = 0; j < r.topLogprobs; j++) topLogprobs.push([Number(topIds[base + j]!), topLp[base + j]!]);
  } else {
    topLogprobs = rowSignals(row!, { topN: r.topLogprobs }).top;
  }
  return {
    ...neurons(c, out, b),
    seqId: r.id,
    tokenId,
    logprob: row ? row[tokenId]! - lse : topLp[base]!,
    entropy: f64(IO.entropy)[b]!,
    top1Prob: Math.exp(topLp[base]!),
    unigramKl: c.logPFreq ? f64(IO.unigramKl)[b]! : null,
    topLogprobs,
    adjustments: adjustmentsOf(r),
    ivVersion: r.iv.version,
    done: false,
  };
}

/** A graph without the instrumentation: signals from the logits row in JavaScript. */
export function rowFromLogits(c: RowConfig, out: ort.InferenceSession.OnnxValueMapType, r: Row, b: number): StepResult {
  const V = c.spec.vocabSize;
  const row = (out[IO.logits]!.data as Float32Array).subarray(b * V, (b + 1) * V);
  const first = rowSignals(row, { topN: 0 });
  const tokenId = pick(r, r.sampler.params.temperature > 0 || r.logits ? row : null, first.argmax);
  const sig = rowSignals(row, { token: tokenId, topN: r.topLogprobs, logPFreq: c.logPFreq });
  return {
    normScale: NaN,
    watched: [],
    seqId: r.id,
    tokenId,
    logprob: sig.tokenLogprob,
    entropy: sig.entropy,
    top1Prob: sig.top1Prob,
    unigramKl: sig.unigramKl,
    topLogprobs: sig.top,
    adjustments: adjustmentsOf(r),
    ivVersion: r.iv.version,
    done: false,
  };
}

function neurons(c: RowConfig, out: ort.InferenceSession.OnnxValueMapType, b: number): { normScale: number; watched: number[] } {
  const d = c.spec.dMlp;
  const act = out[IO.mlpAct]!.data as Float32Array;
  return { normScale: (out[IO.finalNormScale]!.data as Float32Array)[b]!, watched: c.watch.map((i) => act[b * d + i]!) };
}
