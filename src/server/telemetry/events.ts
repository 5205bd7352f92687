// The JSON events of the WebSocket monitor stream (GET /v1/monitor/stream). Field names are
// snake_case, the same as `generate --json` and the HTTP API, so one client parser serves all three.
// `ts` is the Unix time in milliseconds at which the sidecar emitted the event.

import type { FinishReason, GeneratedToken, GenerationSummary } from '../../runtime/types.ts';
import type { StoredIntervention } from '../../monitor/interventions.ts';

export interface RequestStartEvent {
  type: 'request_start';
  request_id: string;
  model: string;
  params: Record<string, unknown>;
  ts: number;
}

export interface TokenEvent {
  type: 'token';
  request_id: string;
  model: string;
  index: number;
  token_id: number;
  text: string;
  logprob: number;
  entropy: number;
  top1_prob: number;
  norm_scale: number;
  entropy_neurons: Record<string, number>;
  frequency_neurons: Record<string, number>;
  unigram_kl?: number;
  repeat: number;
  interventions: string[];
  ts: number;
}

export interface RequestEndEvent {
  type: 'request_end';
  request_id: string;
  model: string;
  outcome: 'success' | 'aborted' | 'error';
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  finish_reason: FinishReason;
  duration_s: number;
  error?: string;
  ts: number;
}

export interface InterventionEvent {
  type: 'intervention';
  action: 'created' | 'removed' | 'expired';
  model: string;
  intervention: {
    id: string;
    neuron: string;
    mode: StoredIntervention['mode'];
    value: number;
    created_at: string;
    expires_at: string | null;
    request_id: string | null;
  };
  ts: number;
}

/** Sent to one subscriber, in place of the events it lost, when it catches up after falling behind. */
export interface DroppedEvent {
  type: 'dropped';
  count: number;
  ts: number;
}

export type MonitorEvent = RequestStartEvent | TokenEvent | RequestEndEvent | InterventionEvent;

export function tokenEvent(requestId: string, model: string, t: GeneratedToken, ts: number): TokenEvent {
  const ev: TokenEvent = {
    type: 'token',
    request_id: requestId,
    model,
    index: t.index,
    token_id: t.tokenId,
    text: t.text,
    logprob: t.logprob,
    entropy: t.entropy,
    top1_prob: t.top1Prob,
    norm_scale: t.normScale,
    entropy_neurons: t.entropyNeurons,
    frequency_neurons: t.frequencyNeurons,
    repeat: t.repeat,
    interventions: t.interventions,
    ts,
  };
  // Absent rather than null when the model has no unigram counts, as in generate --json.
  if (t.unigramKl !== undefined) ev.unigram_kl = t.unigramKl;
  return ev;
}

export function requestEndEvent(
  requestId: string,
  model: string,
  summary: GenerationSummary,
  outcome: RequestEndEvent['outcome'],
  durationS: number,
  ts: number,
  error?: Error,
): RequestEndEvent {
  const ev: RequestEndEvent = {
    type: 'request_end',
    request_id: requestId,
    model,
    outcome,
    usage: {
      prompt_tokens: summary.promptTokens,
      completion_tokens: summary.completionTokens,
      total_tokens: summary.promptTokens + summary.completionTokens,
    },
    finish_reason: summary.finishReason,
    duration_s: durationS,
    ts,
  };
  if (error) ev.error = error.message;
  return ev;
}

export function interventionEvent(
  action: InterventionEvent['action'],
  model: string,
  iv: StoredIntervention,
  ts: number,
): InterventionEvent {
  return {
    type: 'intervention',
    action,
    model,
    intervention: {
      id: iv.id,
      neuron: iv.neuron,
      mode: iv.mode,
      value: iv.value,
      created_at: iv.createdAt,
      expires_at: iv.expiresAt,
      request_id: iv.requestId,
    },
    ts,
  };
}
