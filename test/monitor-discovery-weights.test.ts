// The dark subspace on every fixture: where W_U has full rank, rho is the paper's bottom-k rho_k as
// the implementation before issue 14 computed it (re-derived here); where it has an exact null space
// (makemore-names), rho is the share in that null space found independently by Gram-Schmidt. Plus the
// causal screen's interpolated norm path against brute force, and catalogues written before the new
// fields still read.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lastLayerWeightsFromCheckpoint } from '../src/model/checkpoint.ts';
import { SafetensorsCheckpoint } from '../src/model/safetensors.ts';
import type { LastLayerWeights } from '../src/model/types.ts';
import { demoModelDir } from '../src/demo/index.ts';
import {
  buildCatalogue,
  paretoFronts,
  readCatalogue,
  selectRoles,
  writeCatalogue,
} from '../src/monitor/catalogue.ts';
import { causalEffects, withCleanLogits } from '../src/monitor/causal.ts';
import { scaledEntropy, screenNeurons } from '../src/monitor/screen.ts';
import {
  computeWeightMetrics,
  defaultK,
  rankTolerance,
  smallestEigenvectors,
  unembedStats,
} from '../src/monitor/weight-metrics.ts';
import { processWeights } from '../src/monitor/weight-processing.ts';
import { fixture } from './helpers/shared.ts';
import { namesReadableBasis, nullShare } from './helpers/planted-names.ts';

/** rho as computed before issue 14: the k smallest eigenvectors of G + trace(G)/d 11^T (LayerNorm). */
function previousRho(w: LastLayerWeights, k: number): number[] {
  const p = processWeights(w);
  const d = w.dModel;
  const g = unembedStats(p.unembed, d, w.vocabSize).gram;
  let trace = 0;
  for (let i = 0; i < d; i++) trace += g[i * d + i]!;
  const sym = w.normType === 'layernorm' ? g.map((x) => x + trace / d) : g;
  const basis = smallestEigenvectors(sym, d, k);
  return Array.from({ length: w.dMlp }, (_, i) => {
    let sq = 0;
    let proj = 0;
    for (let r = 0; r < d; r++) sq += p.wOut[i * d + r]! ** 2;
    for (let j = 0; j < k; j++) {
      let dot = 0;
      for (let r = 0; r < d; r++) dot += basis[j * d + r]! * p.wOut[i * d + r]!;
      proj += dot * dot;
    }
    return sq > 0 ? Math.sqrt(proj / sq) : 0;
  });
}

describe('dark subspace on every fixture', () => {
  it.each(['makemore-anime', 'gpt2-tiny-random', 'aidreams260K', 'demo tiny'])(
    '%s has full rank, and rho is unchanged',
    async (name) => {
      const dir = name === 'demo tiny' ? await demoModelDir('tiny') : fixture(name);
      const w = lastLayerWeightsFromCheckpoint(dir);
      const k = name === 'aidreams260K' ? 3 : defaultK(w.dModel);
      const m = computeWeightMetrics(w, { k });
      expect(m.nullity).toBe(0);
      expect(m.rank).toBe(w.normType === 'layernorm' ? w.dModel - 1 : w.dModel);
      expect(m.darkDim).toBe(k);
      const before = previousRho(w, k);
      let worst = 0;
      for (const n of m.neurons) worst = Math.max(worst, Math.abs(n.rho - before[n.index]!));
      expect(worst).toBeLessThan(1e-9);
    },
    120_000,
  );

  it('makemore-names: rank 26, nullity 37, and rho is the share in the independently found null space', () => {
    const dir = fixture('makemore-names');
    const w = lastLayerWeightsFromCheckpoint(dir);
    const m = computeWeightMetrics(w);
    expect({ k: m.k, rank: m.rank, nullity: m.nullity, darkDim: m.darkDim }).toEqual({
      k: 1,
      rank: 26,
      nullity: 37,
      darkDim: 37,
    });
    expect(m.rankTolerance).toBe(rankTolerance(64, 27));
    const ckpt = SafetensorsCheckpoint.openDir(dir);
    const basis = namesReadableBasis(ckpt);
    expect(basis).toHaveLength(27);
    const p = processWeights(w);
    for (const n of m.neurons) {
      expect(
        Math.abs(n.rho - nullShare(basis, p.wOut.subarray(n.index * 64, n.index * 64 + 64))),
      ).toBeLessThan(1e-6);
    }
  });

  it('a k larger than the null space keeps the paper meaning: the k smallest directions', () => {
    const w = lastLayerWeightsFromCheckpoint(fixture('makemore-names'));
    const m = computeWeightMetrics(w, { k: 40 });
    expect(m.darkDim).toBe(40);
    expect(
      computeWeightMetrics(w, { k: 63 }).neurons.every((n) => Math.abs(n.rho - 1) < 1e-6 || n.norm === 0),
    ).toBe(true);
  });
});

