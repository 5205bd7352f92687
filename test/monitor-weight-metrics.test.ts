import { describe, expect, it } from 'vitest';
import {
  computeWeightMetrics,
  defaultK,
  quadraticForms,
  smallestEigenvectors,
  unembedStats,
} from '../src/monitor/weight-metrics.ts';
import type { LastLayerWeights } from '../src/model/types.ts';
import { lastLayerWeightsFromCheckpoint } from '../src/model/checkpoint.ts';
import { fixture } from './helpers/shared.ts';
import {
  aidreamsWeights,
  gpt2TinyWeights,
  fixtureExpected,
  type AidreamsWeightMetrics,
} from './helpers/monitor-fixtures.ts';

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32 - 0.5;
  };
}

describe('weight metrics', () => {
  it('aidreams260K, k = 3: norm, rho and LogitVar of every neuron match the float64 reference', () => {
    const expected = fixtureExpected<{ weight_metrics: AidreamsWeightMetrics }>(
      'aidreams260K',
    ).weight_metrics;
    // The reference folds gamma, centres W_U over the vocabulary and skips d_model centring (RMSNorm):
    // exactly processWeights' RMSNorm path.
    expect(expected.note).toMatch(/no d_model centering/);
    const w = aidreamsWeights();
    expect(w.layer).toBe(expected.layer);
    const m = computeWeightMetrics(w, { k: expected.k });
    expect(m.k).toBe(3);
    expect(m.neurons).toHaveLength(w.dMlp);
    expect(expected.norm).toHaveLength(w.dMlp);
    for (const n of m.neurons) {
      expect(Math.abs(n.norm - expected.norm[n.index]!)).toBeLessThan(1e-3);
      expect(Math.abs(n.rho - expected.rho[n.index]!)).toBeLessThan(1e-3);
      expect(Math.abs(n.logitVar - expected.logitvar[n.index]!)).toBeLessThan(1e-3);
      // Tighter than the contract, to catch a wrong variance divisor (1/V vs 1/(V-1)).
      expect(n.logitVar / expected.logitvar[n.index]! - 1).toBeCloseTo(0, 4);
    }
  });

  it('the production checkpoint loader yields the same weights as the independent test reader', () => {
    for (const [name, own] of [
      ['aidreams260K', aidreamsWeights()],
      ['gpt2-tiny-random', gpt2TinyWeights()],
    ] as const) {
      const loaded: Record<string, unknown> = { ...lastLayerWeightsFromCheckpoint(fixture(name)) };
      loaded.unembedBias ??= null;
      // Same fields; arrays compared bit for bit as bytes (a deep toEqual over 10^6-element typed
      // arrays took a third of the suite's time for the same verdict).
      const expected = own as unknown as Record<string, unknown>;
      expect(Object.keys(loaded).sort()).toEqual(Object.keys(expected).sort());
      for (const [key, want] of Object.entries(expected)) {
        const got = loaded[key];
        if (ArrayBuffer.isView(want)) {
          expect(got?.constructor, `${name}.${key}`).toBe(want.constructor);
          const g = got as ArrayBufferView;
          const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
          expect(g.byteLength, `${name}.${key}`).toBe(want.byteLength);
          expect(bytes(g).equals(bytes(want)), `${name}.${key} differs`).toBe(true);
        } else {
          expect(got, `${name}.${key}`).toEqual(want);
        }
      }
    }
  });

  it('default k is about 1% of d_model (12 for GPT-2 small)', () => {
    expect(defaultK(768)).toBe(12);
    expect(defaultK(64)).toBe(1);
    expect(defaultK(16)).toBe(1);
  });

  it('hand-built: a direction W_U cannot read has rho 1, a readable one rho 0', () => {
    // d = 4, V = 7, RMSNorm, gamma = 1. Row 3 of W_U is zero, so e3 is the only null direction
    // (rows 0..2 random: full rank 3 after centring over 7 tokens).
    const r = rng(1);
    const d = 4;
    const V = 7;
    const unembed = Float32Array.from({ length: d * V }, (_, i) => (i >= 3 * V ? 0 : r()));
    const w: LastLayerWeights = {
      layer: 0,
      normType: 'rmsnorm',
      normEps: 1e-5,
      unembed,
      unembedBias: null,
      finalNormWeight: new Float32Array(d).fill(1),
      finalNormBias: null,
      wOut: Float32Array.from([0, 0, 0, 2, /**/ 3, 0, 0, 0, /**/ 1, 0, 0, 1]),
      dModel: d,
      dMlp: 3,
      vocabSize: V,
    };
    const m = computeWeightMetrics(w, { k: 1 });
    expect(m.neurons[0]!.rho).toBeCloseTo(1, 9);
    expect(m.neurons[0]!.norm).toBeCloseTo(2, 12);
    expect(m.neurons[0]!.logitVar).toBe(0);
    expect(m.neurons[1]!.rho).toBeCloseTo(0, 9);
    expect(m.neurons[2]!.rho).toBeCloseTo(Math.SQRT1_2, 9);
  });

  it('LogitVar equals a brute-force variance of cosines (divisor V - 1), LayerNorm processing included', () => {
    const r = rng(2);
    const d = 5;
    const V = 11;
    const w: LastLayerWeights = {
      layer: 0,
      normType: 'layernorm',
      normEps: 1e-5,
      unembed: Float32Array.from({ length: d * V }, r),
      unembedBias: null,
      finalNormWeight: Float32Array.from({ length: d }, () => 1 + r()),
      finalNormBias: Float32Array.from({ length: d }, r),
      wOut: Float32Array.from({ length: 3 * d }, r),
      dModel: d,
      dMlp: 3,
      vocabSize: V,
    };
    // Processing by hand: fold gamma, centre columns over d, centre rows over V; centre w_out.
    const u = Array.from({ length: d }, (_, k) =>
      Array.from({ length: V }, (_, v) => w.finalNormWeight[k]! * w.unembed[k * V + v]!),
    );
    for (let v = 0; v < V; v++) {
      const mean = u.reduce((s, row) => s + row[v]!, 0) / d;
      for (const row of u) row[v]! -= mean;
    }
    for (const row of u) {
      const mean = row.reduce((s, x) => s + x, 0) / V;
      for (let v = 0; v < V; v++) row[v]! -= mean;
    }
    const m = computeWeightMetrics(w, { k: 2 });
    for (let i = 0; i < 3; i++) {
      const raw = Array.from({ length: d }, (_, k) => w.wOut[i * d + k]!);
      const mean = raw.reduce((s, x) => s + x, 0) / d;
      const wo = raw.map((x) => x - mean);
      const wn = Math.hypot(...wo);
      const cos = Array.from({ length: V }, (_, v) => {
        const col = u.map((row) => row[v]!);
        return wo.reduce((s, x, k) => s + x * col[k]!, 0) / (wn * Math.hypot(...col));
      });
      const cm = cos.reduce((s, c) => s + c, 0) / V;
      const variance = cos.reduce((s, c) => s + (c - cm) ** 2, 0) / (V - 1);
      expect(m.neurons[i]!.norm).toBeCloseTo(wn, 6);
      expect(m.neurons[i]!.logitVar).toBeCloseTo(variance, 6);
    }
  });

  it('the Gram kernel handles d_model not a multiple of 4 and partial vocabulary blocks', () => {
    const r = rng(3);
    const d = 7;
    const V = 300;
    const u = Float32Array.from({ length: d * V }, r);
    const s = unembedStats(u, d, V);
    for (let a = 0; a < d; a++) {
      for (let b = 0; b < d; b++) {
        let dot = 0;
        for (let v = 0; v < V; v++) dot += u[a * V + v]! * u[b * V + v]!;
        expect(s.gram[a * d + b]).toBeCloseTo(dot, 9);
      }
    }
    // Smallest eigenvector of diag(3, 1, 2) is e1.
    const ev = smallestEigenvectors(Float64Array.from([3, 0, 0, 0, 1, 0, 0, 0, 2]), 3, 1);
    expect(Math.abs(ev[1]!)).toBeCloseTo(1, 12);
  });

  it('quadratic forms w^T S w: odd row counts, d not a multiple of 4, more rows than one pass', () => {
    const r = rng(4);
    const d = 5;
    const n = 301;
    const s = new Float64Array(d * d);
    for (let a = 0; a < d; a++) for (let b = a; b < d; b++) s[a * d + b] = s[b * d + a] = r();
    const rows = Float32Array.from({ length: n * d }, r);
    const q = quadraticForms(s, rows, d);
    for (let i = 0; i < n; i += 7) {
      let expected = 0;
      for (let a = 0; a < d; a++)
        for (let b = 0; b < d; b++) expected += rows[i * d + a]! * s[a * d + b]! * rows[i * d + b]!;
      expect(q[i]).toBeCloseTo(expected, 12);
    }
    expect(q[n - 1]).toBeCloseTo(
      Array.from({ length: d }, (_, a) =>
        Array.from(
          { length: d },
          (_, b) => rows[(n - 1) * d + a]! * s[a * d + b]! * rows[(n - 1) * d + b]!,
        ).reduce((x, y) => x + y),
      ).reduce((x, y) => x + y),
      12,
    );
  });
});
