// How the demo model gets confidence-regulation neurons by construction (REFERENCE.md):
//
// Unembedding geometry (tied, so it is the token embedding wte [V, d]). In the processed W_U
// (gamma folded, centred over d_model and over the vocabulary) we want
//  - k directions the unembedding barely reads: tiny singular values, clearly below all others;
//  - one direction that reads out the log-frequency vector f: W_U^T e_f = alpha f.
// So each row of gamma * wte is a random vector whose components along the k "null" directions are
// shrunk to a few percent and whose component along e_f is replaced by alpha * f[token]. All these
// directions are orthogonal to the all-ones vector, which the LayerNorm centring removes anyway.
// (For LayerNorm models the all-ones direction is an exactly-zero singular direction of the processed
// W_U; it is a by-product of centring and not one of the k planted ones.)
//
// Planted last-layer neurons
//  - entropy neurons: w_out of large norm inside the null directions. Their direct effect on the
//    logits is tiny, but they make the final LayerNorm's sigma larger, so all logits shrink together;
//  - frequency neurons: w_out = the least-squares solution of W_U^T w = f (processed weights), with
//    a + and a - sign: raising them moves the output towards (or away from) the unigram distribution.
//  Both get a c_fc column and a positive bias so they fire on every position, with a value that varies.

import type { LastLayerWeights } from '../model/types.ts';
import { processWeights, type ProcessedWeights } from '../monitor/weight-processing.ts';
import type { Rng } from './rng.ts';

/** The directions of d_model space that the embedding construction plants. */
export interface UnembeddingPlan {
  /** k orthonormal directions the unembedding barely reads. */
  nullDirections: Float64Array[];
  /** The fraction of a random component kept along each null direction (the singular value's ratio). */
  nullShrink: number[];
  /** The direction that reads out the log-frequency vector. */
  frequencyDirection: Float64Array;
}

export interface PlantedNeurons {
  layer: number;
  entropy: number[];
  frequency: number[];
  /** +1: the neuron's logit effect is +f (towards frequent tokens); -1: the opposite. */
  frequencySigns: number[];
  /** The null-space dimension the entropy neurons were planted for (rho_k's k). */
  k: number;
}

/** The last layer's MLP tensors, modified in place by plantNeurons. */
export interface LastMlp {
  layer: number;
  /** c_fc.weight [d_model, d_mlp] (Conv1D layout: input rows, neuron columns) and c_fc.bias [d_mlp]. */
  fcWeight: Float32Array;
  fcBias: Float32Array;
  /** c_proj.weight [d_mlp, d_model] (row i = neuron i's w_out) and c_proj.bias [d_model]. */
  projWeight: Float32Array;
  projBias: Float32Array;
}

export interface PlantingScales {
  /** ||w_out|| of each entropy neuron. */
  entropyNorm: number;
  /** ||w_out|| of each frequency neuron. */
  frequencyNorm: number;
  /** Length of the constant residual component along e_f (the model's unigram prior). */
  frequencyPrior: number;
}

// Pre-activation biases that keep the planted neurons on (gelu_new ~ identity there), and the
// spread of their input weights, which makes the activation vary across positions.
const ENTROPY_BIAS = 3;
const FREQUENCY_BIAS = 2;
const PLANTED_INPUT_STD = 0.5;
// Relative size of the off-target part of a planted w_out: real entropy neurons are not perfectly in the
// null space (GPT-2's 11.584 has rho 0.99), nor frequency neurons perfectly on f. The entropy neurons'
// part is kept small (rho ~0.999): it is their direct effect on the logits, and the demo should show
// clamping one rescale the distribution without reordering tokens (greedy text stays the same).
const ENTROPY_OFF_TARGET = [0.03, 0.045, 0.035, 0.05];
const FREQUENCY_OFF_TARGET = [0.15, 0.22];
// How far each entropy neuron's null-space direction departs from the one they share.
const ENTROPY_OWN_DIRECTION = 0.6;
// A planted w_out also gets an all-ones component (a LayerNorm ignores it); the weight processing must
// remove it, otherwise rho and the frequency score come out visibly lower.
const ONES_COMPONENT = 0.5;

