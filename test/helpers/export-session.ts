// Runs ONNX decoder graphs (plain exports and instrumented ones) directly with onnxruntime-node,
// and the float64 reference maths the export tests compare against. Independent of the runtime
// package (src/runtime) on purpose: these tests check the graphs themselves.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { readModelSpec } from '../../src/model/architectures/index.ts';
import { IO, type ModelSpec } from '../../src/model/types.ts';
import { fixture } from './shared.ts';

export interface Expected {
  prompt_ids?: number[];
  greedy_ids?: number[];
  greedy_next?: number[];
  entropy: number[];
  final_norm_scale: number[];
  last_layer: number;
  last_mlp_act: number[][];
  weight_metrics?: { norm: number[]; rho: number[]; logitvar: number[] };
}

export interface ExportFixture {
  dir: string;
  spec: ModelSpec;
  expected: Expected;
  /** The token ids expected.json's per-position values were computed over. */
  ids: number[];
}

export function exportFixture(name: 'aidreams260K-onnx' | 'gpt2-tiny-random-onnx'): ExportFixture {
  const dir = fixture(name);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
  const ids = expected.greedy_ids ?? expected.prompt_ids!;
  return { dir, spec: readModelSpec(dir), expected, ids };
}

export interface RunOptions {
  /** Tokens already in the KV cache (their presents from an earlier call). */
  past?: Record<string, ort.Tensor>;
  pastLength?: number;
  /** Instrumented graphs only. */
  keep?: number;
  scale?: Float32Array;
  shift?: Float32Array;
}

const int64 = (values: number[], dims: number[]) =>
  new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

/** Feeds for one forward pass over `ids` (batch 1), following the graph's own input list. */
export function feedsFor(
  session: ort.InferenceSession,
  spec: ModelSpec,
  ids: number[],
  opts: RunOptions = {},
): Record<string, ort.Tensor> {
  const pastLength = opts.pastLength ?? 0;
  const n = ids.length;
  const all: Record<string, ort.Tensor> = {
    [IO.inputIds]: int64(ids, [1, n]),
    [IO.attentionMask]: int64(new Array(pastLength + n).fill(1), [1, pastLength + n]),
    [IO.positionIds]: int64(
      ids.map((_, i) => pastLength + i),
      [1, n],
    ),
    [IO.logitsToKeep]: int64([opts.keep ?? 0], [1]),
    // Per-row interventions: [batch, d_mlp], one row here.
    [IO.neuronScale]: new ort.Tensor('float32', opts.scale ?? new Float32Array(spec.dMlp).fill(1), [
      1,
      spec.dMlp,
    ]),
    [IO.neuronShift]: new ort.Tensor('float32', opts.shift ?? new Float32Array(spec.dMlp), [1, spec.dMlp]),
    use_cache_branch: new ort.Tensor('bool', [true], [1]),
    [IO.unigramLogProb]: new ort.Tensor('float32', new Float32Array(spec.vocabSize), [spec.vocabSize]),
  };
  for (let l = 0; l < spec.nLayers; l++) {
    for (const name of [IO.pastKey(l), IO.pastValue(l)]) {
      all[name] =
        opts.past?.[name] ??
        new ort.Tensor('float32', new Float32Array(0), [1, spec.nKvHeads, 0, spec.headDim]);
    }
  }
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    const t = all[name];
    if (!t) throw new Error(`test harness has no value for graph input "${name}"`);
    feeds[name] = t;
  }
  return feeds;
}

export async function run(
  session: ort.InferenceSession,
  spec: ModelSpec,
  ids: number[],
  opts: RunOptions = {},
) {
  return session.run(feedsFor(session, spec, ids, opts));
}

/** The presents of one call, renamed as the next call's past inputs. */
export function presentsAsPast(
  out: ort.InferenceSession.OnnxValueMapType,
  spec: ModelSpec,
): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < spec.nLayers; l++) {
    past[IO.pastKey(l)] = out[IO.presentKey(l)] as ort.Tensor;
    past[IO.pastValue(l)] = out[IO.presentValue(l)] as ort.Tensor;
  }
  return past;
}

export function floats(t: ort.Tensor | undefined): Float32Array {
  if (!t) throw new Error('missing output');
  return t.data as Float32Array;
}

/** Row r of a [rows, width] row-major array. */
export function row(data: Float32Array, r: number, width: number): Float32Array {
  return data.subarray(r * width, (r + 1) * width);
}

/** Entropy in nats of softmax(logits), in float64. */
export function entropy(logits: Float32Array): number {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let z = 0;
  for (const v of logits) z += Math.exp(v - max);
  const logZ = Math.log(z);
  let h = 0;
  for (const v of logits) {
    const logp = v - max - logZ;
    h -= Math.exp(logp) * logp;
  }
  return h;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * Checks an instrumented graph's full pass against expected.json: entropy of the logits,
 * final_norm_scale and mlp_act per position. Returns the largest deviations.
 */
export async function deviationsFromExpected(session: ort.InferenceSession, fx: ExportFixture) {
  const { spec, expected, ids } = fx;
  const out = await run(session, spec, ids);
  const logits = floats(out[IO.logits] as ort.Tensor);
  const act = floats(out[IO.mlpAct] as ort.Tensor);
  const scale = floats(out[IO.finalNormScale] as ort.Tensor);
  const V = spec.vocabSize;
  const entropies = ids.map((_, t) => entropy(row(logits, t, V)));
  return {
    out,
    logitRows: (out[IO.logits] as ort.Tensor).dims[1],
    entropy: maxAbsDiff(entropies, expected.entropy),
    normScale: maxAbsDiff(scale, expected.final_norm_scale),
    mlpAct: maxAbsDiff(act, expected.last_mlp_act.flat()),
  };
}
