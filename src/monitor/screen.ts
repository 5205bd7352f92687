// The causal screen of every last-layer neuron (docs/SCIENCE.md "The causal screen"). Each neuron is
// clamped to a high quantile of its own calibration activations (mean ablation shows nothing for a
// neuron that is nearly always off, as an entropy neuron can be), on cached positions, in closed
// form on the RAW weights (notation of causal.ts).
//
// Stage 1, every neuron, the path through the final norm: clamping neuron i at a position moves the
// residual by delta wc (delta = clamp - a), hence the norm's scale from sigma to
//   sigma' = sqrt((|xc|^2 + 2 delta xc.wc + delta^2 |wc|^2) / d + eps),
// an O(d) number. Through the norm alone (its direct write ignored) the logits become
//   L(t) = t (L - b) + b,   t = sigma / sigma',
// so the entropy is a function H_p(t) of one scalar per position, shared by all neurons. It is
// tabulated at grid points in u = ln t with its exact derivative (one O(V) pass each) and read by
// cubic Hermite interpolation: O(V * grid) per position instead of O(V * d_mlp), and no neuron's
// V-sized readout wc W_U (d_mlp * d * V ~ 1e11 multiply-adds at GPT-2 size) is ever formed.
//
// Stage 2, a shortlist (the largest norm-path effects plus the weight candidates): the exact total
// and direct effects of causal.ts, whose entropy difference TE - DE is the norm-mediated effect
// (the paper's split). The neurons with the largest norm-mediated effect, most of their effect
// through the norm, are the entropy neurons found causally.

import { causalEffects, centredResidual, logitBias, type CausalData } from './causal.ts';

export interface ScreenOptions {
  /** Clamp quantile of each neuron's own activations, e.g. 0.99. */
  quantile: number;
  /** Per-neuron clamp values [d_mlp] (the quantile over the calibration positions). */
  clampTo: ArrayLike<number>;
  /** Neurons verified exactly: this many largest norm-path effects, plus `extra`. */
  verify: number;
  /** How many causally found neurons to report. */
  top: number;
  /** Always verified (the weight criteria's entropy candidates). */
  extra?: readonly number[];
}

export interface VerifiedScreenNeuron {
  index: number;
  clampTo: number;
  /** Mean entropy change (nats) with the norm recomputed (TE) and with its scale frozen (DE). */
  totalDeltaEntropy: number;
  directDeltaEntropy: number;
  /** TE - DE. */
  normMediatedDeltaEntropy: number;
  /**
   * |TE - DE| / (|TE - DE| + |DE|): the norm-mediated part's share of the effect's two parts, in
   * [0, 1] (1 - DE/TE, the loss-based convention of causal.ts, is unbounded when the parts have
   * opposite signs, as they often do for entropy). null when both parts are negligible.
   */
  normMediatedShare: number | null;
}

export interface ScreenSummary {
  quantile: number;
  positions: number;
  /** Share of the effect through the norm above which a neuron can be "found causally". */
  minShare: number;
  /** Clamp value of every neuron, by index. */
  clampTo: number[];
  /** Mean entropy change through the final norm's scale alone, every neuron, by index. */
  normPathDeltaEntropy: number[];
  /** The shortlist's exact split, largest |norm-mediated effect| first. */
  verified: VerifiedScreenNeuron[];
  /** Indices of the entropy neurons found causally, best first. */
  found: number[];
  /** Disagreements with the weight criteria: their candidates not found causally, and the reverse. */
  weightsOnly: number[];
  causalOnly: number[];
}

/** Share of the entropy change through the norm above which a neuron counts as an entropy neuron. */
export const MIN_SHARE = 0.5;
/** |TE - DE| + |DE| (nats) under which the share is not defined. */
const MIN_DELTA = 1e-9;
/** Grid spacing in u = ln t, and the most grid points per position. */
const GRID_STEP = 0.05;
const MAX_GRID = 129;

