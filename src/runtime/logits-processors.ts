// Logits adjustments requested by OpenAI / vLLM clients: frequency and presence penalties
// (OpenAI's definitions), repetition_penalty and min_p (vLLM's), logit_bias, and the masking of
// end tokens before min_tokens. Pure functions on one logits row, plus SequenceLogits, which keeps
// one sequence's token counts and applies them in vLLM's order.
//
// Why a processed COPY: the confidence signals describe the model's own distribution, so the
// worker computes them from the raw row and samples from the processed one (REFERENCE.md's
// signals are properties of the model, not of the client's sampling choices).

import type { Adjustment } from '../monitor/token-record.ts';

export type { Adjustment } from '../monitor/token-record.ts';

/** The adjustments one sequence asked for; every field absent or neutral = the row is untouched. */
export interface LogitsParams {
  /** OpenAI: subtract frequency_penalty * count(j) from logit j (counts over the completion). */
  frequencyPenalty?: number;
  /** OpenAI: subtract presence_penalty from logit j when token j occurred in the completion. */
  presencePenalty?: number;
  /** vLLM: for tokens in prompt or completion, logit / p if positive, logit * p otherwise; 1 = off. */
  repetitionPenalty?: number;
  /** vLLM: drop tokens whose probability (after temperature) is below min_p * the top one's; 0 = off. */
  minP?: number;
  /** OpenAI: [token id, bias in -100..100] added to the logit. */
  logitBias?: [number, number][];
  /** Extra token ids that end the sequence (vLLM stop_token_ids). */
  stopTokenIds?: number[];
  /** vLLM: EOS and stop_token_ids cannot be drawn before this many completion tokens. */
  minTokens?: number;
  /** vLLM ignore_eos: EOS does not end the sequence (so min_tokens need not mask it). */
  ignoreEos?: boolean;
}

/** Token id -> occurrences. */
export type TokenCounts = Map<number, number>;

/** OpenAI: mu[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty, in place. */
export function applyFrequencyPresence(
  row: Float32Array,
  counts: TokenCounts,
  frequency: number,
  presence: number,
): void {
  for (const [id, c] of counts) {
    if (c > 0 && id < row.length) row[id] = row[id]! - c * frequency - presence;
  }
}

/**
 * vLLM / CTRL (Keskar et al. 2019): every token seen in the prompt or the completion has its logit
 * divided by `penalty` when positive and multiplied by it otherwise, so penalty > 1 always lowers it.
 */
export function applyRepetitionPenalty(row: Float32Array, seen: Iterable<number>, penalty: number): void {
  for (const id of seen) {
    if (id >= row.length) continue;
    const v = row[id]!;
    row[id] = v > 0 ? v / penalty : v * penalty;
  }
}

export function applyLogitBias(row: Float32Array, bias: [number, number][]): void {
  for (const [id, b] of bias) if (id < row.length) row[id] = row[id]! + b;
}

/** Sets the listed ids to -Infinity (they cannot be sampled nor chosen greedily). */
export function maskTokens(row: Float32Array, ids: Iterable<number>): void {
  for (const id of ids) if (id < row.length) row[id] = -Infinity;
}

/**
 * vLLM's min_p, applied after temperature: p_j / p_max = exp((l_j - l_max) / T), so token j
 * survives when l_j >= l_max + T * ln(min_p). With T = 0 (greedy) only the maximum matters and
 * nothing is masked. Returns the number of tokens masked.
 */
export function applyMinP(row: Float32Array, minP: number, temperature: number): number {
  if (!(minP > 0) || temperature <= 0) return 0;
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  const threshold = max + temperature * Math.log(minP);
  let masked = 0;
  for (let i = 0; i < row.length; i++) {
    if (row[i]! < threshold) {
      row[i] = -Infinity;
      masked++;
    }
  }
  return masked;
}

