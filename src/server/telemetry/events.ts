// The JSON events of the WebSocket monitor stream (GET /v1/monitor/stream). Field names are
// snake_case, the same as `generate --json` and the HTTP API, so one client parser serves all three.
// `ts` is the Unix time in milliseconds at which the sidecar emitted the event.

import type { FinishReason, GenerationSummary } from '../../runtime/types.ts';
import { tokenRecordJson, type TokenRecord, type TokenRecordJson } from '../../monitor/token-record.ts';
import type { StoredIntervention } from '../../monitor/interventions.ts';

export interface RequestStartEvent {
  type: 'request_start';
  request_id: string;
  model: string;
  params: Record<string, unknown>;
  ts: number;
}

/** A token's record (src/monitor/token-record.ts) with the request it belongs to. */
export interface TokenEvent extends TokenRecordJson {
  type: 'token';
  request_id: string;
  model: string;
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

export function tokenEvent(requestId: string, model: string, t: TokenRecord, ts: number): TokenEvent {
  return { type: 'token', request_id: requestId, model, ...tokenRecordJson(t), ts };
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