/** `count` unit vectors in R^d, orthogonal to each other and to the all-ones vector. */
export function orthonormalDirections(rng: Rng, d: number, count: number): Float64Array[] {
  const ones = new Float64Array(d).fill(1 / Math.sqrt(d));
  const out: Float64Array[] = [];
  while (out.length < count) {
    const v = new Float64Array(d);
    rng.fillNormal(v, 1);
    for (const u of [ones, ...out]) axpy(-dot(v, u), u, v);
    const n = norm(v);
    if (n > 1e-6) out.push(scale(v, 1 / n));
  }
  return out;
}

/** Chooses the planted directions: k null directions (shrunk to 0.5-1.5%) and the frequency direction. */
export function planUnembedding(rng: Rng, d: number, k: number): UnembeddingPlan {
  const dirs = orthonormalDirections(rng, d, k + 1);
  // Distinct shrink factors give distinct singular values, so the bottom-k subspace is well defined.
  const nullShrink = Array.from({ length: k }, (_, j) => 0.005 + (0.01 * j) / Math.max(1, k - 1));
  return { nullDirections: dirs.slice(0, k), nullShrink, frequencyDirection: dirs[k]! };
}

/**
 * The tied embedding wte [V, d] (row-major). Row v = (g_v with its null components shrunk and its e_f
 * component replaced by alpha * f[v]) / gamma, for g_v ~ N(0, std^2): dividing by the final norm's
 * gamma makes the gamma-folded W_U have exactly the planned geometry.
 */
export function buildTiedEmbedding(
  rng: Rng,
  vocab: number,
  d: number,
  std: number,
  plan: UnembeddingPlan,
  logFreq: Float64Array,
  finalGamma: Float32Array,
): Float32Array {
  // alpha makes the e_f row of W_U as long as a typical random row (std * sqrt(V)).
  const alpha = (std * Math.sqrt(vocab)) / norm(logFreq);
  // Each direction with the fraction of g's component along it that is removed: (1 - shrink) for a
  // null direction, all of it for e_f (whose component is then set to alpha * f). Flat arrays and
  // plain loops: this runs V * (k + 1) times, ~10^9 multiply-adds at GPT-2 small's size.
  const dirs = [...plan.nullDirections, plan.frequencyDirection];
  const removed = [...plan.nullShrink.map((s) => 1 - s), 1];
  const flat = new Float64Array(dirs.length * d);
  dirs.forEach((u, j) => flat.set(u, j * d));
  const ef = dirs.length - 1;
  const invGamma = Float64Array.from(finalGamma, (x) => 1 / x);
  const wte = new Float32Array(vocab * d);
  const g = new Float64Array(d);
  for (let v = 0; v < vocab; v++) {
    rng.fillNormal(g, std);
    for (let j = 0; j < dirs.length; j++) {
      const base = j * d;
      let c = 0;
      for (let i = 0; i < d; i++) c += g[i]! * flat[base + i]!;
      c = -removed[j]! * c + (j === ef ? alpha * logFreq[v]! : 0);
      for (let i = 0; i < d; i++) g[i] += c * flat[base + i]!;
    }
    const row = v * d;
    for (let i = 0; i < d; i++) wte[row + i] = g[i]! * invGamma[i]!;
  }
  return wte;
}

/**
 * Plants entropy and frequency neurons into the last MLP (in place) and returns their indices.
 * `unembedding` describes W_U exactly as the monitor will see it; the frequency neurons are fitted on
 * its processed form, and the result is checked there.
 */
