// The logits adjustments against rows computed by hand from their definitions (OpenAI's penalty
// formula, vLLM's repetition_penalty and min_p), and SequenceLogits' bookkeeping of what it saw.
import { describe, expect, it } from 'vitest';
import {
  applyFrequencyPresence,
  applyLogitBias,
  applyMinP,
  applyRepetitionPenalty,
  maskTokens,
  requestedAdjustments,
  SequenceLogits,
} from '../src/runtime/logits-processors.ts';
import { sampleToken, Rng } from '../src/runtime/sampling.ts';
import { StopMatcher } from '../src/runtime/stop-matcher.ts';

const row = () => Float32Array.from([2, -1, 0.5, 3, -2]);
const close = (a: Float32Array, b: number[]) => {
  expect(a.length).toBe(b.length);
  b.forEach((v, i) => (Number.isFinite(v) ? expect(a[i]).toBeCloseTo(v, 6) : expect(a[i]).toBe(v)));
};

describe('pure adjustments on a known row [2, -1, 0.5, 3, -2]', () => {
  it('frequency and presence: mu - c*alpha_f - (c>0)*alpha_p', () => {
    const r = row();
    // token 0 seen twice, token 3 once; alpha_f = 0.5, alpha_p = 0.25
    applyFrequencyPresence(
      r,
      new Map([
        [0, 2],
        [3, 1],
      ]),
      0.5,
      0.25,
    );
    close(r, [2 - 1 - 0.25, -1, 0.5, 3 - 0.5 - 0.25, -2]);
  });
  it('negative penalties raise the seen tokens', () => {
    const r = row();
    applyFrequencyPresence(r, new Map([[1, 3]]), -1, -2);
    close(r, [2, -1 + 3 + 2, 0.5, 3, -2]);
  });
  it('repetition_penalty divides positive logits and multiplies negative ones', () => {
    const r = row();
    applyRepetitionPenalty(r, [0, 1, 4], 2);
    close(r, [1, -2, 0.5, 3, -4]);
  });
  it('logit_bias adds, and -100 all but bans', () => {
    const r = row();
    applyLogitBias(r, [
      [3, -100],
      [4, 5],
    ]);
    close(r, [2, -1, 0.5, -97, 3]);
  });
  it('maskTokens makes ids unselectable', () => {
    const r = row();
    maskTokens(r, [3]);
    close(r, [2, -1, 0.5, -Infinity, -2]);
    expect(sampleToken(r, { temperature: 0, topK: 0, topP: 1 }, new Rng(1))).toBe(0);
  });
  it('min_p keeps tokens with p >= min_p * p_max under the temperature', () => {
    // T = 1: p_j/p_max = exp(l_j - 3): [e^-1=.368, e^-4=.018, e^-2.5=.082, 1, e^-5=.0067]
    const r1 = row();
    expect(applyMinP(r1, 0.1, 1)).toBe(3);
    close(r1, [2, -Infinity, -Infinity, 3, -Infinity]);
    // T = 2 flattens: ratios exp((l_j - 3)/2) = [.607, .135, .287, 1, .082]
    const r2 = row();
    expect(applyMinP(r2, 0.1, 2)).toBe(1);
    close(r2, [2, -1, 0.5, 3, -Infinity]);
    // Greedy: min_p cannot change the argmax, nothing is touched.
    const r3 = row();
    expect(applyMinP(r3, 0.5, 0)).toBe(0);
    close(r3, [2, -1, 0.5, 3, -2]);
  });
  it('sampling after min_p never draws a masked token', () => {
    const r = row();
    applyMinP(r, 0.3, 1);
    const rng = new Rng(7);
    const drawn = new Set<number>();
    for (let i = 0; i < 2000; i++) drawn.add(sampleToken(r, { temperature: 1, topK: 0, topP: 1 }, rng));
    expect([...drawn].sort()).toEqual([0, 3]);
  });
});

describe('SequenceLogits', () => {
  it('returns the raw row itself when nothing is asked', () => {
    const s = new SequenceLogits({ repetitionPenalty: 1, frequencyPenalty: 0 }, 1, [4]);
    const r = row();
    s.observe([0, 1]);
    expect(s.process(r)).toBe(r);
    expect(s.active).toEqual([]);
  });

  it('counts only completion tokens for frequency/presence, prompt and completion for repetition', () => {
    const s = new SequenceLogits({ frequencyPenalty: 1, presencePenalty: 0.5, repetitionPenalty: 2 }, 1, []);
    s.observe([1]); // the prompt
    const raw = row();
    const first = s.process(raw);
    // Only repetition applies to the prompt token 1: -1 * 2.
    close(first, [2, -2, 0.5, 3, -2]);
    expect(s.active).toEqual(['repetition_penalty']);
    close(raw, [2, -1, 0.5, 3, -2]); // the raw row is untouched
    s.observe([3]);
    s.observe([3]);
    // Token 3 twice in the completion: 3 / 2 (repetition) - 2*1 - 0.5.
    close(s.process(row()), [2, -2, 0.5, 3 / 2 - 2 - 0.5, -2]);
    expect(s.active).toEqual(['repetition_penalty', 'frequency_penalty', 'presence_penalty']);
  });

  it('min_tokens masks EOS and stop_token_ids until enough completion tokens, then stops', () => {
    const s = new SequenceLogits({ minTokens: 2, stopTokenIds: [0] }, 1, [3]);
    s.observe([2, 2]);
    close(s.process(row()), [-Infinity, -1, 0.5, -Infinity, -2]);
    expect(s.active).toEqual(['min_tokens']);
    s.observe([1]);
    close(s.process(row()), [-Infinity, -1, 0.5, -Infinity, -2]);
    s.observe([1]);
    const r = row();
    expect(s.process(r)).toBe(r);
    expect(s.active).toEqual([]);
  });

  it('ignore_eos leaves EOS to the sampler under min_tokens', () => {
    const s = new SequenceLogits({ minTokens: 5, ignoreEos: true }, 1, [3]);
    s.observe([2]);
    const r = row();
    expect(s.process(r)).toBe(r);
  });

  it('lists what would ever apply', () => {
    expect(
      requestedAdjustments({ logitBias: [[1, 2]], minP: 0.1, repetitionPenalty: 1, presencePenalty: 0 }),
    ).toEqual(['logit_bias', 'min_p']);
    expect(requestedAdjustments(undefined)).toEqual([]);
  });
});

describe('StopMatcher before min_tokens (not armed)', () => {
  it('passes whole stop strings, holds a possible start, and matches it once armed', () => {
    const m = new StopMatcher(['ab']);
    expect(m.push('xab', false)).toEqual({ emit: 'xab', stopped: false });
    expect(m.push('ca', false)).toEqual({ emit: 'c', stopped: false }); // "a" could start "ab"
    expect(m.push('b', true)).toEqual({ emit: '', stopped: true }); // completes in an armed token
  });
});
