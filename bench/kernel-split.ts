// Where one decode step's time goes, per graph variant: onnxruntime's own profiler over decode
// steps at a fixed past length, kernel time summed by what the node computes: the unembedding
// (the MatMul whose output is vocabulary-wide), the other float32 MatMuls, the quantized
// MatMulNBits, and everything else (norms, attention's small ops, the KV Concat, the signal
// head). It shows which costs a dtype can shrink and which it cannot (bench/quant.ts prints it).

import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../src/model/types.ts';
import { defaultIntraOpThreads } from '../src/runtime/index.ts';

export interface KernelSplit {
  /** Milliseconds per decode step. */
  total: number;
  unembedding: number;
  floatMatMul: number;
  quantizedMatMul: number;
  other: number;
}

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string; output_type_shape?: Record<string, number[]>[] };
}

const int64 = (v: number[], d: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), d);

function decodeFeeds(spec: ModelSpec, past: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const kv = () =>
    new ort.Tensor('float32', new Float32Array(spec.nKvHeads * past * spec.headDim), [
      1,
      spec.nKvHeads,
      past,
      spec.headDim,
    ]);
  for (let l = 0; l < spec.nLayers; l++) {
    feeds[IO.pastKey(l)] = kv();
    feeds[IO.pastValue(l)] = kv();
  }
  feeds[IO.inputIds] = int64([1], [1, 1]);
  feeds[IO.attentionMask] = int64(new Array(past + 1).fill(1), [1, past + 1]);
  feeds[IO.positionIds] = int64([past], [1, 1]);
  feeds[IO.logitsToKeep] = int64([1], [1]);
  feeds[IO.neuronScale] = new ort.Tensor('float32', new Float32Array(spec.dMlp).fill(1), [1, spec.dMlp]);
  feeds[IO.neuronShift] = new ort.Tensor('float32', new Float32Array(spec.dMlp), [1, spec.dMlp]);
  feeds[IO.unigramLogProb] = new ort.Tensor(
    'float32',
    new Float32Array(spec.vocabSize).fill(-Math.log(spec.vocabSize)),
    [spec.vocabSize],
  );
  return feeds;
}

/** Profiles `steps` greedy-style decode steps (signals fetched, logits not) of an instrumented graph. */
export async function kernelSplit(
  modelPath: string,
  spec: ModelSpec,
  steps = 20,
  past = 64,
): Promise<KernelSplit> {
  const prefix = join(tmpdir(), `kernel-split-${process.pid}-${Date.now()}`);
  const session = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: defaultIntraOpThreads(),
    enableProfiling: true,
    profileFilePrefix: prefix,
  });
  const feeds = decodeFeeds(spec, past);
  const fetches = session.outputNames.filter((n) => n !== IO.logits);
  for (let i = 0; i < steps; i++) await session.run(feeds, fetches);
  session.endProfiling();
  await session.release();
  // onnxruntime appends a timestamp to the prefix and does not return the name.
  const name = readdirSync(tmpdir()).find((f) => f.startsWith(basename(prefix)));
  if (!name) throw new Error(`onnxruntime wrote no profile under ${prefix}*`);
  const file = join(tmpdir(), name);
  const events = JSON.parse(readFileSync(file, 'utf8')) as ProfileEvent[];
  rmSync(file, { force: true });
  const split: KernelSplit = { total: 0, unembedding: 0, floatMatMul: 0, quantizedMatMul: 0, other: 0 };
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '';
    const shape = Object.values(e.args?.output_type_shape?.[0] ?? {})[0] ?? [];
    const ms = e.dur / 1000 / steps;
    split.total += ms;
    // The unembedding first: float32 MatMul by default, MatMulNBits under --quantize-last-layer.
    if ((op === 'MatMul' || op === 'MatMulNBits') && shape[shape.length - 1] === spec.vocabSize)
      split.unembedding += ms;
    else if (op === 'MatMulNBits') split.quantizedMatMul += ms;
    else if (op === 'MatMul' && shape.length === 3)
      split.floatMatMul += ms; // [batch, seq, out]: weights, not attention's 4-D products
    else split.other += ms;
  }
  return split;
}

export function formatSplit(label: string, s: KernelSplit): string {
  const f = (x: number) => x.toFixed(1).padStart(8);
  return `${label.padEnd(9)} ${f(s.total)} ${f(s.unembedding)} ${f(s.floatMatMul)} ${f(s.quantizedMatMul)} ${f(s.other)}`;
}

export const SPLIT_HEADER =
  'dtype     total ms  unembed  fp32 MM  quant MM    other   (kernel time per decode step, past 64)';
