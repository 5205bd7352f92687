// Total vs direct effect of setting last-layer neurons to a value (mean ablation, or the causal
// screen's clamp, screen.ts) from cached activations
// (REFERENCE.md "Causal metrics"), on the RAW weights: the real final norm (gamma, beta, eps), raw
// W_U and b_U. Last-layer neurons need no second forward pass: setting neuron i to c at a position
// with final residual x and activation a gives  x' = x + delta w_out,  delta = c - a.
//
// Notation per position: centring P (LayerNorm: subtract the mean over d_model; RMSNorm: none),
// xc = P x, sigma = sqrt(|xc|^2 / d + eps), W = diag(gamma) W_U, b = beta W_U + b_U, clean logits
// L = (xc / sigma) W + b. For neuron i let wc = P w_out and r = wc W (a V-vector, once per neuron).
//   TE: the real norm recomputed. P x' = xc + delta wc, so
//       sigma' = sqrt((|xc|^2 + 2 delta xc.wc + delta^2 |wc|^2) / d + eps),
//       L_TE = (sigma / sigma') (L - b) + (delta / sigma') r + b.
//   DE: the norm's scale frozen at sigma (centring still applies):  L_DE = L + (delta / sigma) r.
//   Frequency DE: the TE logits with their component along f_hat held at its clean value:
//       L_FDE = L_TE - ((L_TE - L) . f_hat) f_hat.
// So a position costs one d x V product (L) shared by all neurons, then O(V) per neuron.
// Loss = -log softmax(logits)[next token]; entropy in nats. Effects are means over positions of
// |loss' - loss| and of (entropy' - entropy).

import type { LastLayerWeights } from '../model/types.ts';
import { readouts } from './readout.ts';
import { rowSignals } from './signals.ts';

export interface CausalData {
  /** RAW last-layer weights (not processed). */
  weights: LastLayerWeights;
  /** Clean final residuals (the final norm's input) [n, d_model]. */
  residuals: ArrayLike<number>;
  /** Next token at each position [n]; positions with a negative id are skipped. */
  nextIds: ArrayLike<number>;
  /** All clean last-layer activations [n, d_mlp]; needed unless every neuron brings its own. */
  mlpAct?: ArrayLike<number>;
  /** Centred unit frequency direction f_hat [V] (frequency.ts); enables the frequency DE. */
  fHat?: ArrayLike<number>;
  /**
   * Clean logits [n, V] (withCleanLogits). The d x V product per position is the largest shared cost
   * (5e9 multiply-adds for 128 positions at GPT-2 small); `analyze` computes it once for all its calls.
   */
  cleanLogits?: Float64Array;
}

/** data plus its clean logits at every position (zeros where the next id is negative). */
export function withCleanLogits(data: CausalData): CausalData {
  const w = data.weights;
  const { dModel: d, vocabSize: V } = w;
  const n = data.nextIds.length;
  const bias = logitBias(w);
  const scaled = new Float64Array(n * d);
  const xc = new Float64Array(d);
  for (let p = 0; p < n; p++) {
    if (data.nextIds[p]! < 0) continue;
    const { sigma } = centredResidual(data, p, xc);
    for (let k = 0; k < d; k++) scaled[p * d + k] = xc[k]! / sigma;
  }
  const out = readouts(w, scaled, n);
  for (let p = 0; p < n; p++) {
    if (data.nextIds[p]! < 0) continue;
    for (let v = 0; v < V; v++) out[p * V + v] += bias[v]!;
  }
  return { ...data, cleanLogits: out };
}

/** xc = P x at position p (centred for LayerNorm); returns |xc|^2 and the norm's scale sigma. */
export function centredResidual(
  data: CausalData,
  p: number,
  xc: Float64Array,
): { xcSq: number; sigma: number } {
  const w = data.weights;
  const d = w.dModel;
  for (let k = 0; k < d; k++) xc[k] = data.residuals[p * d + k]!;
  if (w.normType === 'layernorm') centre(xc);
  let xcSq = 0;
  for (let k = 0; k < d; k++) xcSq += xc[k]! * xc[k]!;
  return { xcSq, sigma: Math.sqrt(xcSq / d + w.normEps) };
}

