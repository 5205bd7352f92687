import { describe, expect, it } from 'vitest';
import { processWeights } from '../src/monitor/weight-processing.ts';
import type { LastLayerWeights } from '../src/model/types.ts';
import { aidreamsWeights, gpt2TinyWeights } from './helpers/monitor-fixtures.ts';

/** Deterministic pseudo-random numbers (mulberry32) for synthetic weights. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

function randomWeights(
  normType: 'layernorm' | 'rmsnorm',
  dModel: number,
  vocab: number,
  dMlp: number,
): LastLayerWeights {
  const r = rng(7);
  const fill = (n: number, scale = 1, offset = 0) =>
    Float32Array.from({ length: n }, () => offset + scale * r());
  return {
    layer: 0,
    normType,
    normEps: 1e-5,
    unembed: fill(dModel * vocab),
    unembedBias: null,
    finalNormWeight: fill(dModel, 0.5, 1),
    finalNormBias: normType === 'layernorm' ? fill(dModel, 0.2) : null,
    wOut: fill(dMlp * dModel, 1, 0.3),
    dModel,
    dMlp,
    vocabSize: vocab,
  };
}

/** Logits of residual x through the real final norm and raw W_U (float64). */
function rawLogits(w: LastLayerWeights, x: number[]): number[] {
  const d = w.dModel;
  const mean = w.normType === 'layernorm' ? x.reduce((a, b) => a + b, 0) / d : 0;
  const c = x.map((v) => v - mean);
  const sigma = Math.sqrt(c.reduce((a, b) => a + b * b, 0) / d + w.normEps);
  const h = c.map((v, r) => (v / sigma) * w.finalNormWeight[r]! + (w.finalNormBias?.[r] ?? 0));
  const out: number[] = [];
  for (let v = 0; v < w.vocabSize; v++) {
    let s = 0;
    for (let r = 0; r < d; r++) s += h[r]! * w.unembed[r * w.vocabSize + v]!;
    out.push(s);
  }
  return out;
}

describe('processWeights', () => {
  it('RMSNorm (aidreams260K): folds gamma, centres rows over the vocabulary, leaves w_out alone', () => {
    const w = aidreamsWeights();
    const p = processWeights(w);
    const { dModel: d, vocabSize: V } = w;
    for (let r = 0; r < d; r++) {
      let mean = 0;
      for (let v = 0; v < V; v++) mean += w.finalNormWeight[r]! * w.unembed[r * V + v]!;
      mean /= V;
      for (let v = 0; v < V; v += 37) {
        const expected = w.finalNormWeight[r]! * w.unembed[r * V + v]! - mean;
        expect(p.unembed[r * V + v]).toBeCloseTo(expected, 6);
      }
    }
    expect(Array.from(p.wOut)).toEqual(Array.from(w.wOut));
  });

  it('LayerNorm: every row and column of W_U and every w_out is centred', () => {
    const w = randomWeights('layernorm', 8, 50, 5);
    const p = processWeights(w);
    for (let r = 0; r < 8; r++) {
      let s = 0;
      for (let v = 0; v < 50; v++) s += p.unembed[r * 50 + v]!;
      expect(Math.abs(s)).toBeLessThan(1e-5);
    }
    for (let v = 0; v < 50; v++) {
      let s = 0;
      for (let r = 0; r < 8; r++) s += p.unembed[r * 50 + v]!;
      expect(Math.abs(s)).toBeLessThan(1e-5);
    }
    for (let i = 0; i < 5; i++) {
      let s = 0;
      for (let r = 0; r < 8; r++) s += p.wOut[i * 8 + r]!;
      expect(Math.abs(s)).toBeLessThan(1e-5);
    }
  });

  it.each(['layernorm', 'rmsnorm'] as const)(
    '%s: processed W_U gives the real logits up to a constant shift (the whole point of processing)',
    (normType) => {
      const w = randomWeights(normType, 8, 50, 5);
      const p = processWeights(w);
      const r = rng(99);
      for (let trial = 0; trial < 5; trial++) {
        const x = Array.from({ length: 8 }, () => 3 * r() + 0.7);
        const logits = rawLogits(w, x);
        // Processed path: normalise (LayerNorm also centres), then processed W_U without gamma/beta.
        const mean = normType === 'layernorm' ? x.reduce((a, b) => a + b, 0) / 8 : 0;
        const c = x.map((v) => v - mean);
        const sigma = Math.sqrt(c.reduce((a, b) => a + b * b, 0) / 8 + w.normEps);
        const processed = Array.from({ length: 50 }, (_, v) =>
          c.reduce((s, cv, row) => s + (cv / sigma) * p.unembed[row * 50 + v]!, 0),
        );
        // beta is not part of W_U processing (TransformerLens folds it into b_U = beta W_U): add it back.
        const betaBias = Array.from({ length: 50 }, (_, v) =>
          Array.from(w.finalNormBias ?? []).reduce(
            (s: number, b: number, row: number) => s + b * w.unembed[row * 50 + v]!,
            0,
          ),
        );
        const shift = logits[0]! - processed[0]! - betaBias[0]!;
        for (let v = 0; v < 50; v++) expect(logits[v]! - processed[v]! - betaBias[v]!).toBeCloseTo(shift, 4);
      }
    },
  );

  it('LayerNorm fixture (gpt2-tiny-random): shapes preserved, w_out centred', () => {
    const w = gpt2TinyWeights();
    const p = processWeights(w);
    expect(p.unembed.length).toBe(w.dModel * w.vocabSize);
    expect(p.wOut.length).toBe(w.dMlp * w.dModel);
    let s = 0;
    for (let r = 0; r < w.dModel; r++) s += p.wOut[r]!;
    expect(Math.abs(s)).toBeLessThan(1e-5);
  });
});
