// The `confidence` extension of the OpenAI responses: the per-token signals of REFERENCE.md in
// snake_case (the names `generate --json` and the monitor stream use too). Streamed chunks carry
// one token's object; a complete response carries the same fields as per-token arrays (columns,
// so a client can plot them directly) plus a summary.

import type { TokenSignals } from '../../runtime/types.ts';

export interface TokenConfidence {
  entropy: number;
  norm_scale: number;
  top1_prob: number;
  entropy_neurons: Record<string, number>;
  frequency_neurons: Record<string, number>;
  unigram_kl?: number;
  repeat: number;
  interventions: string[];
}

export interface ConfidenceSummary {
  tokens: number;
  mean_entropy: number | null;
  max_entropy: number | null;
  mean_top1_prob: number | null;
  mean_norm_scale: number | null;
}

export interface ChoiceConfidence {
  entropy: number[];
  norm_scale: number[];
  top1_prob: number[];
  entropy_neurons: Record<string, number[]>;
  frequency_neurons: Record<string, number[]>;
  unigram_kl?: number[];
  repeat: number[];
  interventions: string[][];
  summary: ConfidenceSummary;
}

export function tokenConfidence(t: TokenSignals): TokenConfidence {
  return {
    entropy: t.entropy,
    norm_scale: t.normScale,
    top1_prob: t.top1Prob,
    entropy_neurons: t.entropyNeurons,
    frequency_neurons: t.frequencyNeurons,
    ...(t.unigramKl !== undefined ? { unigram_kl: t.unigramKl } : {}),
    repeat: t.repeat,
    interventions: t.interventions,
  };
}

function columns(
  tokens: TokenSignals[],
  pick: (t: TokenSignals) => Record<string, number>,
): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  tokens.forEach((t, i) => {
    for (const [neuron, value] of Object.entries(pick(t))) {
      // A neuron missing at some step (should not happen) stays NaN there -> null in JSON,
      // so every column keeps one entry per token.
      (out[neuron] ??= new Array<number>(tokens.length).fill(NaN))[i] = value;
    }
  });
  return out;
}

const mean = (xs: number[]) => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);

export function choiceConfidence(tokens: TokenSignals[]): ChoiceConfidence {
  const entropy = tokens.map((t) => t.entropy);
  const top1 = tokens.map((t) => t.top1Prob);
  const norm = tokens.map((t) => t.normScale);
  const hasKl = tokens.length > 0 && tokens.every((t) => t.unigramKl !== undefined);
  return {
    entropy,
    norm_scale: norm,
    top1_prob: top1,
    entropy_neurons: columns(tokens, (t) => t.entropyNeurons),
    frequency_neurons: columns(tokens, (t) => t.frequencyNeurons),
    ...(hasKl ? { unigram_kl: tokens.map((t) => t.unigramKl!) } : {}),
    repeat: tokens.map((t) => t.repeat),
    interventions: tokens.map((t) => t.interventions),
    summary: {
      tokens: tokens.length,
      mean_entropy: mean(entropy),
      max_entropy: entropy.length === 0 ? null : Math.max(...entropy),
      mean_top1_prob: mean(top1),
      mean_norm_scale: mean(norm),
    },
  };
}
