import { describe, expect, it } from 'vitest';
import { rowSignals, topCandidates } from '../src/monitor/signals.ts';

/** Straightforward float64 reference: explicit probabilities. */
function reference(row: number[], logQ?: number[]) {
  const m = Math.max(...row);
  const z = m + Math.log(row.reduce((s, l) => s + Math.exp(l - m), 0));
  const p = row.map((l) => Math.exp(l - z));
  const entropy = -p.reduce((s, pv) => s + (pv > 0 ? pv * Math.log(pv) : 0), 0);
  const kl = logQ ? p.reduce((s, pv, v) => s + (pv > 0 ? pv * (Math.log(pv) - logQ[v]!) : 0), 0) : null;
  return { z, p, entropy, kl };
}

describe('rowSignals', () => {
  it('uniform row: entropy log V, top-1 1/V, KL to uniform 0', () => {
    const V = 50257;
    const s = rowSignals(new Float32Array(V).fill(2.5), {
      token: 7,
      logPFreq: new Float64Array(V).fill(-Math.log(V)),
    });
    expect(s.entropy).toBeCloseTo(Math.log(V), 10);
    expect(s.top1Prob).toBeCloseTo(1 / V, 15);
    expect(s.tokenLogprob).toBeCloseTo(-Math.log(V), 10);
    expect(s.unigramKl).toBeCloseTo(0, 10);
  });

  it('matches an explicit computation on random rows, including huge logits', () => {
    let x = 1;
    const rand = () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    for (const scale of [0.1, 5, 300]) {
      const row = Float32Array.from({ length: 1000 }, () => (rand() - 0.5) * scale + 1000);
      const counts = Array.from({ length: 1000 }, () => Math.floor(rand() * 50));
      const total = counts.reduce((s, c) => s + c + 1, 0);
      const logQ = counts.map((c) => Math.log((c + 1) / total));
      const ref = reference(Array.from(row), logQ);
      const s = rowSignals(row, { token: 3, topN: 5, logPFreq: logQ });
      expect(s.entropy).toBeCloseTo(ref.entropy, 9);
      expect(s.logZ).toBeCloseTo(ref.z, 9);
      expect(s.tokenLogprob).toBeCloseTo(Math.log(ref.p[3]!), 9);
      expect(s.top1Prob).toBeCloseTo(Math.max(...ref.p), 12);
      expect(s.argmax).toBe(ref.p.indexOf(Math.max(...ref.p)));
      expect(s.unigramKl).toBeCloseTo(ref.kl!, 9);
      const order = ref.p
        .map((pv, v) => [v, pv] as const)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 5);
      expect(s.top.map(([id]) => id)).toEqual(order.map(([id]) => id));
      s.top.forEach(([, lp], i) => expect(lp).toBeCloseTo(Math.log(order[i]![1]), 9));
    }
  });

  it('masked (-Infinity) logits are simply impossible tokens', () => {
    const s = rowSignals(Float32Array.from([0, -Infinity, 0, -Infinity]), { token: 1, topN: 2 });
    expect(s.entropy).toBeCloseTo(Math.log(2), 14);
    expect(s.tokenLogprob).toBe(-Infinity);
    expect(s.top).toEqual(
      [
        [0, -Math.log(2)],
        [2, -Math.log(2)],
      ].map(([id, lp]) => [id, expect.closeTo(lp!, 14)]),
    );
  });

  it('no token, no top-n, no unigram counts', () => {
    const s = rowSignals(Float32Array.from([1, 2, 3]));
    expect(Number.isNaN(s.tokenLogprob)).toBe(true);
    expect(s.top).toEqual([]);
    expect(s.unigramKl).toBeNull();
    expect(() => rowSignals(Float32Array.from([1, 2]), { logPFreq: [0] })).toThrow(/2/);
  });

  it('topCandidates: best first, ties to the lower id, k larger than the row', () => {
    expect(topCandidates([1, 5, 3, 5, 0], 3)).toEqual([
      [1, 5],
      [3, 5],
      [2, 3],
    ]);
    expect(topCandidates([2, 1], 5)).toEqual([
      [0, 2],
      [1, 1],
    ]);
  });
});