export interface NeuronAblation {
  index: number;
  /** The value the neuron is set to (mean ablation: its calibration mean; the screen: a high quantile). */
  ablateTo: number;
  /** This neuron's clean activations [n]; defaults to column `index` of data.mlpAct. */
  activations?: ArrayLike<number>;
}

export interface EffectSummary {
  meanAbsDeltaLoss: number;
  meanDeltaLoss: number;
  meanDeltaEntropy: number;
}

export interface CausalEffect {
  index: number;
  ablateTo: number;
  /** Positions averaged over. */
  positions: number;
  total: EffectSummary;
  direct: EffectSummary;
  /**
   * 1 - DE/TE on mean |delta loss|: the share of the effect that goes through the final norm's
   * scale. null when TE is below MIN_EFFECT (the neuron does nothing measurable, so there is
   * nothing to apportion and the ratio would be noise). Not clamped: a negative value means the
   * norm counteracts the direct effect.
   */
  normMediatedFraction: number | null;
  /** Present when data.fHat is given. */
  frequencyDirect?: EffectSummary;
  /** 1 - FDE/TE, same conventions as normMediatedFraction. */
  frequencyMediatedFraction?: number | null;
}

/** Mean |delta loss| (nats) under which a neuron is treated as having no effect. */
export const MIN_EFFECT = 1e-9;

export function mediatedFraction(total: number, direct: number): number | null {
  return total > MIN_EFFECT ? 1 - direct / total : null;
}

export function causalEffects(data: CausalData, neurons: readonly NeuronAblation[]): CausalEffect[] {
  const w = data.weights;
  const { dModel: d, vocabSize: V, dMlp } = w;
  const n = data.nextIds.length;
  if (data.residuals.length !== n * d) {
    throw new Error(`causalEffects: residuals have ${data.residuals.length} values, expected ${n}x${d}`);
  }
  if (data.mlpAct && data.mlpAct.length !== n * dMlp) {
    throw new Error(`causalEffects: mlpAct has ${data.mlpAct.length} values, expected ${n}x${dMlp}`);
  }
  if (data.fHat && data.fHat.length !== V)
    throw new Error(`causalEffects: f_hat has ${data.fHat.length} values, expected ${V}`);
  const layerNorm = w.normType === 'layernorm';
  const bias = logitBias(w);
  const fHat = data.fHat ?? null;

  const perNeuron = neurons.map((nr) => {
    if (!Number.isInteger(nr.index) || nr.index < 0 || nr.index >= dMlp) {
      throw new Error(`causalEffects: neuron index ${nr.index} is not in 0..${dMlp - 1}`);
    }
    const acts = nr.activations;
    if (acts && acts.length !== n)
      throw new Error(`causalEffects: neuron ${nr.index} has ${acts.length} activations, expected ${n}`);
    if (!acts && !data.mlpAct)
      throw new Error(`causalEffects: no activations for neuron ${nr.index} (pass mlpAct or activations)`);
    const wc = new Float64Array(d);
    for (let k = 0; k < d; k++) wc[k] = w.wOut[nr.index * d + k]!;
    if (layerNorm) centre(wc);
    let wcSq = 0;
    for (let k = 0; k < d; k++) wcSq += wc[k]! * wc[k]!;
    return {
      spec: nr,
      wc,
      wcSq,
      r: new Float64Array(0) as Float64Array<ArrayBufferLike>,
      te: new Accumulator(),
      de: new Accumulator(),
      fde: new Accumulator(),
    };
  });

  // Every neuron's readout r in one blocked SIMD product (readout.ts).
  const wcAll = new Float64Array(perNeuron.length * d);
  perNeuron.forEach((nr, j) => wcAll.set(nr.wc, j * d));
  const rAll = readouts(w, wcAll, perNeuron.length);
  perNeuron.forEach((nr, j) => (nr.r = rAll.subarray(j * V, (j + 1) * V)));

  const xc = new Float64Array(d);
  const clean = new Float64Array(V);
  const edited = new Float64Array(V);
  let positions = 0;
  for (let p = 0; p < n; p++) {
    const next = data.nextIds[p]!;
    if (next < 0) continue;
    if (next >= V)
      throw new Error(`causalEffects: next token ${next} at position ${p} is outside the vocabulary`);
    positions++;

    const { xcSq, sigma } = centredResidual(data, p, xc);
    if (data.cleanLogits) clean.set(data.cleanLogits.subarray(p * V, (p + 1) * V));
    else cleanLogits(w, xc, sigma, bias, clean);
    const base = rowSignals(clean, { token: next });
    const baseLoss = -base.tokenLogprob;

    for (const nr of perNeuron) {
      const a = nr.spec.activations ? nr.spec.activations[p]! : data.mlpAct![p * dMlp + nr.spec.index]!;
      const delta = nr.spec.ablateTo - a;
      let xcDotWc = 0;
      for (let k = 0; k < d; k++) xcDotWc += xc[k]! * nr.wc[k]!;
      const sigmaNew = Math.sqrt((xcSq + 2 * delta * xcDotWc + delta * delta * nr.wcSq) / d + w.normEps);

      // DE: L + (delta / sigma) r
      const deCoef = delta / sigma;
      for (let v = 0; v < V; v++) edited[v] = clean[v]! + deCoef * nr.r[v]!;
      nr.de.add(rowSignals(edited, { token: next }), baseLoss, base.entropy);

      // TE: (sigma / sigma') (L - b) + (delta / sigma') r + b
      const ratio = sigma / sigmaNew;
      const teCoef = delta / sigmaNew;
      for (let v = 0; v < V; v++) edited[v] = ratio * (clean[v]! - bias[v]!) + teCoef * nr.r[v]! + bias[v]!;
      nr.te.add(rowSignals(edited, { token: next }), baseLoss, base.entropy);

      if (fHat) {
        let along = 0;
        for (let v = 0; v < V; v++) along += (edited[v]! - clean[v]!) * fHat[v]!;
        for (let v = 0; v < V; v++) edited[v] -= along * fHat[v]!;
        nr.fde.add(rowSignals(edited, { token: next }), baseLoss, base.entropy);
      }
    }
  }

  return perNeuron.map((nr) => {
    const total = nr.te.summary();
    const direct = nr.de.summary();
    const effect: CausalEffect = {
      index: nr.spec.index,
      ablateTo: nr.spec.ablateTo,
      positions,
      total,
      direct,
      normMediatedFraction: mediatedFraction(total.meanAbsDeltaLoss, direct.meanAbsDeltaLoss),
    };
    if (fHat) {
      effect.frequencyDirect = nr.fde.summary();
      effect.frequencyMediatedFraction = mediatedFraction(
        total.meanAbsDeltaLoss,
        effect.frequencyDirect.meanAbsDeltaLoss,
      );
    }
    return effect;
  });
}

