// The contract between the generation engine (src/runtime) and its consumers: the CLI,
// the monitor and the server. Consumers depend on these types only.

import type { ModelSpec } from '../model/types.ts';

export type { NeuronIntervention } from '../monitor/neurons.ts';
import type { NeuronIntervention } from '../monitor/neurons.ts';

export interface SamplingParams {
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  /** Reproducible sampling when set. */
  seed?: number;
  stop: string[];
  /** Top alternatives to report per token (OpenAI top_logprobs); 0 = none. */
  topLogprobs: number;
  /** Stop at the model's EOS token(s) (default true). */
  stopAtEos?: boolean;
}

export interface TopLogprob {
  tokenId: number;
  text: string;
  logprob: number;
}

/** Per-token confidence signals; the same fields in generate --json, score --json and the server. */
export interface TokenSignals {
  /** Entropy (nats) of the next-token distribution after interventions, temperature 1. */
  entropy: number;
  top1Prob: number;
  /** sqrt(var(x)+eps) (LayerNorm) or sqrt(mean(x^2)+eps) (RMSNorm) of the final residual. */
  normScale: number;
  entropyNeurons: Record<string, number>;
  frequencyNeurons: Record<string, number>;
  /** KL(P_model || P_freq) in nats when unigram counts are known. */
  unigramKl?: number;
  /** Longest suffix of the context (ending at this token) that occurred earlier in it. */
  repeat: number;
  /** Ids of the interventions active at this step. */
  interventions: string[];
}

export interface GeneratedToken extends TokenSignals {
  index: number;
  tokenId: number;
  /** Text this token adds to the completion (may be '' while a multi-byte character is incomplete). */
  text: string;
  logprob: number;
  topLogprobs?: TopLogprob[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationSummary {
  promptTokens: number;
  completionTokens: number;
  finishReason: FinishReason;
  text: string;
  durationS: number;
  tokensPerS: number;
  timeToFirstTokenS: number | null;
  /**
   * Text held back while it could have been the start of a stop string and released when the
   * generation ended another way (EOS, abort). It is part of `text` but of no token's `text`:
   * a streaming consumer sends it after the last token.
   */
  trailingText: string;
}

export interface ScoredPosition extends TokenSignals {
  position: number;
  tokenId: number;
  /** Log-probability the model gave, at this position, to the NEXT token of the sequence (null at the end). */
  nextLogprob: number | null;
  mlpAct?: number[];
}

export interface GenerateRequest {
  promptIds: number[];
  params: SamplingParams;
  /** Called before every step; returns the interventions active for that step. */
  interventions?: () => NeuronIntervention[];
  signal?: AbortSignal;
}

export interface Engine {
  readonly spec: ModelSpec;
  readonly modelId: string;
  /** Streams generated tokens; the iterator's return value is the summary. */
  generate(req: GenerateRequest): AsyncGenerator<GeneratedToken, GenerationSummary>;
  score(ids: number[], opts?: { activations?: boolean; interventions?: NeuronIntervention[] }): Promise<ScoredPosition[]>;
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[]): string;
  close(): Promise<void>;
}