/** Type-7 (linear interpolation) quantile of each column of acts [n, d_mlp]. */
export function activationQuantiles(acts: ArrayLike<number>, dMlp: number, q: number): Float64Array {
  const n = acts.length / dMlp;
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`activationQuantiles: ${acts.length} values for d_mlp ${dMlp}`);
  const out = new Float64Array(dMlp);
  const col = new Float64Array(n);
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(n - 1, lo + 1);
  for (let i = 0; i < dMlp; i++) {
    for (let p = 0; p < n; p++) col[p] = acts[p * dMlp + i]!;
    col.sort();
    out[i] = col[lo]! + (h - lo) * (col[hi]! - col[lo]!);
  }
  return out;
}

/** H and dH/du of softmax(t a + b), t = e^u, in one pass after the max. */
export function scaledEntropy(a: Float64Array, b: Float64Array, u: number): { h: number; dh: number } {
  const t = Math.exp(u);
  let m = -Infinity;
  for (let v = 0; v < a.length; v++) m = Math.max(m, t * a[v]! + b[v]!);
  let s = 0;
  let sz = 0;
  let sa = 0;
  let saz = 0;
  for (let v = 0; v < a.length; v++) {
    const z = t * a[v]! + b[v]! - m;
    const e = Math.exp(z);
    s += e;
    sz += e * z;
    sa += e * a[v]!;
    saz += e * a[v]! * z;
  }
  const lse = Math.log(s);
  const h = lse - sz / s;
  // dH/dt = -sum_v p_v (log p_v + H) a_v,  log p_v = z_v - lse.
  const dhdt = -(saz / s - lse * (sa / s) + h * (sa / s));
  return { h, dh: t * dhdt };
}