/** One neuron's effect (see causalEffects). */
export function neuronCausalEffect(data: CausalData, neuron: NeuronAblation): CausalEffect {
  return causalEffects(data, [neuron])[0]!;
}

/** Mean activation of every neuron over the cached positions [d_mlp]: the mean-ablation values. */
export function meanActivations(mlpAct: ArrayLike<number>, dMlp: number): Float64Array {
  const n = mlpAct.length / dMlp;
  if (!Number.isInteger(n))
    throw new Error(`meanActivations: ${mlpAct.length} values is not a multiple of d_mlp ${dMlp}`);
  const mean = new Float64Array(dMlp);
  for (let p = 0; p < n; p++) for (let i = 0; i < dMlp; i++) mean[i] += mlpAct[p * dMlp + i]!;
  if (n > 0) for (let i = 0; i < dMlp; i++) mean[i] /= n;
  return mean;
}

export interface RandomBaseline {
  seed: number;
  neurons: CausalEffect[];
  /** Means over the sampled neurons (fractions over those where defined; null when none is). */
  mean: {
    total: EffectSummary;
    direct: EffectSummary;
    normMediatedFraction: number | null;
  };
}

/**
 * The same effects for `count` distinct neurons drawn uniformly (seeded, reproducible) from the
 * last layer, minus `exclude` (the candidates themselves): what an ordinary neuron looks like.
 * Each is mean-ablated to its mean over data.mlpAct unless ablateTo says otherwise.
 */