export function plantNeurons(
  rng: Rng,
  mlp: LastMlp,
  unembedding: LastLayerWeights,
  plan: UnembeddingPlan,
  logFreq: Float64Array,
  scales: PlantingScales,
  counts: { entropy: number },
): PlantedNeurons {
  const { dModel: d, dMlp } = unembedding;
  const k = plan.nullDirections.length;
  const indices = distinctIndices(rng, dMlp, counts.entropy + 2);
  const entropy = indices.slice(0, counts.entropy);
  const frequency = indices.slice(counts.entropy);
  const frequencySigns = [1, -1];

  // Entropy neurons share a common direction inside the null subspace, each with its own variation
  // (for k = 1 they are all along the one null direction). Sharing keeps their outputs adding up
  // rather than cancelling, so taking any one of them away lowers sigma.
  const inNullSpace = () => {
    const v = new Float64Array(d);
    plan.nullDirections.forEach((q) => axpy(rng.normal(), q, v));
    return normalize(v);
  };
  const shared = inNullSpace();
  entropy.forEach((neuron, j) => {
    const target =
      k === 1
        ? Float64Array.from(shared)
        : normalize(axpy(ENTROPY_OWN_DIRECTION, inNullSpace(), Float64Array.from(shared)));
    const offTarget = randomDirectionAvoiding(rng, d, plan.nullDirections);
    const dir = normalize(axpy(ENTROPY_OFF_TARGET[j % ENTROPY_OFF_TARGET.length]!, offTarget, target));
    writeNeuron(rng, mlp, d, dMlp, neuron, dir, scales.entropyNorm, ENTROPY_BIAS);
  });

  const processed = processWeights(unembedding);
  const fit = normalize(
    leastSquaresReadout(processed.unembed, d, unembedding.vocabSize, logFreq, plan.nullDirections),
  );
  frequency.forEach((neuron, j) => {
    const offTarget = randomDirectionAvoiding(rng, d, [...plan.nullDirections, fit]);
    const dir = normalize(axpy(FREQUENCY_OFF_TARGET[j]!, offTarget, Float64Array.from(fit)));
    scale(dir, frequencySigns[j]!);
    writeNeuron(rng, mlp, d, dMlp, neuron, dir, scales.frequencyNorm, FREQUENCY_BIAS);
  });

  // The model's unigram prior: a constant residual component along the frequency read-out.
  for (let i = 0; i < d; i++) mlp.projBias[i] += scales.frequencyPrior * fit[i]!;

  checkPlanted(processed, plan, fit, logFreq, d, unembedding.vocabSize);
  return { layer: mlp.layer, entropy, frequency, frequencySigns, k };
}

/** Writes neuron i: w_out = length * dir plus an all-ones component, and an always-on input. */
function writeNeuron(
  rng: Rng,
  mlp: LastMlp,
  d: number,
  dMlp: number,
  i: number,
  dir: Float64Array,
  length: number,
  bias: number,
) {
  const onesPart = (ONES_COMPONENT * length) / Math.sqrt(d);
  for (let r = 0; r < d; r++) mlp.projWeight[i * d + r] = length * dir[r]! + onesPart;
  for (let r = 0; r < d; r++) mlp.fcWeight[r * dMlp + i] = (PLANTED_INPUT_STD / Math.sqrt(d)) * rng.normal();
  mlp.fcBias[i] = bias;
}

/**
 * argmin_w ||W_U^T w - f|| over w orthogonal to the null directions and the all-ones vector
 * (components there would be amplified by the tiny singular values or are meaningless), by
 * conjugate gradients on the normal equations (CGLS). W_U is [d, V] row-major and well conditioned
 * on that subspace, so a few dozen passes over it converge.
 */
