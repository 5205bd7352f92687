// Weight-based metrics of last-layer neurons (REFERENCE.md "Weight-based metrics"), computed on
// processed weights (weight-processing.ts):
//   norm      = ||w_out||
//   rho_k     = ||U_k^T w_out|| / ||w_out||, U_k = left singular vectors of W_U ([d_model, V]) with the
//               k smallest singular values (the unembedding's effective null space)
//   LogitVar  = Var_v cos(w_out, W_U[:, v])   (sample variance, divisor V - 1: torch.var's default,
//               which the paper's code and the fixtures' expected values use)
//
// Nothing here forms W_U^T w_out for every neuron: at GPT-2 size that is d_mlp * V * d_model ~ 1e11
// multiply-adds. Everything goes through two d_model x d_model Gram matrices, one pass over W_U:
//   G  = W_U W_U^T                  its eigenvectors are W_U's left singular vectors (eigenvalue = s^2)
//   Gu = (1/V) sum_v u_v u_v^T,     u_v = W_U[:, v] / ||W_U[:, v]||  (unit columns)
//   mu = (1/V) sum_v u_v
// so, for w = w_out / ||w_out||:  mean_v cos = w.mu,  mean_v cos^2 = w^T Gu w,
//   LogitVar = (w^T Gu w - (w.mu)^2) * V / (V - 1),
// with w^T Gu w for all neurons at once as a blocked product (quadraticForms). At GPT-2 small size
// the Grams take a few seconds and the eigendecomposition (ml-matrix) a few more.

import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import type { LastLayerWeights } from '../model/types.ts';
import { SimdWorkspace } from './simd-matmul.ts';
import { processWeights, type ProcessedWeights } from './weight-processing.ts';

export interface NeuronWeightMetrics {
  index: number;
  norm: number;
  rho: number;
  logitVar: number;
}

export interface WeightMetrics {
  k: number;
  neurons: NeuronWeightMetrics[];
}

/** Second moments of the processed unembedding, shared by weight metrics and frequency scores. */
export interface UnembedStats {
  dModel: number;
  vocab: number;
  /** G = W_U W_U^T, [d_model, d_model] row-major, float64. */
  gram: Float64Array;
  /** (1/V) sum of u u^T over unit columns u of W_U. */
  unitGram: Float64Array;
  /** (1/V) sum of unit columns of W_U. */
  unitMean: Float64Array;
}

/** The paper's k is about 1% of d_model (12 for GPT-2 small's 768). */
export function defaultK(dModel: number): number {
  return Math.max(1, Math.round(dModel / 64));
}

export function computeWeightMetrics(
  w: LastLayerWeights,
  opts: { k?: number; processed?: ProcessedWeights; stats?: UnembedStats } = {},
): WeightMetrics {
  const { dModel: d, dMlp, vocabSize: V } = w;
  const k = opts.k ?? defaultK(d);
  if (!Number.isInteger(k) || k < 1 || k > d) throw new Error(`k must be an integer in 1..${d}, got ${k}`);
  const processed = opts.processed ?? processWeights(w);
  const stats = opts.stats ?? unembedStats(processed.unembed, d, V);
  // LayerNorm models: centring W_U over d_model makes the all-ones direction an exact null direction,
  // orthogonal to every processed w_out; counted among the k smallest it would only waste a slot
  // (at d_model 64, k = 1, every rho would be 0). So it is lifted out of the way first.
  const gram = w.normType === 'layernorm' ? liftAllOnesDirection(stats.gram, d) : stats.gram;
  const nullBasis = smallestEigenvectors(gram, d, k);

  const besselCorrection = V > 1 ? V / (V - 1) : 1;
  const quad = quadraticForms(stats.unitGram, processed.wOut, d);
  const neurons: NeuronWeightMetrics[] = [];
  for (let i = 0; i < dMlp; i++) {
    const base = i * d;
    let sq = 0;
    let meanCos = 0;
    for (let r = 0; r < d; r++) {
      const x = processed.wOut[base + r]!;
      sq += x * x;
      meanCos += x * stats.unitMean[r]!;
    }
    const norm = Math.sqrt(sq);

    let proj = 0;
    for (let j = 0; j < k; j++) {
      let dot = 0;
      const col = j * d;
      for (let r = 0; r < d; r++) dot += nullBasis[col + r]! * processed.wOut[base + r]!;
      proj += dot * dot;
    }

    // A zero w_out has no direction: report rho and LogitVar as 0 rather than NaN.
    const rho = norm > 0 ? Math.sqrt(proj) / norm : 0;
    const logitVar = norm > 0 ? Math.max(0, quad[i]! / sq - (meanCos / norm) ** 2) * besselCorrection : 0;
    neurons.push({ index: i, norm, rho, logitVar });
  }
  return { k, neurons };
}

/**
 * G + trace(G) * (1/d) 11^T. After centring over d_model, the unit all-ones vector is an eigenvector of G
 * with eigenvalue 0; this moves its eigenvalue to trace(G) (>= the largest) and leaves every other
 * eigenvector (all orthogonal to it) unchanged.
 */
export function liftAllOnesDirection(gram: Float64Array, d: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < d; i++) trace += gram[i * d + i]!;
  return gram.map((g) => g + trace / d);
}

/**
 * Eigenvectors of the symmetric matrix [d, d] for its k smallest eigenvalues, as k rows of length d
 * (row j = j-th smallest). For a Gram matrix W W^T these are W's left singular vectors with the k
 * smallest singular values.
 */
