// The graph inputs and output names a batch step uses: int64 tensors, the cache tensors' names in
// IO order, the in-graph signal outputs, and the per-row intervention inputs (cached while the
// batch's rows and their intervention versions stay the same, which is most steps).

import * as ort from 'onnxruntime-node';
import { IO } from '../model/types.ts';
import type { Row } from './row-results.ts';

export const SIGNAL_OUTPUTS = [IO.logSumExp, IO.entropy, IO.unigramKl, IO.topLogprobs, IO.topIds];

export function int64(values: ArrayLike<number>, dims: number[]): ort.Tensor {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]!);
  return new ort.Tensor('int64', out, dims);
}

/** Cache tensors in IO order: key then value of each layer. */
export function pastName(i: number): string {
  return i % 2 === 0 ? IO.pastKey(i >> 1) : IO.pastValue(i >> 1);
}

export function presentName(i: number): string {
  return i % 2 === 0 ? IO.presentKey(i >> 1) : IO.presentValue(i >> 1);
}

/** neuron_scale / neuron_shift `[batch, d_mlp]` for a list of rows (identity rows when inactive). */
export class InterventionFeeds {
  private cache: { key: string; feeds: Record<string, ort.Tensor> } | null = null;

  constructor(private readonly dMlp: number) {}

  feeds(rows: Row[]): Record<string, ort.Tensor> {
    const d = this.dMlp;
    const key = rows.map((r) => `${r.id}:${r.iv.version}`).join(',');
    if (this.cache?.key === key) return this.cache.feeds;
    const scale = new Float32Array(rows.length * d).fill(1);
    const shift = new Float32Array(rows.length * d);
    rows.forEach((r, b) => {
      if (r.iv.scale) scale.set(r.iv.scale, b * d);
      if (r.iv.shift) shift.set(r.iv.shift, b * d);
    });
    const feeds = {
      [IO.neuronScale]: new ort.Tensor('float32', scale, [rows.length, d]),
      [IO.neuronShift]: new ort.Tensor('float32', shift, [rows.length, d]),
    };
    this.cache = { key, feeds };
    return feeds;
  }

  /** After a one-row prefill the cached tensors describe that row, not the batch. */
  forget(): void {
    this.cache = null;
  }
}
