// Residual-space rows through the unembedding, x diag(gamma) W_U, for many rows at once: the clean
// logits of every cached position and the readouts r = wc diag(gamma) W_U of the neurons causal.ts
// verifies. At GPT-2 small, 128 positions are 5e9 multiply-adds; plain JavaScript loops take ~10 s
// for them, the SIMD kernel (simd-matmul.ts) a fraction of that. W_U is [d, V] row-major, so each
// block of vocabulary columns is transposed (gamma folded in) into B [block, d] for out += A B^T.

import type { LastLayerWeights } from '../model/types.ts';
import { SimdWorkspace } from './simd-matmul.ts';

// Vocabulary columns per block (a multiple of 4, the kernel's B tile), and rows of x per pass.
const BLOCK = 512;
const ROWS = 128;

/** out [m, V] = rows [m, d] diag(gamma) W_U, float64. */
export function readouts(w: LastLayerWeights, rows: Float64Array, m: number): Float64Array {
  const { dModel: d, vocabSize: V } = w;
  if (rows.length !== m * d) throw new Error(`readouts: ${rows.length} values for ${m} rows of ${d}`);
  const out = new Float64Array(m * V);
  if (m === 0) return out;
  const dp = d + (d % 2);
  const A = 0;
  const B = 1;
  const C = 2;
  const ws = new SimdWorkspace([ROWS * dp, BLOCK * dp, ROWS * BLOCK]);
  const a = ws.view(A);
  const b = ws.view(B);
  const c = ws.view(C);
  for (let r0 = 0; r0 < m; r0 += ROWS) {
    const count = Math.min(ROWS, m - r0);
    const padded = count + (count % 2);
    a.fill(0);
    for (let i = 0; i < count; i++) for (let k = 0; k < d; k++) a[i * dp + k] = rows[(r0 + i) * d + k]!;
    for (let v0 = 0; v0 < V; v0 += BLOCK) {
      const width = Math.min(BLOCK, V - v0);
      // Zero columns (a partial last block, the padding of d) add nothing.
      b.fill(0);
      for (let k = 0; k < d; k++) {
        const g = w.finalNormWeight[k]!;
        const src = k * V + v0;
        for (let q = 0; q < width; q++) b[q * dp + k] = g * w.unembed[src + q]!;
      }
      c.fill(0);
      ws.multiplyABt(A, padded, B, BLOCK, dp, C, BLOCK);
      for (let i = 0; i < count; i++) out.set(c.subarray(i * BLOCK, i * BLOCK + width), (r0 + i) * V + v0);
    }
  }
  return out;
}