export function smallestEigenvectors(sym: Float64Array, d: number, k: number): Float64Array {
  const m = new Matrix(d, d);
  for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) m.set(r, c, sym[r * d + c]!);
  const eig = new EigenvalueDecomposition(m, { assumeSymmetric: true });
  const values = eig.realEigenvalues;
  const order = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
  const vectors = eig.eigenvectorMatrix;
  const out = new Float64Array(k * d);
  for (let j = 0; j < k; j++) {
    const col = order[j]!;
    for (let r = 0; r < d; r++) out[j * d + r] = vectors.get(r, col);
  }
  return out;
}

// Vocabulary columns copied per block into the SIMD workspace: [d_model (padded), BLOCK] float64,
// raw and unit-normalised, small enough to stay in cache while every tile of the Gram sweeps it.
const BLOCK = 128;

/**
 * G, Gu and mu (see the top of this file) in one pass over W_U [d_model, V] row-major.
 * Float32 inputs are widened to float64 before multiplying, so G's products are exact and only its
 * float64 sums round. Cost: about d_model^2 * V multiply-adds (both Grams, upper triangles only),
 * done by the SIMD kernel (simd-matmul.ts).
 */
export function unembedStats(unembed: Float32Array, dModel: number, vocab: number): UnembedStats {
  if (unembed.length !== dModel * vocab) {
    throw new Error(`unembedStats: W_U has ${unembed.length} values, expected ${dModel}x${vocab}`);
  }
  // Pad d_model to a multiple of 4 with zero rows (the kernel's tile height); zero rows add nothing.
  const dp = padTo(dModel, 4);
  const GRAM = 0;
  const UNIT_GRAM = 1;
  const RAW = 2;
  const UNIT = 3;
  const ws = new SimdWorkspace([dp * dp, dp * dp, dp * BLOCK, dp * BLOCK]);
  const raw = ws.view(RAW);
  const unit = ws.view(UNIT);
  const unitMean = new Float64Array(dModel);
  const invNorm = new Float64Array(BLOCK);

  for (let v0 = 0; v0 < vocab; v0 += BLOCK) {
    const width = Math.min(BLOCK, vocab - v0);
    if (width < BLOCK) {
      // Last, partial block: zero columns contribute nothing to either Gram.
      raw.fill(0);
      unit.fill(0);
    }
    invNorm.fill(0);
    for (let r = 0; r < dModel; r++) {
      const src = r * vocab + v0;
      const dst = r * BLOCK;
      for (let c = 0; c < width; c++) {
        const x = unembed[src + c]!;
        raw[dst + c] = x;
        invNorm[c] += x * x;
      }
    }
    // A zero column has no direction: it stays zero in the unit block (its cosine counts as 0).
    for (let c = 0; c < width; c++) invNorm[c] = invNorm[c]! > 0 ? 1 / Math.sqrt(invNorm[c]!) : 0;
    for (let r = 0; r < dModel; r++) {
      const row = r * BLOCK;
      let s = 0;
      for (let c = 0; c < width; c++) {
        const u = raw[row + c]! * invNorm[c]!;
        unit[row + c] = u;
        s += u;
      }
      unitMean[r] += s;
    }
    ws.multiplyABt(RAW, dp, RAW, dp, BLOCK, GRAM, dp, true);
    ws.multiplyABt(UNIT, dp, UNIT, dp, BLOCK, UNIT_GRAM, dp, true);
  }

  const gramPadded = ws.view(GRAM);
  const unitGramPadded = ws.view(UNIT_GRAM);
  const gram = new Float64Array(dModel * dModel);
  const unitGram = new Float64Array(dModel * dModel);
  for (let r = 0; r < dModel; r++) {
    for (let c = r; c < dModel; c++) {
      gram[r * dModel + c] = gram[c * dModel + r] = gramPadded[r * dp + c]!;
      unitGram[r * dModel + c] = unitGram[c * dModel + r] = unitGramPadded[r * dp + c]! / vocab;
    }
    unitMean[r] /= vocab;
  }
  return { dModel, vocab, gram, unitGram, unitMean };
}

// Rows of w_out handled per SIMD pass, bounding the workspace (two [ROWS, d_model] buffers).
const ROWS = 256;

/**
 * q_i = w_i^T S w_i for every row w_i of `rows` [n, d] and a symmetric S [d, d], as one blocked
 * product M = W S (SIMD) followed by the row-wise dot products of M and W.
 */
export function quadraticForms(sym: Float64Array, rows: ArrayLike<number>, d: number): Float64Array {
  const n = rows.length / d;
  if (!Number.isInteger(n) || sym.length !== d * d)
    throw new Error(`quadraticForms: shapes ${rows.length} / ${sym.length} do not fit d = ${d}`);
  const dp = padTo(d, 4);
  const A = 0;
  const S = 1;
  const M = 2;
  const ws = new SimdWorkspace([ROWS * dp, dp * dp, ROWS * dp]);
  const s = ws.view(S);
  for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) s[r * dp + c] = sym[r * d + c]!;
  const a = ws.view(A);
  const m = ws.view(M);
  const out = new Float64Array(n);
  for (let i0 = 0; i0 < n; i0 += ROWS) {
    const count = Math.min(ROWS, n - i0);
    a.fill(0);
    m.fill(0);
    for (let i = 0; i < count; i++) for (let c = 0; c < d; c++) a[i * dp + c] = rows[(i0 + i) * d + c]!;
    // S is symmetric, so (W S^T) = W S.
    ws.multiplyABt(A, padTo(count, 2), S, dp, dp, M, dp);
    for (let i = 0; i < count; i++) {
      let q = 0;
      for (let c = 0; c < d; c++) q += m[i * dp + c]! * a[i * dp + c]!;
      out[i0 + i] = q;
    }
  }
  return out;
}

function padTo(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}
