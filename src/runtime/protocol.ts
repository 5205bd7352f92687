// Messages between the main thread (engine) and the inference worker. The worker owns the ONNX
// session, the KV caches and the logits; only small per-step results cross the thread boundary,
// so a step costs one structured-clone of a few hundred bytes, not a 50k-wide logits row.

import type { ModelSpec } from '../model/types.ts';
import type { Adjustment, LogitsParams } from './logits-processors.ts';

export type Device = 'cpu' | 'cuda' | 'auto';

export interface InitMessage {
  type: 'init';
  modelPath: string;
  spec: ModelSpec;
  device: Device;
  /** Last-layer neuron indices whose activations come back with every step. */
  watchNeurons: number[];
  /** log p_freq over the vocabulary, for unigram KL; null when no unigram counts are known. */
  logPFreq: Float32Array | null;
  intraOpThreads?: number;
}

export interface InitResult {
  provider: 'cpu' | 'cuda';
  warning?: string;
  inputNames: string[];
  outputNames: string[];
}

export interface OpenMessage {
  type: 'open';
  seqId: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  topLogprobs: number;
  logits?: LogitsParams;
}

export interface StepMessage {
  type: 'step';
  seqId: number;
  /** Tokens to append: the whole prompt on the first step, then the last sampled token. */
  tokens: number[];
  /** a' = a * scale + shift on the last layer; null = identity. */
  scale: Float32Array | null;
  shift: Float32Array | null;
}

export interface StepResult {
  tokenId: number;
  /** log p(token) under the unfiltered temperature-1 distribution. */
  logprob: number;
  entropy: number;
  top1Prob: number;
  normScale: number;
  /** Activations of the watched neurons at the last position, in watchNeurons order. */
  watched: number[];
  unigramKl: number | null;
  topLogprobs: [number, number][];
  /** What changed the row the token was sampled from (the signals above are of the raw row). */
  adjustments: Adjustment[];
  /** Seconds spent inside session.run (for benchmarks). */
  runS: number;
}

export interface ScoreMessage {
  type: 'score';
  ids: number[];
  scale: Float32Array | null;
  shift: Float32Array | null;
  activations: boolean;
  residuals: boolean;
  /**
   * false: skip the unembedding for all but the last position and report no per-position
   * signals (calibration needs activations and residuals only; at GPT-2 size the full-vocabulary
   * logits would cost more than the rest of the forward pass).
   */
  signals?: boolean;
}

export interface ScoreResult {
  entropy: Float64Array;
  top1Prob: Float64Array;
  normScale: Float64Array;
  /** log p(ids[i+1]) at position i; NaN at the last position. */
  nextLogprob: Float64Array;
  unigramKl: Float64Array | null;
  /** [n, watched] */
  watched: Float32Array;
  /** [n, d_mlp] when asked. */
  mlpAct: Float32Array | null;
  /** [n, d_model] when asked. */
  residual: Float32Array | null;
}

export interface CloseMessage {
  type: 'close';
  seqId: number;
}

export type Request = InitMessage | OpenMessage | StepMessage | ScoreMessage | CloseMessage;

export interface Envelope {
  id: number;
  body: Request;
}

export interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: { message: string; userError: boolean; stack?: string };
}
