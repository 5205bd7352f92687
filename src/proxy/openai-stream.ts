// What the shadow scorer reads from an OpenAI-compatible response: for each choice, the text it
// adds and, when the upstream says so, its tokens (logprobs entries with token strings and bytes,
// or vLLM's token_ids). Written against what real servers send (see /work/shared/sse-captures):
// role-only first chunks, `choices: []` usage chunks, content: null, finish_reason on a content
// chunk, legacy `text` choices, in-stream errors as `event: error` or a top-level `error` field.
// Anything it does not recognise is ignored: the client gets those bytes anyway.

import type { SseEvent } from './sse-parser.ts';

/** One token as the upstream describes it (any field may be missing). */
export interface UpstreamToken {
  token?: string;
  bytes?: number[];
  id?: number;
  logprob?: number;
  /** The upstream's top alternatives' logprobs (for the top-k entropy lower bound). */
  topLogprobs?: number[];
}

export interface ChoicePiece {
  index: number;
  text: string;
  /** Present when the upstream described this piece's tokens. */
  tokens?: UpstreamToken[];
  finishReason?: string;
}

export type StreamItem =
  /** `error`: the chunk also carried an error (OpenRouter: beside its last choices and usage). */
  | { kind: 'chunk'; choices: ChoicePiece[]; error?: string }
  | { kind: 'done' }
  | { kind: 'error'; message: string }
  /** Not JSON, or not a chunk: relayed, not scored. */
  | { kind: 'other' };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function chatTokens(logprobs: unknown): UpstreamToken[] | undefined {
  if (!isObj(logprobs) || !Array.isArray(logprobs.content)) return undefined;
  return logprobs.content.filter(isObj).map((e) => {
    const t: UpstreamToken = {};
    if (typeof e.token === 'string') t.token = e.token;
    if (Array.isArray(e.bytes) && e.bytes.every((b) => typeof b === 'number')) t.bytes = e.bytes as number[];
    const lp = num(e.logprob);
    if (lp !== undefined) t.logprob = lp;
    if (Array.isArray(e.top_logprobs)) {
      const tops = e.top_logprobs.filter(isObj).map((x) => num(x.logprob));
      if (tops.length > 0 && tops.every((x) => x !== undefined)) t.topLogprobs = tops as number[];
    }
    return t;
  });
}

/** The legacy completions shape: parallel arrays tokens / token_logprobs / top_logprobs. */
function legacyTokens(logprobs: unknown): UpstreamToken[] | undefined {
  if (!isObj(logprobs) || !Array.isArray(logprobs.tokens)) return undefined;
  const lps = Array.isArray(logprobs.token_logprobs) ? logprobs.token_logprobs : [];
  const tops = Array.isArray(logprobs.top_logprobs) ? logprobs.top_logprobs : [];
  return logprobs.tokens.map((tok, i) => {
    const t: UpstreamToken = {};
    if (typeof tok === 'string') t.token = tok;
    const lp = num(lps[i]);
    if (lp !== undefined) t.logprob = lp;
    const top = tops[i];
    if (isObj(top)) t.topLogprobs = Object.values(top).filter((x): x is number => typeof x === 'number');
    return t;
  });
}

/** vLLM's `token_ids` (return_token_ids): the ids themselves, the best alignment there is. */
function withIds(tokens: UpstreamToken[] | undefined, ids: unknown): UpstreamToken[] | undefined {
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((x) => Number.isInteger(x))) return tokens;
  if (tokens && tokens.length === ids.length) return tokens.map((t, i) => ({ ...t, id: ids[i] as number }));
  return (ids as number[]).map((id) => ({ id }));
}

/** One choice of a streamed chunk (`delta`) or of a complete response (`message`). */
function readChoice(c: Obj, i: number, key: 'delta' | 'message'): ChoicePiece {
  const index = Number.isInteger(c.index) ? (c.index as number) : i;
  const finishReason = typeof c.finish_reason === 'string' ? c.finish_reason : undefined;
  const withFinish = (p: ChoicePiece): ChoicePiece => (finishReason ? { ...p, finishReason } : p);
  if (typeof c.text === 'string') {
    const tokens = withIds(legacyTokens(c.logprobs), c.token_ids);
    return withFinish({ index, text: c.text, ...(tokens ? { tokens } : {}) });
  }
  const m = isObj(c[key]) ? (c[key] as Obj) : {};
  const text = typeof m.content === 'string' ? m.content : '';
  const tokens = withIds(chatTokens(c.logprobs), m.token_ids ?? c.token_ids);
  return withFinish({ index, text, ...(tokens ? { tokens } : {}) });
}

function readChoices(body: Obj, key: 'delta' | 'message'): ChoicePiece[] {
  if (!Array.isArray(body.choices)) return [];
  return body.choices.filter(isObj).map((c, i) => readChoice(c, i, key));
}

function errorMessage(e: unknown): string {
  if (isObj(e) && typeof e.message === 'string') return e.message;
  return typeof e === 'string' ? e : JSON.stringify(e);
}

export function interpretEvent(ev: SseEvent): StreamItem {
  const data = ev.data.trim();
  if (data === '[DONE]') return { kind: 'done' };
  let body: unknown;
  try {
    body = JSON.parse(data);
  } catch {
    return ev.event === 'error' ? { kind: 'error', message: data } : { kind: 'other' };
  }
  if (ev.event === 'error')
    return { kind: 'error', message: errorMessage(isObj(body) ? (body.error ?? body) : body) };
  if (!isObj(body)) return { kind: 'other' };
  // OpenRouter puts `error` beside the usage of a chunk; vLLM sends {"error": {...}} alone. Either
  // way the completion is over, and the tokens of that chunk (if any) were still relayed.
  if (body.error !== undefined && body.error !== null) {
    const choices = readChoices(body, 'delta');
    const message = errorMessage(body.error);
    return choices.length > 0 ? { kind: 'chunk', choices, error: message } : { kind: 'error', message };
  }
  if (body.object === 'error') return { kind: 'error', message: errorMessage(body) };
  return { kind: 'chunk', choices: readChoices(body, 'delta') };
}

/** A complete (non-streamed) response body: its choices, or null when it is not one. */
export function interpretBody(text: string): ChoicePiece[] | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObj(body) || !Array.isArray(body.choices)) return null;
  return readChoices(body, 'message');
}