describe('entropy ranking by rho and dark norm', () => {
  it('hand example: the largest rho first, a large norm with no dark share last', () => {
    const metrics = [
      { index: 0, norm: 10, rho: 0.9 }, // dark norm 9
      { index: 1, norm: 1, rho: 0.95 }, // 0.95
      { index: 2, norm: 20, rho: 0.001 }, // 0.02: beaten by 3 on both
      { index: 3, norm: 5, rho: 0.5 }, // 2.5: beaten by 0 on both
    ];
    expect(paretoFronts(metrics.map((m) => ({ norm: m.rho * m.norm, rho: m.rho })))).toEqual([0, 0, 2, 1]);
    expect(selectRoles(metrics, { top: 4 }).entropy).toEqual([1, 0, 3, 2]);
    // Exact duplicates beat neither; they share a front and order by index.
    expect(
      paretoFronts([
        { norm: 1, rho: 1 },
        { norm: 1, rho: 1 },
      ]),
    ).toEqual([0, 0]);
  });
});

describe('causal screen', () => {
  it('the interpolated norm path equals brute force at every neuron', () => {
    const w = lastLayerWeightsFromCheckpoint(fixture('makemore-anime'));
    const { dModel: d, dMlp, vocabSize: V } = w;
    let s = 11;
    const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
    const n = 3;
    const residuals = Float64Array.from({ length: n * d }, () => 4 * rand());
    const mlpAct = Float32Array.from({ length: n * dMlp }, () => rand());
    const clampTo = Float64Array.from({ length: dMlp }, (_, i) => (i % 7 === 0 ? 40 : 2) * (0.5 + rand()));
    const screen = screenNeurons(
      { weights: w, residuals, mlpAct, nextIds: [1, 2, 3] },
      { quantile: 0.99, clampTo, verify: 3, top: 2 },
    );
    // Brute force: L(t) = t (L - b) + b per neuron and position, straight from the definitions.
    const bias = new Float64Array(V);
    for (let v = 0; v < V; v++)
      for (let k = 0; k < d; k++) bias[v] += w.finalNormBias![k]! * w.unembed[k * V + v]!;
    let worst = 0;
    for (let i = 0; i < dMlp; i += 5) {
      let sum = 0;
      for (let p = 0; p < n; p++) {
        const x = Array.from(residuals.subarray(p * d, (p + 1) * d));
        const edited = x.map((xk, k) => xk + (clampTo[i]! - mlpAct[p * dMlp + i]!) * w.wOut[i * d + k]!);
        const sig = (y: number[]) => {
          const mean = y.reduce((a, b) => a + b, 0) / d;
          return Math.sqrt(y.reduce((a, b) => a + (b - mean) ** 2, 0) / d + w.normEps);
        };
        const mean = x.reduce((a, b) => a + b, 0) / d;
        const a = new Float64Array(V);
        for (let k = 0; k < d; k++)
          for (let v = 0; v < V; v++)
            a[v] += ((x[k]! - mean) / sig(x)) * w.finalNormWeight[k]! * w.unembed[k * V + v]!;
        sum += scaledEntropy(a, bias, Math.log(sig(x) / sig(edited))).h - scaledEntropy(a, bias, 0).h;
      }
      worst = Math.max(worst, Math.abs(sum / n - screen.normPathDeltaEntropy[i]!));
    }
    // Hermite interpolation with exact slopes, step <= 0.05 in ln t: measured ~1e-7 nats.
    expect(worst).toBeLessThan(1e-6);
    expect(screen.verified.length).toBeGreaterThanOrEqual(3);
  });

  it('cached clean logits change nothing: causal effects and the screen are identical with and without', () => {
    const w = lastLayerWeightsFromCheckpoint(fixture('makemore-anime'));
    let s = 5;
    const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
    const data = {
      weights: w,
      residuals: Float64Array.from({ length: 4 * w.dModel }, () => 3 * rand()),
      mlpAct: Float32Array.from({ length: 4 * w.dMlp }, rand),
      nextIds: [4, -1, 9, 2],
    };
    const cached = withCleanLogits(data);
    const neurons = [0, 17, 200].map((index) => ({ index, ablateTo: 1.5 }));
    // The cache comes from the SIMD product, the fallback from plain loops: equal to rounding.
    const [x, y] = [causalEffects(cached, neurons), causalEffects(data, neurons)];
    for (const [i, e] of x.entries()) {
      expect(e.total.meanDeltaEntropy).toBeCloseTo(y[i]!.total.meanDeltaEntropy, 10);
      expect(e.direct.meanAbsDeltaLoss).toBeCloseTo(y[i]!.direct.meanAbsDeltaLoss, 10);
      expect(e.normMediatedFraction!).toBeCloseTo(y[i]!.normMediatedFraction!, 8);
    }
    const opts = { quantile: 0.99, clampTo: new Float64Array(w.dMlp).fill(2), verify: 4, top: 2 };
    const a = screenNeurons(data, opts);
    const b = screenNeurons(cached, opts);
    for (const [i, v] of b.verified.entries())
      expect(v.totalDeltaEntropy).toBeCloseTo(a.verified[i]!.totalDeltaEntropy, 10);
    for (let i = 0; i < w.dMlp; i++)
      expect(b.normPathDeltaEntropy[i]).toBeCloseTo(a.normPathDeltaEntropy[i]!, 12);
  });

  it('scaledEntropy: the slope is the derivative of the entropy', () => {
    const a = Float64Array.from([1, -2, 0.5, 3, 0]);
    const b = Float64Array.from([0.1, 0, -0.3, 0.2, 1]);
    const h = 1e-5;
    const slope = (scaledEntropy(a, b, 0.3 + h).h - scaledEntropy(a, b, 0.3 - h).h) / (2 * h);
    expect(scaledEntropy(a, b, 0.3).dh).toBeCloseTo(slope, 8);
  });
});

describe('catalogue compatibility', () => {
  it('a catalogue written before rank, nullity and the ranking rule existed still reads; a bad new field does not', () => {
    const w = lastLayerWeightsFromCheckpoint(fixture('makemore-names'));
    const c = buildCatalogue({
      model: { id: 'm', configHash: 'c', weightsHash: 'w' },
      layer: 3,
      metrics: computeWeightMetrics(w),
      top: 3,
    });
    const dir = mkdtempSync(join(tmpdir(), 'discovery-compat-'));
    const file = join(dir, 'c.json');
    writeCatalogue(file, c);
    expect(readCatalogue(file).nullity).toBe(37);
    const old = JSON.parse(readFileSync(file, 'utf8'));
    for (const key of ['rank', 'nullity', 'darkDim', 'rankTolerance', 'entropyRanking']) delete old[key];
    writeFileSync(file, JSON.stringify(old));
    expect(readCatalogue(file).entropy).toEqual(c.entropy);
    writeFileSync(file, JSON.stringify({ ...old, nullity: -1 }));
    expect(() => readCatalogue(file)).toThrow(/nullity/);
  });
});
