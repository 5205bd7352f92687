// The `confidence` extension of the OpenAI responses: the per-token signals of REFERENCE.md in
// snake_case (the names `generate --json` and the monitor stream use too). Streamed chunks carry
// one token's object; a complete response carries the same fields as per-token arrays (columns,
// so a client can plot them directly) plus a summary.

import {
  interventionsJson,
  signalsJson,
  type TokenInterventionsJson,
  summarize,
  type Adjustment,
  type ConfidenceSummary,
  type TokenSignals,
  type TokenSignalsJson,
} from '../../monitor/token-record.ts';

/** A record's signals plus the sampling adjustments that shaped the row it was drawn from. */
type SignalsAndAdjustments = TokenSignals & { adjustments?: Adjustment[] };

/**
 * One token's `confidence` object in a streamed chunk: the record's signals, in wire form, and
 * `adjustments` when the request's sampling parameters changed the row (absent otherwise).
 */
export type TokenConfidence = TokenSignalsJson & { adjustments?: Adjustment[] };
export type { ConfidenceSummary } from '../../monitor/token-record.ts';

export interface ChoiceConfidence {
  entropy: number[];
  norm_scale: number[];
  top1_prob: number[];
  entropy_neurons: Record<string, number[]>;
  frequency_neurons: Record<string, number[]>;
  unigram_kl?: number[];
  repeat: number[];
  interventions: TokenInterventionsJson[];
  /** Per token, present when any token had adjustments ([] for those that had none). */
  adjustments?: Adjustment[][];
  summary: ConfidenceSummary;
}

export const tokenConfidence = (t: SignalsAndAdjustments): TokenConfidence => ({
  ...signalsJson(t),
  ...(t.adjustments && t.adjustments.length > 0 ? { adjustments: t.adjustments } : {}),
});

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

/** A complete response's `confidence`: the records as columns (plot-ready) plus the request summary. */
export function choiceConfidence(tokens: SignalsAndAdjustments[]): ChoiceConfidence {
  const hasKl = tokens.length > 0 && tokens.every((t) => t.unigramKl !== undefined);
  return {
    entropy: tokens.map((t) => t.entropy),
    norm_scale: tokens.map((t) => t.normScale),
    top1_prob: tokens.map((t) => t.top1Prob),
    entropy_neurons: columns(tokens, (t) => t.entropyNeurons),
    frequency_neurons: columns(tokens, (t) => t.frequencyNeurons),
    ...(hasKl ? { unigram_kl: tokens.map((t) => t.unigramKl!) } : {}),
    repeat: tokens.map((t) => t.repeat),
    interventions: tokens.map((t) => interventionsJson(t.interventions)),
    ...(tokens.some((t) => t.adjustments?.length) ? { adjustments: tokens.map((t) => t.adjustments ?? []) } : {}),
    summary: summarize(tokens),
  };
}
