import { describe, expect, it } from 'vitest';
import {
  causalEffects,
  meanActivations,
  neuronCausalEffect,
  randomBaseline,
  type CausalData,
} from '../src/monitor/causal.ts';
import type { LastLayerWeights, NormType } from '../src/model/types.ts';

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32 - 0.5;
  };
}

function model(normType: NormType, d: number, V: number, dMlp: number, seed: number): LastLayerWeights {
  const r = rng(seed);
  const fill = (n: number, scale = 1, offset = 0) =>
    Float32Array.from({ length: n }, () => offset + scale * r());
  return {
    layer: 0,
    normType,
    normEps: 1e-5,
    unembed: fill(d * V, 2),
    unembedBias: fill(V, 0.3),
    finalNormWeight: fill(d, 0.5, 1),
    finalNormBias: normType === 'layernorm' ? fill(d, 0.4) : null,
    wOut: fill(dMlp * d, 3),
    dModel: d,
    dMlp,
    vocabSize: V,
  };
}

/** Independent implementation: explicit residual edit, full norm, explicit matrix product. */
function logitsOf(w: LastLayerWeights, x: number[], frozenSigma?: number): number[] {
  const d = w.dModel;
  const mean = w.normType === 'layernorm' ? x.reduce((a, b) => a + b, 0) / d : 0;
  const c = x.map((v) => v - mean);
  const sigma = frozenSigma ?? Math.sqrt(c.reduce((a, b) => a + b * b, 0) / d + w.normEps);
  const h = c.map((v, k) => (v / sigma) * w.finalNormWeight[k]! + (w.finalNormBias?.[k] ?? 0));
  return Array.from({ length: w.vocabSize }, (_, v) => {
    let s = w.unembedBias?.[v] ?? 0;
    for (let k = 0; k < d; k++) s += h[k]! * w.unembed[k * w.vocabSize + v]!;
    return s;
  });
}

function sigmaOf(w: LastLayerWeights, x: number[]): number {
  const d = w.dModel;
  const mean = w.normType === 'layernorm' ? x.reduce((a, b) => a + b, 0) / d : 0;
  return Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / d + w.normEps);
}

function lossAndEntropy(logits: number[], next: number): [number, number] {
  const m = Math.max(...logits);
  const z = Math.log(logits.reduce((a, l) => a + Math.exp(l - m), 0)) + m;
  const logp = logits.map((l) => l - z);
  return [-logp[next]!, -logp.reduce((a, lp) => a + Math.exp(lp) * lp, 0)];
}

function bruteForce(data: CausalData, index: number, c: number) {
  const w = data.weights;
  const d = w.dModel;
  const n = data.nextIds.length;
  const sums = { te: [0, 0, 0], de: [0, 0, 0], fde: [0, 0, 0] };
  let count = 0;
  for (let p = 0; p < n; p++) {
    const next = data.nextIds[p]!;
    if (next < 0) continue;
    count++;
    const x = Array.from({ length: d }, (_, k) => data.residuals[p * d + k]!);
    const a = data.mlpAct![p * w.dMlp + index]!;
    const xEdit = x.map((v, k) => v + (c - a) * w.wOut[index * d + k]!);
    const clean = logitsOf(w, x);
    const te = logitsOf(w, xEdit);
    const de = logitsOf(w, xEdit, sigmaOf(w, x));
    const f = data.fHat!;
    const along = te.reduce((s, l, v) => s + (l - clean[v]!) * f[v]!, 0);
    const fde = te.map((l, v) => l - along * f[v]!);
    const [l0, h0] = lossAndEntropy(clean, next);
    for (const [key, logits] of [
      ['te', te],
      ['de', de],
      ['fde', fde],
    ] as const) {
      const [l, h] = lossAndEntropy(logits, next);
      sums[key][0]! += Math.abs(l - l0);
      sums[key][1]! += l - l0;
      sums[key][2]! += h - h0;
    }
  }
  const summary = (s: number[]) => ({
    meanAbsDeltaLoss: s[0]! / count,
    meanDeltaLoss: s[1]! / count,
    meanDeltaEntropy: s[2]! / count,
  });
  return {
    total: summary(sums.te),
    direct: summary(sums.de),
    frequencyDirect: summary(sums.fde),
    positions: count,
  };
}

function randomData(w: LastLayerWeights, n: number, seed: number): CausalData {
  const r = rng(seed);
  const fRaw = Array.from({ length: w.vocabSize }, () => r());
  const mean = fRaw.reduce((a, b) => a + b, 0) / fRaw.length;
  const norm = Math.sqrt(fRaw.reduce((a, b) => a + (b - mean) ** 2, 0));
  return {
    weights: w,
    residuals: Float32Array.from({ length: n * w.dModel }, () => 4 * r() + 0.5),
    mlpAct: Float32Array.from({ length: n * w.dMlp }, () => 2 * r()),
    nextIds: Array.from({ length: n }, (_, p) => (p === 2 ? -1 : Math.floor((r() + 0.5) * w.vocabSize))),
    fHat: fRaw.map((v) => (v - mean) / norm),
  };
}

function expectSummaryClose(actual: Record<string, number>, expected: Record<string, number>) {
  for (const key of Object.keys(expected)) expect(actual[key]).toBeCloseTo(expected[key]!, 9);
}