export function leastSquaresReadout(
  unembed: Float32Array,
  d: number,
  vocab: number,
  f: Float64Array,
  exclude: Float64Array[],
): Float64Array {
  const ones = new Float64Array(d).fill(1 / Math.sqrt(d));
  const project = (x: Float64Array) => {
    for (const u of [ones, ...exclude]) axpy(-dot(x, u), u, x);
    return x;
  };
  const readout = (w: Float64Array) => {
    // W_U^T w, accumulated row by row so the inner loop runs along memory.
    const out = new Float64Array(vocab);
    for (let r = 0; r < d; r++) {
      const c = w[r]!;
      const base = r * vocab;
      for (let v = 0; v < vocab; v++) out[v] += c * unembed[base + v]!;
    }
    return out;
  };
  const gather = (y: Float64Array) => {
    // W_U y
    const out = new Float64Array(d);
    for (let r = 0; r < d; r++) {
      let s = 0;
      const base = r * vocab;
      for (let v = 0; v < vocab; v++) s += unembed[base + v]! * y[v]!;
      out[r] = s;
    }
    return project(out);
  };

  const w = new Float64Array(d);
  const residual = Float64Array.from(f);
  let s = gather(residual);
  const p = Float64Array.from(s);
  let gamma = dot(s, s);
  const tolerance = 1e-12 * gamma;
  for (let iter = 0; iter < 4 * d && gamma > tolerance; iter++) {
    const q = readout(p);
    const step = gamma / dot(q, q);
    axpy(step, p, w);
    axpy(-step, q, residual);
    s = gather(residual);
    const next = dot(s, s);
    const beta = next / gamma;
    gamma = next;
    for (let r = 0; r < d; r++) p[r] = s[r]! + beta * p[r]!;
  }
  return w;
}

/**
 * Guards the construction: on the processed W_U the null directions must read out far less than a
 * typical direction, and the frequency read-out must reproduce f. A failure is a bug in this file.
 */
function checkPlanted(
  processed: ProcessedWeights,
  plan: UnembeddingPlan,
  fit: Float64Array,
  f: Float64Array,
  d: number,
  vocab: number,
) {
  const readNorm = (w: Float64Array) => {
    let total = 0;
    const out = new Float64Array(vocab);
    for (let r = 0; r < d; r++) {
      const base = r * vocab;
      for (let v = 0; v < vocab; v++) out[v] += w[r]! * processed.unembed[base + v]!;
    }
    for (let v = 0; v < vocab; v++) total += out[v]! * out[v]!;
    return { out, length: Math.sqrt(total) };
  };
  // The root-mean-square singular value: how much a typical unit direction reads out.
  let frobenius = 0;
  for (let i = 0; i < processed.unembed.length; i++)
    frobenius += processed.unembed[i]! * processed.unembed[i]!;
  const typical = Math.sqrt(frobenius / d);
  plan.nullDirections.forEach((q, j) => {
    const ratio = readNorm(q).length / typical;
    if (ratio > 0.1)
      throw new Error(`demo model: null direction ${j} reads out ${ratio.toFixed(3)} of a typical direction`);
  });
  const { out } = readNorm(fit);
  const cos = dot(out, f) / (norm(out) * norm(f));
  if (cos < 0.99)
    throw new Error(`demo model: the frequency read-out fits f with cosine ${cos.toFixed(4)} only`);
}

/** A random unit vector orthogonal to the all-ones vector and to `avoid` (an orthonormal-ish set). */
function randomDirectionAvoiding(rng: Rng, d: number, avoid: Float64Array[]): Float64Array {
  const ones = new Float64Array(d).fill(1 / Math.sqrt(d));
  const v = new Float64Array(d);
  rng.fillNormal(v, 1);
  for (const u of [ones, ...avoid]) axpy(-dot(v, u) / dot(u, u), u, v);
  return normalize(v);
}

function distinctIndices(rng: Rng, n: number, count: number): number[] {
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(rng.int(n));
  return [...chosen];
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** y += a * x; returns y. */
function axpy(a: number, x: ArrayLike<number>, y: Float64Array): Float64Array {
  for (let i = 0; i < y.length; i++) y[i] += a * x[i]!;
  return y;
}

function scale(x: Float64Array, a: number): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] *= a;
  return x;
}

function normalize(x: Float64Array): Float64Array {
  return scale(x, 1 / norm(x));
}
