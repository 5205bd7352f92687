// Weight-based metrics of last-layer neurons (REFERENCE.md "Weight-based metrics"; docs/SCIENCE.md
// "The dark subspace"), computed on processed weights (weight-processing.ts):
//   norm      = ||w_out||
//   rho       = ||D^T w_out|| / ||w_out||, D = an orthonormal basis of the dark subspace of W_U
//               ([d_model, V]): the left singular vectors with the max(k, nullity) smallest singular
//               values, every numerically zero one included (darkSubspace below). With nullity <= k
//               this is the paper's rho_k exactly; with a larger exact null space (a vocabulary
//               smaller than d_model) it is the whole null space, not k arbitrary vectors of it.
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
  /** The k asked for (the paper's bottom-k). */
  k: number;
  /** Numerical rank of the processed W_U (the all-ones direction of a LayerNorm model not counted). */
  rank: number;
  /** Directions W_U cannot read at all (singular value <= tolerance), all-ones direction excluded. */
  nullity: number;
  /** Dimension of the dark subspace rho measures: max(k, nullity), at most the directions there are. */
  darkDim: number;
  /** Rank tolerance relative to the largest singular value (rankTolerance below). */
  rankTolerance: number;
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
  const dark = darkSubspace(stats.gram, d, V, { k, layerNorm: w.normType === 'layernorm' });
  const nullBasis = dark.basis;
  const darkDim = dark.darkDim;

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
    for (let j = 0; j < darkDim; j++) {
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
  return { k, rank: dark.rank, nullity: dark.nullity, darkDim, rankTolerance: dark.tolerance, neurons };
}

const EPS32 = 2 ** -23;
const EPS64 = 2 ** -52;

/**
 * Singular values of the processed W_U at or below tolerance * s_max count as zero. Two error
 * sources bound how large a truly zero one can come out:
 *  - W_U is processed in float64 but stored as float32: each entry moves by at most eps32/2 of
 *    itself, so (Weyl) every singular value moves by at most ||E||_F <= eps32/2 * ||W_U||_F
 *    <= eps32/2 * sqrt(min(d, V)) * s_max;
 *  - s comes from the eigenvalues of G = W_U W_U^T in float64: a backward-stable symmetric
 *    eigensolver gets them within about d * eps64 * s_max^2, so a zero s reads as up to
 *    sqrt(d * eps64) * s_max.
 * The tolerance is the sum, with a factor 2 on the first (eps32 rather than eps32/2). It is far
 * tighter than numpy's matrix_rank default (max(d, V) * eps * s_max, 6e-3 at GPT-2's vocabulary),
 * which would call genuinely informative directions at 0.5% of s_max null (the demo model plants
 * such directions at 4.8e-3); at makemore-names it is 7.4e-7, the 37 null singular values are at most
 * 2.6e-8 and the smallest informative one is 0.18 (all relative to s_max).
 */
export function rankTolerance(dModel: number, vocab: number): number {
  return EPS32 * Math.sqrt(Math.min(dModel, vocab)) + Math.sqrt(dModel * EPS64);
}

export interface DarkSubspace {
  /** Orthonormal basis, darkDim rows of length d, smallest singular value first. */
  basis: Float64Array;
  darkDim: number;
  rank: number;
  nullity: number;
  tolerance: number;
  /** Singular values of the directions considered (all-ones excluded), ascending. */
  singularValues: Float64Array;
}

/**
 * The dark subspace of W_U from G = W_U W_U^T: the eigenvectors with the max(k, nullity) smallest
 * eigenvalues. LayerNorm models: centring W_U over d_model makes the all-ones direction an exact null
 * direction, orthogonal to every processed w_out; counted among the smallest it would only waste a
 * slot (at d_model 64, k = 1, every rho would be 0). So it is lifted above every other eigenvalue and
 * dropped.
 */
export function darkSubspace(
  gram: Float64Array,
  d: number,
  vocab: number,
  opts: { k: number; layerNorm: boolean },
): DarkSubspace {
  const sym = opts.layerNorm ? liftAllOnesDirection(gram, d) : gram;
  const { values, vectors } = symmetricEigen(sym, d);
  // values ascending; a lifted all-ones direction is the last one (its eigenvalue is 2 trace(G)).
  const count = opts.layerNorm ? d - 1 : d;
  const singularValues = Float64Array.from(values.slice(0, count), (l) => Math.sqrt(Math.max(0, l)));
  const sMax = count > 0 ? singularValues[count - 1]! : 0;
  const tolerance = rankTolerance(d, vocab);
  let nullity = 0;
  while (nullity < count && singularValues[nullity]! <= tolerance * sMax) nullity++;
  const rank = count - nullity;
  const darkDim = Math.min(count, Math.max(opts.k, nullity));
  const basis = new Float64Array(darkDim * d);
  for (let j = 0; j < darkDim; j++) basis.set(vectors.subarray(j * d, (j + 1) * d), j * d);
  return { basis, darkDim, rank, nullity, tolerance, singularValues };
}

/**
 * G + 2 trace(G) * (1/d) 11^T. After centring over d_model, the unit all-ones vector is an eigenvector
 * of G with eigenvalue 0; this moves its eigenvalue to 2 trace(G) (above every other one whenever
 * G is not zero) and leaves every other eigenvector (all orthogonal to it) unchanged.
 */
export function liftAllOnesDirection(gram: Float64Array, d: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < d; i++) trace += gram[i * d + i]!;
  return gram.map((g) => g + (2 * trace) / d);
}

/** Eigenvalues (ascending) and unit eigenvectors (row j for value j) of a symmetric [d, d] matrix. */
export function symmetricEigen(
  sym: Float64Array,
  d: number,
): { values: Float64Array; vectors: Float64Array } {
  const m = new Matrix(d, d);
  for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) m.set(r, c, sym[r * d + c]!);
  const eig = new EigenvalueDecomposition(m, { assumeSymmetric: true });
  const raw = eig.realEigenvalues;
  const order = raw.map((_, i) => i).sort((a, b) => raw[a]! - raw[b]!);
  const ev = eig.eigenvectorMatrix;
  const values = Float64Array.from(order, (i) => raw[i]!);
  const vectors = new Float64Array(d * d);
  for (let j = 0; j < d; j++) for (let r = 0; r < d; r++) vectors[j * d + r] = ev.get(r, order[j]!);
  return { values, vectors };
}

/**
 * Eigenvectors of the symmetric matrix [d, d] for its k smallest eigenvalues, as k rows of length d
 * (row j = j-th smallest). For a Gram matrix W W^T these are W's left singular vectors with the k
 * smallest singular values.
 */
export function smallestEigenvectors(sym: Float64Array, d: number, k: number): Float64Array {
  return symmetricEigen(sym, d).vectors.slice(0, k * d);
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