describe('causal effects', () => {
  it.each(['layernorm', 'rmsnorm'] as const)(
    '%s: TE, DE and frequency DE match a brute-force recomputation',
    (normType) => {
      const w = model(normType, 6, 20, 5, normType === 'layernorm' ? 1 : 2);
      const data = randomData(w, 8, 3);
      const means = meanActivations(data.mlpAct!, w.dMlp);
      const effects = causalEffects(
        data,
        [0, 3, 4].map((index) => ({ index, ablateTo: means[index]! })),
      );
      for (const e of effects) {
        const expected = bruteForce(data, e.index, means[e.index]!);
        expect(e.positions).toBe(7);
        expectSummaryClose({ ...e.total }, expected.total);
        expectSummaryClose({ ...e.direct }, expected.direct);
        expectSummaryClose({ ...e.frequencyDirect! }, expected.frequencyDirect);
        expect(e.normMediatedFraction).toBeCloseTo(
          1 - expected.direct.meanAbsDeltaLoss / expected.total.meanAbsDeltaLoss,
          9,
        );
      }
    },
  );

  it.each(['layernorm', 'rmsnorm'] as const)(
    '%s: a neuron writing only into the null space of W_U has DE = 0, fraction 1',
    (normType) => {
      // d = 4: rows 2 and 3 of W_U are zero, so W_U reads nothing along e2 and e3. w_out = 5(e3 - e2)
      // has zero mean (LayerNorm centring leaves it alone) and lies entirely in that null space.
      const w = model(normType, 4, 6, 1, 5);
      w.unembed.fill(0, 2 * 6);
      w.wOut.set([0, 0, -5, 5]);
      const data: CausalData = {
        weights: w,
        residuals: Float32Array.from([1, -2, 0.5, 0.25, 3, 1, -1, 2]),
        mlpAct: Float32Array.from([0.1, 2]),
        nextIds: [1, 4],
      };
      const e = neuronCausalEffect(data, { index: 0, ablateTo: 3 });
      expect(e.direct.meanAbsDeltaLoss).toBe(0);
      expect(e.direct.meanDeltaEntropy).toBe(0);
      expect(e.total.meanAbsDeltaLoss).toBeGreaterThan(1e-3);
      // Raising the neuron grows the residual's norm, so logits shrink together: entropy rises.
      expect(e.total.meanDeltaEntropy).toBeGreaterThan(0);
      expect(e.normMediatedFraction).toBe(1);
    },
  );

  it.each(['layernorm', 'rmsnorm'] as const)(
    '%s: a norm-preserving edit in the row space has TE = DE, fraction 0',
    (normType) => {
      // x = (3, 4, 0, 0) -> x' = (4, 3, 0, 0): same norm and same mean, so sigma is unchanged and the
      // real norm and the frozen one agree. w_out = (1, -1, 0, 0), a = 0, c = 1.
      const w = model(normType, 4, 6, 1, 6);
      w.wOut.set([1, -1, 0, 0]);
      const data: CausalData = {
        weights: w,
        residuals: Float32Array.from([3, 4, 0, 0]),
        mlpAct: Float32Array.from([0]),
        nextIds: [2],
      };
      const e = neuronCausalEffect(data, { index: 0, ablateTo: 1 });
      expect(e.total.meanAbsDeltaLoss).toBeGreaterThan(1e-3);
      expect(e.direct.meanAbsDeltaLoss).toBeCloseTo(e.total.meanAbsDeltaLoss, 12);
      expect(e.direct.meanDeltaEntropy).toBeCloseTo(e.total.meanDeltaEntropy, 12);
      expect(e.normMediatedFraction).toBeCloseTo(0, 10);
    },
  );

  it('a neuron already at its ablation value has no effect and no fraction', () => {
    const w = model('rmsnorm', 4, 6, 2, 7);
    const data: CausalData = {
      weights: w,
      residuals: Float32Array.from([1, 2, 3, 4]),
      mlpAct: Float32Array.from([0.5, 1]),
      nextIds: [0],
    };
    const e = neuronCausalEffect(data, { index: 1, ablateTo: 1 });
    expect(e.total.meanAbsDeltaLoss).toBeLessThan(1e-12);
    expect(e.normMediatedFraction).toBeNull();
  });

  it('per-neuron activations override mlpAct', () => {
    const w = model('layernorm', 5, 9, 3, 8);
    const data = randomData(w, 4, 9);
    const acts = Float32Array.from({ length: 4 }, (_, p) => data.mlpAct![p * 3 + 1]!);
    const viaColumn = neuronCausalEffect(data, { index: 1, ablateTo: 0.2 });
    const viaOwn = neuronCausalEffect(
      { ...data, mlpAct: undefined },
      { index: 1, ablateTo: 0.2, activations: acts },
    );
    expect(viaOwn).toEqual(viaColumn);
  });

  it('random baseline: seeded, distinct, excludes candidates, equals causalEffects on the drawn neurons', () => {
    const w = model('layernorm', 5, 9, 12, 10);
    const data = randomData(w, 5, 11);
    const a = randomBaseline(data, { count: 4, seed: 42, exclude: [0, 1] });
    const b = randomBaseline(data, { count: 4, seed: 42, exclude: [0, 1] });
    expect(b).toEqual(a);
    const indices = a.neurons.map((e) => e.index);
    expect(new Set(indices).size).toBe(4);
    expect(indices).not.toContain(0);
    expect(indices).not.toContain(1);
    const means = meanActivations(data.mlpAct!, 12);
    const direct = causalEffects(
      data,
      indices.map((index) => ({ index, ablateTo: means[index]! })),
    );
    expect(a.neurons).toEqual(direct);
    const meanTE = direct.reduce((s, e) => s + e.total.meanAbsDeltaLoss, 0) / 4;
    expect(a.mean.total.meanAbsDeltaLoss).toBeCloseTo(meanTE, 12);
    expect(randomBaseline(data, { count: 100, seed: 1, exclude: [3] }).neurons).toHaveLength(11);
  });
});
