// OpenAI response objects for the two generation endpoints, complete and streamed. Both endpoints
// run the same generation (routes/generation.ts); this module is the only place that knows how
// each one spells its result: `text` + legacy logprobs for /v1/completions, `message`/`delta` +
// logprobs.content for /v1/chat/completions.

import type { FinishReason, GeneratedToken, TopLogprob } from '../../runtime/types.ts';
import { choiceConfidence, tokenConfidence } from './confidence.ts';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type OpenAIFinishReason = 'stop' | 'length';

/** Everything about the response that is fixed before the first token. */
export interface ResponseHeader {
  id: string;
  created: number;
  model: string;
  /** Stream chunks carry `usage: null` until the usage chunk (stream_options.include_usage). */
  includeUsage: boolean;
  confidence: boolean;
}

export interface ResponseShape {
  /** A chunk to send before any token (chat: the assistant role), or null. */
  opening(): object | null;
  /** The chunk for one generated token. */
  token(t: GeneratedToken): object;
  /** A chunk for text that belongs to no token (held back for a stop string, released at the end). */
  text(text: string): object;
  /** The chunk carrying finish_reason. */
  finish(reason: OpenAIFinishReason): object;
  /** The usage chunk (empty choices) sent last when include_usage was asked. */
  usage(usage: Usage): object;
  /** The non-streamed response. */
  complete(tokens: GeneratedToken[], text: string, reason: OpenAIFinishReason, usage: Usage): object;
}

/** The engine's finish reason as OpenAI names it (an aborted generation has no client to tell). */
export function openAIFinishReason(reason: FinishReason): OpenAIFinishReason {
  return reason === 'length' ? 'length' : 'stop';
}

// ---------------------------------------------------------------- /v1/completions

export interface CompletionShapeOptions extends ResponseHeader {
  /** Legacy `logprobs: N`; null = no logprobs. */
  logprobs: number | null;
  /** The prompt as text: text_offset counts from its start, as OpenAI's does. */
  promptText: string;
  /** A token's own text (its piece of the vocabulary, not what it added after stop handling). */
  tokenText: (tokenId: number) => string;
}

interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

function topDict(top: TopLogprob[] | undefined): Record<string, number> {
  const dict: Record<string, number> = {};
  // Two alternatives that decode to the same text share a key; the likelier one (first) wins.
  for (const alt of top ?? []) if (!(alt.text in dict)) dict[alt.text] = alt.logprob;
  return dict;
}

export function completionShape(o: CompletionShapeOptions): ResponseShape {
  let offset = o.promptText.length;
  const legacy = (tokens: GeneratedToken[]): LegacyLogprobs => {
    const lp: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const t of tokens) {
      lp.tokens.push(o.tokenText(t.tokenId));
      lp.token_logprobs.push(t.logprob);
      lp.top_logprobs.push(topDict(t.topLogprobs));
      lp.text_offset.push(offset);
      offset += t.text.length;
    }
    return lp;
  };
  const chunk = (choice: object) => ({
    id: o.id,
    object: 'text_completion',
    created: o.created,
    model: o.model,
    system_fingerprint: null,
    choices: [{ index: 0, ...choice }],
    ...(o.includeUsage ? { usage: null } : {}),
  });
  return {
    opening: () => null,
    token: (t) =>
      chunk({
        text: t.text,
        logprobs: o.logprobs === null ? null : legacy([t]),
        finish_reason: null,
        ...(o.confidence ? { confidence: tokenConfidence(t) } : {}),
      }),
    text: (text) => chunk({ text, logprobs: null, finish_reason: null }),
    finish: (reason) => chunk({ text: '', logprobs: null, finish_reason: reason }),
    usage: (usage) => ({ ...chunk({}), choices: [], usage }),
    complete: (tokens, text, reason, usage) => ({
      id: o.id,
      object: 'text_completion',
      created: o.created,
      model: o.model,
      system_fingerprint: null,
      choices: [
        {
          index: 0,
          text,
          logprobs: o.logprobs === null ? null : legacy(tokens),
          finish_reason: reason,
          ...(o.confidence ? { confidence: choiceConfidence(tokens) } : {}),
        },
      ],
      usage,
    }),
  };
}

// ---------------------------------------------------------------- /v1/chat/completions

export interface ChatShapeOptions extends ResponseHeader {
  /** `logprobs: true`: null = none, else how many alternatives (top_logprobs, 0 allowed). */
  topLogprobs: number | null;
  tokenText: (tokenId: number) => string;
  /** A token's raw bytes (a piece of a multi-byte character is not valid UTF-8 on its own). */
  tokenBytes: (tokenId: number) => Uint8Array;
}

export function chatShape(o: ChatShapeOptions): ResponseShape {
  const bytes = (id: number) => Array.from(o.tokenBytes(id));
  const content = (tokens: GeneratedToken[]) =>
    tokens.map((t) => ({
      token: o.tokenText(t.tokenId),
      logprob: t.logprob,
      bytes: bytes(t.tokenId),
      top_logprobs: (t.topLogprobs ?? [])
        .slice(0, o.topLogprobs ?? 0)
        .map((alt) => ({ token: alt.text, logprob: alt.logprob, bytes: bytes(alt.tokenId) })),
    }));
  const logprobs = (tokens: GeneratedToken[]) =>
    o.topLogprobs === null ? null : { content: content(tokens), refusal: null };
  const chunk = (choice: object) => ({
    id: o.id,
    object: 'chat.completion.chunk',
    created: o.created,
    model: o.model,
    system_fingerprint: null,
    choices: [{ index: 0, ...choice }],
    ...(o.includeUsage ? { usage: null } : {}),
  });
  return {
    opening: () =>
      chunk({
        delta: { role: 'assistant', content: '', refusal: null },
        logprobs: null,
        finish_reason: null,
      }),
    token: (t) =>
      chunk({
        delta: { content: t.text },
        logprobs: logprobs([t]),
        finish_reason: null,
        ...(o.confidence ? { confidence: tokenConfidence(t) } : {}),
      }),
    text: (text) => chunk({ delta: { content: text }, logprobs: null, finish_reason: null }),
    finish: (reason) => chunk({ delta: {}, logprobs: null, finish_reason: reason }),
    usage: (usage) => ({ ...chunk({}), choices: [], usage }),
    complete: (tokens, text, reason, usage) => ({
      id: o.id,
      object: 'chat.completion',
      created: o.created,
      model: o.model,
      system_fingerprint: null,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: text, refusal: null },
          logprobs: logprobs(tokens),
          finish_reason: reason,
          ...(o.confidence ? { confidence: choiceConfidence(tokens) } : {}),
        },
      ],
      usage,
    }),
  };
}
