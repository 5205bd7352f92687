import { describe, expect, it } from 'vitest';
import { RepeatTracker, repeatLength } from '../src/monitor/repeat.ts';

/** Definition, literally: the longest L such that ids[end-L+1..end] also starts at some s < end-L+1. */
function bruteForce(ids: number[], end: number): number {
  for (let L = end; L >= 1; L--) {
    const start = end - L + 1;
    for (let s = 0; s < start; s++) {
      let same = true;
      for (let j = 0; j < L && same; j++) same = ids[s + j] === ids[start + j];
      if (same) return L;
    }
  }
  return 0;
}

function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

describe('repeat length', () => {
  it('hand example: "the cat sat the cat" and an induction prompt', () => {
    // the=1 cat=2 sat=3
    expect(new RepeatTracker().pushAll([1, 2, 3, 1, 2])).toEqual([0, 0, 0, 1, 2]);
    // [BOS] t1..t4 t1..t4: the second copy grows 1, 2, 3, 4.
    expect(new RepeatTracker().pushAll([0, 5, 6, 7, 8, 5, 6, 7, 8])).toEqual([0, 0, 0, 0, 0, 1, 2, 3, 4]);
    // Overlapping occurrences count: "a a a a" -> 0 1 2 3.
    expect(new RepeatTracker().pushAll([4, 4, 4, 4])).toEqual([0, 1, 2, 3]);
  });

  it('matches brute force on random sequences over small and large alphabets', () => {
    const rand = lcg(12345);
    for (let trial = 0; trial < 200; trial++) {
      const alphabet = [2, 3, 5, 50257][trial % 4]!;
      const n = 1 + Math.floor(rand() * 60);
      const ids = Array.from({ length: n }, () => Math.floor(rand() * alphabet));
      // Splice in a repeated chunk so long repeats are exercised on big alphabets too.
      if (n > 10) ids.splice(n - 5, 5, ...ids.slice(1, 6));
      const tracker = new RepeatTracker();
      ids.forEach((id, end) => {
        const expected = bruteForce(ids, end);
        expect(tracker.push(id)).toBe(expected);
        expect(tracker.repeat).toBe(expected);
      });
      const end = Math.floor(rand() * n);
      expect(repeatLength(ids, end)).toBe(bruteForce(ids, end));
    }
  });

  it('reset starts a fresh context', () => {
    const t = new RepeatTracker();
    t.pushAll([1, 2, 1, 2]);
    t.reset();
    expect(t.size).toBe(0);
    expect(t.pushAll([1, 2])).toEqual([0, 0]);
  });

  it('rejects an end outside the sequence', () => {
    expect(() => repeatLength([1, 2], 2)).toThrow(RangeError);
  });
});