/** The adjustments these params would ever apply (the per-step list may be shorter: min_tokens ends). */
export function requestedAdjustments(p: LogitsParams | undefined): Adjustment[] {
  if (!p) return [];
  const out: Adjustment[] = [];
  if (p.frequencyPenalty) out.push('frequency_penalty');
  if (p.presencePenalty) out.push('presence_penalty');
  if (p.repetitionPenalty !== undefined && p.repetitionPenalty !== 1) out.push('repetition_penalty');
  if (p.logitBias && p.logitBias.length > 0) out.push('logit_bias');
  if (p.minP) out.push('min_p');
  if (p.minTokens) out.push('min_tokens');
  return out;
}

/**
 * One sequence's adjustment state. The worker feeds it every token the sequence sees (`observe`:
 * the prompt, then each sampled token) and asks for the row to sample from (`process`).
 */
export class SequenceLogits {
  private readonly completionCounts: TokenCounts = new Map();
  private readonly seen = new Set<number>();
  private completionTokens = 0;
  private promptDone = false;
  private readonly wanted: Adjustment[];
  private readonly endIds: number[];
  /** The adjustments that changed the last processed row. */
  active: Adjustment[] = [];

  constructor(
    private readonly p: LogitsParams,
    private readonly temperature: number,
    eosTokenIds: number[],
  ) {
    this.wanted = requestedAdjustments(p);
    this.endIds = [...(p.ignoreEos ? [] : eosTokenIds), ...(p.stopTokenIds ?? [])];
  }

  /** Whether any adjustment was asked for (else `process` always returns the raw row). */
  get adjusts(): boolean {
    return this.wanted.length > 0;
  }

  /** Tokens appended to the sequence: the first call is the prompt, later ones sampled tokens. */
  observe(tokens: number[]): void {
    for (const id of tokens) {
      this.seen.add(id);
      if (!this.promptDone) continue;
      this.completionCounts.set(id, (this.completionCounts.get(id) ?? 0) + 1);
      this.completionTokens++;
    }
    this.promptDone = true;
  }

  /**
   * The row to sample from: `raw` itself when nothing applies (no copy on the common path), else
   * a copy with, in vLLM's order, min_tokens masking, repetition, frequency/presence, logit_bias,
   * then min_p (which depends on the temperature that the sampler applies next).
   */
  process(raw: Float32Array): Float32Array {
    const active: Adjustment[] = [];
    const minTokensNow = (this.p.minTokens ?? 0) > this.completionTokens && this.endIds.length > 0;
    const wanted = this.wanted.filter((a) => a !== 'min_tokens' || minTokensNow);
    if (wanted.length === 0) {
      this.active = active;
      return raw;
    }
    const row = Float32Array.from(raw);
    if (minTokensNow) {
      maskTokens(row, this.endIds);
      active.push('min_tokens');
    }
    if (wanted.includes('repetition_penalty') && this.seen.size > 0) {
      applyRepetitionPenalty(row, this.seen, this.p.repetitionPenalty!);
      active.push('repetition_penalty');
    }
    if ((this.p.frequencyPenalty || this.p.presencePenalty) && this.completionCounts.size > 0) {
      applyFrequencyPresence(
        row,
        this.completionCounts,
        this.p.frequencyPenalty ?? 0,
        this.p.presencePenalty ?? 0,
      );
      if (this.p.frequencyPenalty) active.push('frequency_penalty');
      if (this.p.presencePenalty) active.push('presence_penalty');
    }
    if (wanted.includes('logit_bias')) {
      applyLogitBias(row, this.p.logitBias!);
      active.push('logit_bias');
    }
    if (wanted.includes('min_p') && applyMinP(row, this.p.minP!, this.temperature) > 0) active.push('min_p');
    this.active = active;
    return row;
  }
}

/** A generating sequence's adjustment state, fed its prompt; null when the request asks for none. */
export function sequenceLogitsFor(
  p: LogitsParams | undefined,
  temperature: number,
  eosTokenIds: number[],
  prompt: number[],
): SequenceLogits | null {
  const l = new SequenceLogits(p ?? {}, temperature, eosTokenIds);
  if (!l.adjusts) return null;
  l.observe(prompt);
  return l;
}