export function randomBaseline(
  data: CausalData,
  opts: { count: number; seed?: number; exclude?: Iterable<number>; ablateTo?: (index: number) => number },
): RandomBaseline {
  const dMlp = data.weights.dMlp;
  if (!data.mlpAct) throw new Error('randomBaseline: needs data.mlpAct (all last-layer activations)');
  const seed = opts.seed ?? 0;
  const excluded = new Set(opts.exclude ?? []);
  const pool: number[] = [];
  for (let i = 0; i < dMlp; i++) if (!excluded.has(i)) pool.push(i);
  const count = Math.min(Math.max(0, Math.floor(opts.count)), pool.length);
  // Partial Fisher-Yates shuffle with a seeded generator.
  const rand = mulberry32(seed);
  for (let j = 0; j < count; j++) {
    const pick = j + Math.floor(rand() * (pool.length - j));
    [pool[j], pool[pick]] = [pool[pick]!, pool[j]!];
  }
  const indices = pool.slice(0, count).sort((a, b) => a - b);
  const means = opts.ablateTo ? null : meanActivations(data.mlpAct, dMlp);
  const effects = causalEffects(
    data,
    indices.map((index) => ({ index, ablateTo: opts.ablateTo ? opts.ablateTo(index) : means![index]! })),
  );
  const fractions = effects.map((e) => e.normMediatedFraction).filter((f): f is number => f !== null);
  return {
    seed,
    neurons: effects,
    mean: {
      total: meanSummary(effects.map((e) => e.total)),
      direct: meanSummary(effects.map((e) => e.direct)),
      normMediatedFraction: fractions.length ? fractions.reduce((s, f) => s + f, 0) / fractions.length : null,
    },
  };
}

function meanSummary(list: EffectSummary[]): EffectSummary {
  const out: EffectSummary = { meanAbsDeltaLoss: 0, meanDeltaLoss: 0, meanDeltaEntropy: 0 };
  if (list.length === 0) return out;
  for (const s of list) {
    out.meanAbsDeltaLoss += s.meanAbsDeltaLoss / list.length;
    out.meanDeltaLoss += s.meanDeltaLoss / list.length;
    out.meanDeltaEntropy += s.meanDeltaEntropy / list.length;
  }
  return out;
}

class Accumulator {
  private n = 0;
  private absLoss = 0;
  private loss = 0;
  private entropy = 0;

  add(edited: { tokenLogprob: number; entropy: number }, cleanLoss: number, cleanEntropy: number): void {
    const dLoss = -edited.tokenLogprob - cleanLoss;
    this.n++;
    this.absLoss += Math.abs(dLoss);
    this.loss += dLoss;
    this.entropy += edited.entropy - cleanEntropy;
  }

  summary(): EffectSummary {
    const n = this.n || 1;
    return {
      meanAbsDeltaLoss: this.absLoss / n,
      meanDeltaLoss: this.loss / n,
      meanDeltaEntropy: this.entropy / n,
    };
  }
}

function centre(v: Float64Array): void {
  let s = 0;
  for (let k = 0; k < v.length; k++) s += v[k]!;
  const mean = s / v.length;
  for (let k = 0; k < v.length; k++) v[k] -= mean;
}

/** b = beta W_U + b_U [V] (zeros for RMSNorm without an unembedding bias). */
export function logitBias(w: LastLayerWeights): Float64Array {
  const V = w.vocabSize;
  const b = new Float64Array(V);
  if (w.unembedBias) for (let v = 0; v < V; v++) b[v] = w.unembedBias[v]!;
  if (w.finalNormBias) {
    for (let k = 0; k < w.dModel; k++) {
      const beta = w.finalNormBias[k]!;
      const row = k * V;
      for (let v = 0; v < V; v++) b[v] += beta * w.unembed[row + v]!;
    }
  }
  return b;
}

/** out = (xc / sigma) diag(gamma) W_U + bias; rows of W_U are contiguous, so accumulate row-wise. */
function cleanLogits(
  w: LastLayerWeights,
  xc: Float64Array,
  sigma: number,
  bias: Float64Array,
  out: Float64Array,
): void {
  out.set(bias);
  const V = w.vocabSize;
  for (let k = 0; k < w.dModel; k++) {
    const coef = (xc[k]! / sigma) * w.finalNormWeight[k]!;
    const row = k * V;
    for (let v = 0; v < V; v++) out[v] += coef * w.unembed[row + v]!;
  }
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
