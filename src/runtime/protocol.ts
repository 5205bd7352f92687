// Messages between the main thread (engine) and the inference worker. The worker owns the ONNX
// session, the KV caches and the logits; only small per-step results cross the thread boundary,
// so a step costs one structured-clone of a few hundred bytes per row, not a 50k-wide logits row.
//
// Generation and scoring are streams: `start` opens a sequence, the worker's batch loop steps all
// running sequences together and sends one `rows` event per step; the main thread steers a
// sequence with fire-and-forget control messages (credit, feed, iv, stop), never one request per
// token.

import type { ModelSpec } from '../model/types.ts';
import type { Adjustment, LogitsParams } from './logits-processors.ts';
import type { EngineStepStats } from './types.ts';

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
  /** KV cache budget in bytes: admission reserves (prompt + max_tokens) tokens per sequence. */
  kvCacheBytes: number;
  /** Most sequences in one batch step. */
  maxBatch: number;
  /** Prompt tokens prefilled per loop iteration, between decode steps. */
  maxPrefillTokens: number;
}

export interface InitResult {
  provider: 'cpu' | 'cuda';
  warning?: string;
  inputNames: string[];
  outputNames: string[];
}

/** A sequence's interventions: a' = a * scale + shift on the last layer; null = identity. */
export interface IvUpdate {
  /** Increases with every change; each result says which version it was computed under. */
  version: number;
  scale: Float32Array | null;
  shift: Float32Array | null;
}

export interface StartMessage {
  type: 'start';
  seqId: number;
  /** generate: sample tokens; score: teacher-force the tokens sent with `feed`. */
  mode: 'generate' | 'score';
  prompt: number[];
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  topLogprobs: number;
  /** Penalties, biases, min_p, min_tokens (logits-processors.ts); absent: the raw row. */
  logits?: LogitsParams;
  maxTokens: number;
  /** Tokens that end a generation (empty: none). */
  eos: number[];
  /** Tokens the worker may generate before it waits for more credit (backpressure). */
  credit: number;
  iv: IvUpdate;
}

/** Fire-and-forget steering of a running sequence (envelope id 0, no reply). */
export type ControlMessage =
  | { type: 'credit'; seqId: number; n: number }
  | { type: 'feed'; seqId: number; tokens: number[] }
  | { type: 'iv'; seqId: number; iv: IvUpdate }
  | { type: 'stop'; seqId: number };

export interface StepResult {
  seqId: number;
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
  /** The IvUpdate version this token was computed under. */
  ivVersion: number;
  /** The worker ended the sequence with this token (EOS or max_tokens). */
  done: boolean;
}

export type StepStats = EngineStepStats;

/** Worker -> main events outside request/reply. */
export type WorkerEvent =
  | { event: 'rows'; results: StepResult[]; stats: StepStats }
  | { event: 'seq-error'; seqId: number; message: string; userError: boolean };

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

/** Stop the batch loop after the step in flight and release the session (before the thread ends). */
export interface ShutdownMessage {
  type: 'shutdown';
}

export type Request = InitMessage | StartMessage | ScoreMessage | ControlMessage | ShutdownMessage;

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
