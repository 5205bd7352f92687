// The KV cache of the running batch, in the graph's own layout: one [batch, kv_heads, T, head_dim]
// tensor per layer and key/value, rows left-padded to a common length T, an attention mask per row.
//
// Why this layout: between composition changes a decode step feeds the previous step's `present`
// tensors back as `past` without copying a byte, which is what keeps a batch step as cheap as the
// bare loop's. Rows copy only when the batch changes (a sequence joins, leaves or is parked);
// the copy compacts each row (drops its masked columns) and left-pads it to the new T.

import * as ort from 'onnxruntime-node';

export interface KvShape {
  /** 2 * n_layers: key and value of each layer, in IO order. */
  tensors: number;
  kvHeads: number;
  headDim: number;
}

/** A row's cache outside the batch: [1, kv_heads, len, head_dim] tensors, every column real. */
export interface OwnKv {
  tensors: ort.Tensor[];
  len: number;
}

/** Where a row of a new batch copies its cache from. */
export type RowSource = { own: OwnKv } | { batchRow: number };

export function emptyOwn(shape: KvShape): OwnKv {
  const t = () => new ort.Tensor('float32', new Float32Array(0), [1, shape.kvHeads, 0, shape.headDim]);
  return { tensors: Array.from({ length: shape.tensors }, t), len: 0 };
}

/** Contiguous runs [start, end) of the columns where mask is 1. */
function runsOf(mask: Uint8Array, T: number): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  for (let t = 0; t <= T; t++) {
    const on = t < T && mask[t] === 1;
    if (on && start < 0) start = t;
    else if (!on && start >= 0) {
      runs.push([start, t]);
      start = -1;
    }
  }
  return runs;
}

function copyRow(
  shape: KvShape,
  src: Float32Array,
  srcT: number,
  srcB: number,
  runs: [number, number][],
  dst: Float32Array,
  dstT: number,
  dstB: number,
  dstOffset: number,
): void {
  const { kvHeads: H, headDim: D } = shape;
  for (let h = 0; h < H; h++) {
    const srcBase = (srcB * H + h) * srcT * D;
    let at = ((dstB * H + h) * dstT + dstOffset) * D;
    for (const [s, e] of runs) {
      dst.set(src.subarray(srcBase + s * D, srcBase + e * D), at);
      at += (e - s) * D;
    }
  }
}

export class KvBatch {
  /** Columns of every row (real or padding). */
  T = 0;
  /** Per row, 1 where the column holds a real token of that row. Capacity may exceed T. */
  masks: Uint8Array[] = [];
  /** The `past` feeds: [B, kv_heads, T, head_dim] per layer and key/value. */
  past: ort.Tensor[] = [];

  constructor(private readonly shape: KvShape) {}

  get size(): number {
    return this.masks.length;
  }

  /** Float32 bytes the batch tensors hold (padding included). */
  get bytes(): number {
    return this.size * this.T * this.shape.kvHeads * this.shape.headDim * 4 * this.shape.tensors;
  }

  /** Real columns of row b. */
  realLength(b: number): number {
    let n = 0;
    const m = this.masks[b]!;
    for (let t = 0; t < this.T; t++) n += m[t]!;
    return n;
  }

  /** Copies row b out of the batch, compacted. */
  extract(b: number): OwnKv {
    const len = this.realLength(b);
    const runs = runsOf(this.masks[b]!, this.T);
    const tensors = this.past.map((t) => {
      const data = new Float32Array(this.shape.kvHeads * len * this.shape.headDim);
      copyRow(this.shape, t.data as Float32Array, this.T, b, runs, data, len, 0, 0);
      return new ort.Tensor('float32', data, [1, this.shape.kvHeads, len, this.shape.headDim]);
    });
    return { tensors, len };
  }

  /** Replaces the batch by `sources` (rows of the current batch and/or own caches), compacted. */
  rebuild(sources: RowSource[]): void {
    const { kvHeads: H, headDim: D } = this.shape;
    const lens = sources.map((s) => ('own' in s ? s.own.len : this.realLength(s.batchRow)));
    const runs = sources.map((s) => ('own' in s ? ([[0, s.own.len]] as [number, number][]) : runsOf(this.masks[s.batchRow]!, this.T)));
    const B = sources.length;
    const T = B === 0 ? 0 : Math.max(...lens);
    const past: ort.Tensor[] = [];
    for (let i = 0; i < this.shape.tensors; i++) {
      const data = new Float32Array(B * H * T * D);
      sources.forEach((s, b) => {
        if ('own' in s) copyRow(this.shape, s.own.tensors[i]!.data as Float32Array, s.own.len, 0, runs[b]!, data, T, b, T - lens[b]!);
        else copyRow(this.shape, this.past[i]!.data as Float32Array, this.T, s.batchRow, runs[b]!, data, T, b, T - lens[b]!);
      });
      past.push(new ort.Tensor('float32', data, [B, H, T, D]));
    }
    this.masks = lens.map((len) => {
      const m = new Uint8Array(Math.max(16, T * 2));
      m.fill(1, T - len, T);
      return m;
    });
    this.T = T;
    this.past = past;
  }

  /** The attention mask for a step that appends one column, real for the rows in `active`. */
  stepMask(active: boolean[]): ort.Tensor {
    const B = this.size;
    const W = this.T + 1;
    const out = new BigInt64Array(B * W);
    for (let b = 0; b < B; b++) {
      const m = this.masks[b]!;
      const base = b * W;
      for (let t = 0; t < this.T; t++) if (m[t] === 1) out[base + t] = 1n;
      if (active[b]) out[base + this.T] = 1n;
    }
    return new ort.Tensor('int64', out, [B, W]);
  }

  /** After a step: `present` becomes `past` (no copy) and every row gains the new column. */
  advance(present: ort.Tensor[], active: boolean[]): void {
    const T = this.T;
    this.masks = this.masks.map((m, b) => {
      let mask = m;
      if (T + 1 > mask.length) {
        mask = new Uint8Array(mask.length * 2);
        mask.set(m);
      }
      mask[T] = active[b] ? 1 : 0;
      return mask;
    });
    this.past = present;
    this.T = T + 1;
  }
}
