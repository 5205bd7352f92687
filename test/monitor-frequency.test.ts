import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidInputError, ModelLoadError } from '../src/errors.ts';
import {
  countUnigrams,
  frequencyDirection,
  frequencyScores,
  readUnigramFile,
  writeUnigramFile,
} from '../src/monitor/frequency.ts';
import { unembedStats } from '../src/monitor/weight-metrics.ts';
import { processWeights } from '../src/monitor/weight-processing.ts';
import { aidreamsWeights } from './helpers/monitor-fixtures.ts';

describe('frequency direction', () => {
  it('add-one smoothing, centring and unit norm, by hand', () => {
    const { logP, f, fHat } = frequencyDirection([0, 1, 2]);
    // p = (1, 2, 3) / 6
    expect(Array.from(logP)).toEqual(
      [Math.log(1 / 6), Math.log(2 / 6), Math.log(3 / 6)].map((x) => expect.closeTo(x, 14)),
    );
    const mean = (Math.log(1) + Math.log(2) + Math.log(3)) / 3;
    expect(f[0]).toBeCloseTo(Math.log(1) - mean, 14);
    expect(f[2]).toBeCloseTo(Math.log(3) - mean, 14);
    expect(Math.hypot(...fHat)).toBeCloseTo(1, 14);
    expect(fHat[1]! / fHat[2]!).toBeCloseTo(f[1]! / f[2]!, 14);
    expect(Array.from(frequencyDirection([5, 5]).fHat)).toEqual([0, 0]);
    expect(() => frequencyDirection([1, -1])).toThrow(InvalidInputError);
  });

  it('scores equal cos(W_U^T w_out, f) computed the long way (aidreams260K)', () => {
    const w = aidreamsWeights();
    const p = processWeights(w);
    const V = w.vocabSize;
    const d = w.dModel;
    const counts = Array.from({ length: V }, (_, v) => ((v * 7919) % 101) ** 2);
    const { f } = frequencyDirection(counts);
    const scores = frequencyScores(p, f);
    expect(scores).toHaveLength(w.dMlp);
    for (let i = 0; i < w.dMlp; i += 9) {
      const logits = Array.from({ length: V }, (_, v) => {
        let s = 0;
        for (let k = 0; k < d; k++) s += p.wOut[i * d + k]! * p.unembed[k * V + v]!;
        return s;
      });
      const dot = logits.reduce((s, l, v) => s + l * f[v]!, 0);
      expect(scores[i]).toBeCloseTo(dot / (Math.hypot(...logits) * Math.hypot(...f)), 6);
    }
    // Reusing precomputed stats gives the same numbers.
    expect(frequencyScores(p, f, unembedStats(p.unembed, d, V))).toEqual(scores);
  });

  it('counts unigrams and rejects ids outside the vocabulary', () => {
    expect(Array.from(countUnigrams([0, 2, 2, 3], 4))).toEqual([1, 0, 2, 1]);
    const into = new Float64Array(4);
    countUnigrams([1], 4, into);
    countUnigrams(new Set([1, 3]), 4, into);
    expect(Array.from(into)).toEqual([0, 2, 0, 1]);
    expect(() => countUnigrams([4], 4)).toThrow(InvalidInputError);
  });
});

describe('unigram file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'monitor-unigram-'));

  it('round-trips', () => {
    const path = join(dir, 'ok.json');
    writeUnigramFile(path, { counts: [3, 0, 1], tokenizer: 'gpt2', synthetic: true, description: 'demo' });
    const u = readUnigramFile(path, 3);
    expect(Array.from(u.counts)).toEqual([3, 0, 1]);
    expect(u).toMatchObject({ tokenizer: 'gpt2', synthetic: true, description: 'demo', tokens: 4 });
  });

  it.each([
    ['missing.json', null, /not found/],
    ['bad.json', '{"counts": [1, 2', /not valid JSON/],
    ['nocounts.json', '{"count": [1, 2, 3]}', /"counts" array/],
    ['short.json', '{"counts": [1, 2]}', /2 counts but the model's vocabulary has 3/],
    ['negative.json', '{"counts": [1, -2, 3]}', /counts\[1\]/],
    ['synthetic.json', '{"counts": [1, 2, 3], "synthetic": "yes"}', /"synthetic"/],
  ])('%s: a ModelLoadError naming the file', (name, content, message) => {
    const path = join(dir, name);
    if (content !== null) writeFileSync(path, content);
    const err = (() => {
      try {
        readUnigramFile(path, 3);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).file).toBe(path);
    expect((err as Error).message).toMatch(message);
  });
});
