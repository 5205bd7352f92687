// Synthetic but realistic generation traffic for telemetry tests: deterministic GeneratedToken and
// GenerationSummary objects whose signals have the ranges real models produce (entropy 0..8 nats,
// top-1 probability consistent with it, norm scales spread over a decade, signed neuron activations).

import type { GeneratedToken, GenerationSummary } from '../../src/runtime/types.ts';

/** mulberry32: a tiny seeded PRNG, so every run feeds the same numbers. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TrafficOptions {
  entropyNeurons: string[];
  frequencyNeurons: string[];
  interventions?: string[];
  withUnigramKl?: boolean;
  textBytes?: number;
}

export function syntheticToken(index: number, rand: () => number, o: TrafficOptions): GeneratedToken {
  const entropy = 8 * rand() ** 2;
  const top1Prob = Math.min(0.999, Math.exp(-entropy / 2));
  const act = (scale: number) => (rand() - 0.3) * scale;
  return {
    source: 'local',
    index,
    tokenId: Math.floor(rand() * 50257),
    text: o.textBytes ? 'x'.repeat(o.textBytes) : ` tok${index}`,
    logprob: Math.log(top1Prob),
    entropy,
    top1Prob,
    normScale: 10 * 10 ** rand(),
    entropyNeurons: Object.fromEntries(o.entropyNeurons.map((n) => [n, act(20)])),
    frequencyNeurons: Object.fromEntries(o.frequencyNeurons.map((n) => [n, act(3)])),
    ...(o.withUnigramKl === false ? {} : { unigramKl: 6 * rand() }),
    repeat: Math.floor(rand() * 3),
    interventions: o.interventions ?? [],
  };
}

export function syntheticSummary(
  promptTokens: number,
  completionTokens: number,
  finishReason: GenerationSummary['finishReason'] = 'length',
): GenerationSummary {
  return {
    promptTokens,
    completionTokens,
    finishReason,
    text: '',
    trailingText: '',
    durationS: 0,
    tokensPerS: 0,
    timeToFirstTokenS: null,
  };
}
