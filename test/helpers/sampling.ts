// Greedy decoding parameters for tests and benches that compare tokens: temperature 0, no
// nucleus/top-k cut, no stop strings, and EOS ignored so every run produces exactly maxTokens.

import type { SamplingParams } from '../../src/runtime/types.ts';

export function greedyParams(maxTokens: number): SamplingParams {
  return { maxTokens, temperature: 0, topP: 1, topK: 0, stop: [], topLogprobs: 0, stopAtEos: false };
}