export function screenNeurons(data: CausalData, opts: ScreenOptions): ScreenSummary {
  const w = data.weights;
  const { dModel: d, vocabSize: V, dMlp } = w;
  const n = data.nextIds.length;
  if (!data.mlpAct) throw new Error('screenNeurons: needs data.mlpAct');
  if (opts.clampTo.length !== dMlp)
    throw new Error(`screenNeurons: ${opts.clampTo.length} clamp values for ${dMlp} neurons`);
  const layerNorm = w.normType === 'layernorm';
  const wc = new Float64Array(dMlp * d);
  const wcSq = new Float64Array(dMlp);
  for (let i = 0; i < dMlp; i++) {
    let mean = 0;
    if (layerNorm) {
      for (let k = 0; k < d; k++) mean += w.wOut[i * d + k]!;
      mean /= d;
    }
    for (let k = 0; k < d; k++) {
      const x = w.wOut[i * d + k]! - mean;
      wc[i * d + k] = x;
      wcSq[i] += x * x;
    }
  }
  const bias = logitBias(w);
  const xc = new Float64Array(d);
  const centred = new Float64Array(V);
  const u = new Float64Array(dMlp);
  const sum = new Float64Array(dMlp);
  let positions = 0;
  for (let p = 0; p < n; p++) {
    if (data.nextIds[p]! < 0) continue;
    positions++;
    const { xcSq, sigma } = centredResidual(data, p, xc);
    // centred = L - b (clean logits less their bias), from the cache when analyze made one.
    if (data.cleanLogits) {
      for (let v = 0; v < V; v++) centred[v] = data.cleanLogits[p * V + v]! - bias[v]!;
    } else {
      centred.fill(0);
      for (let k = 0; k < d; k++) {
        const coef = (xc[k]! / sigma) * w.finalNormWeight[k]!;
        const row = k * V;
        for (let v = 0; v < V; v++) centred[v] += coef * w.unembed[row + v]!;
      }
    }
    let uMin = Infinity;
    let uMax = -Infinity;
    for (let i = 0; i < dMlp; i++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += xc[k]! * wc[i * d + k]!;
      const delta = opts.clampTo[i]! - data.mlpAct[p * dMlp + i]!;
      const sigmaNew = Math.sqrt(
        Math.max(0, xcSq + 2 * delta * dot + delta * delta * wcSq[i]!) / d + w.normEps,
      );
      u[i] = Math.log(sigma / sigmaNew);
      uMin = Math.min(uMin, u[i]!);
      uMax = Math.max(uMax, u[i]!);
    }
    const clean = scaledEntropy(centred, bias, 0).h;
    const table = entropyTable(centred, bias, uMin, uMax);
    for (let i = 0; i < dMlp; i++) sum[i] += table(u[i]!) - clean;
  }
  const normPath = Array.from(sum, (s) => (positions ? s / positions : 0));

  const byNormPath = normPath
    .map((_, i) => i)
    .sort((a, b) => Math.abs(normPath[b]!) - Math.abs(normPath[a]!) || a - b);
  const shortlist = [...new Set([...byNormPath.slice(0, Math.max(0, opts.verify)), ...(opts.extra ?? [])])];
  // The frequency split is not part of the screen: leave f_hat out and skip its O(V) pass.
  const { fHat: _unused, ...withoutFrequency } = data;
  const effects = causalEffects(
    withoutFrequency,
    shortlist.map((index) => ({ index, ablateTo: opts.clampTo[index]! })),
  );
  const verified: VerifiedScreenNeuron[] = effects.map((e) => {
    const te = e.total.meanDeltaEntropy;
    const de = e.direct.meanDeltaEntropy;
    return {
      index: e.index,
      clampTo: e.ablateTo,
      totalDeltaEntropy: te,
      directDeltaEntropy: de,
      normMediatedDeltaEntropy: te - de,
      normMediatedShare:
        Math.abs(te - de) + Math.abs(de) > MIN_DELTA
          ? Math.abs(te - de) / (Math.abs(te - de) + Math.abs(de))
          : null,
    };
  });
  verified.sort(
    (a, b) =>
      Math.abs(b.normMediatedDeltaEntropy) - Math.abs(a.normMediatedDeltaEntropy) || a.index - b.index,
  );
  const found = verified
    .filter((v) => v.normMediatedShare !== null && v.normMediatedShare >= MIN_SHARE)
    .slice(0, Math.max(0, opts.top))
    .map((v) => v.index);
  const weightCandidates = new Set(opts.extra ?? []);
  return {
    quantile: opts.quantile,
    positions,
    minShare: MIN_SHARE,
    clampTo: Array.from(opts.clampTo),
    normPathDeltaEntropy: normPath,
    verified,
    found,
    weightsOnly: [...weightCandidates].filter((i) => !found.includes(i)),
    causalOnly: found.filter((i) => !weightCandidates.has(i)),
  };
}

/** H(u) on [uMin, uMax] by cubic Hermite interpolation between exact values and slopes. */
function entropyTable(a: Float64Array, b: Float64Array, uMin: number, uMax: number): (u: number) => number {
  const span = uMax - uMin;
  const points = Math.min(MAX_GRID, Math.max(2, Math.ceil(span / GRID_STEP) + 1));
  if (!(span > 1e-12)) {
    const h = scaledEntropy(a, b, uMin).h;
    return () => h;
  }
  const step = span / (points - 1);
  const hs = new Float64Array(points);
  const ds = new Float64Array(points);
  for (let g = 0; g < points; g++) {
    const r = scaledEntropy(a, b, uMin + g * step);
    hs[g] = r.h;
    ds[g] = r.dh;
  }
  return (x) => {
    const pos = Math.min(points - 1 - 1e-12, Math.max(0, (x - uMin) / step));
    const g = Math.floor(pos);
    const s = pos - g;
    const s2 = s * s;
    const s3 = s2 * s;
    return (
      (2 * s3 - 3 * s2 + 1) * hs[g]! +
      (s3 - 2 * s2 + s) * step * ds[g]! +
      (-2 * s3 + 3 * s2) * hs[g + 1]! +
      (s3 - s2) * step * ds[g + 1]!
    );
  };
}
