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

/** One finished choice of a non-streamed response. */
export interface ChoiceResult {
  tokens: GeneratedToken[];
  text: string;
  reason: OpenAIFinishReason;
}

/** Streamed chunks name their choice (`index`, 0..n-1); with n > 1 the choices' chunks interleave. */
export interface ResponseShape {
  /** A chunk to send before any token of choice `index` (chat: the assistant role; echo: the prompt), or null. */
  opening(index: number): object | null;
  /** The chunk for one generated token. */
  token(t: GeneratedToken, index: number): object;
  /** A chunk for text that belongs to no token (held back for a stop string, released at the end). */
  text(text: string, index: number): object;
  /** The chunk carrying finish_reason. */
  finish(reason: OpenAIFinishReason, index: number): object;
  /** The usage chunk (empty choices) sent last when include_usage was asked. */
  usage(usage: Usage): object;
  /** The non-streamed response, choices in index order. */
  complete(choices: ChoiceResult[], usage: Usage): object;
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
  /**
   * echo: the prompt's ids and the logprob of each under the model (null for the first, which
   * nothing predicts), or null when the prompt is not echoed.
   */
  echo: { ids: number[]; logprobs: (number | null)[] } | null;
}

interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  /** null for echoed prompt tokens: scoring reports the chosen token's logprob, not alternatives. */
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

function topDict(top: TopLogprob[] | undefined): Record<string, number> {
  const dict: Record<string, number> = {};
  // Two alternatives that decode to the same text share a key; the likelier one (first) wins.
  for (const alt of top ?? []) if (!(alt.text in dict)) dict[alt.text] = alt.logprob;
  return dict;
}

export function completionShape(o: CompletionShapeOptions): ResponseShape {
  // text_offset counts from the start of the prompt; each choice has its own running offset.
  const offsets = new Map<number, number>();
  const legacy = (tokens: GeneratedToken[], index: number): LegacyLogprobs => {
    let offset = offsets.get(index) ?? o.promptText.length;
    const lp: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const t of tokens) {
      lp.tokens.push(o.tokenText(t.tokenId));
      lp.token_logprobs.push(t.logprob);
      lp.top_logprobs.push(topDict(t.topLogprobs));
      lp.text_offset.push(offset);
      offset += t.text.length;
    }
    offsets.set(index, offset);
    return lp;
  };
  const echoed = (): LegacyLogprobs => {
    const lp: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    let offset = 0;
    o.echo!.ids.forEach((id, k) => {
      const piece = o.tokenText(id);
      lp.tokens.push(piece);
      lp.token_logprobs.push(o.echo!.logprobs[k] ?? null);
      lp.top_logprobs.push(null);
      lp.text_offset.push(offset);
      offset += piece.length;
    });
    return lp;
  };
  const join = (a: LegacyLogprobs, b: LegacyLogprobs): LegacyLogprobs => ({
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  });
  const chunk = (choice: object, index: number) => ({
    id: o.id,
    object: 'text_completion',
    created: o.created,
    model: o.model,
    system_fingerprint: null,
    choices: [{ index, ...choice }],
    ...(o.includeUsage ? { usage: null } : {}),
  });
  return {
    // echo streams the prompt first, as vLLM does.
    opening: (index) =>
      o.echo === null
        ? null
        : chunk(
            { text: o.promptText, logprobs: o.logprobs === null ? null : echoed(), finish_reason: null },
            index,
          ),
    token: (t, index) =>
      chunk(
        {
          text: t.text,
          logprobs: o.logprobs === null ? null : legacy([t], index),
          finish_reason: null,
          ...(o.confidence ? { confidence: tokenConfidence(t) } : {}),
        },
        index,
      ),
    text: (text, index) => chunk({ text, logprobs: null, finish_reason: null }, index),
    finish: (reason, index) => chunk({ text: '', logprobs: null, finish_reason: reason }, index),
    usage: (usage) => ({ ...chunk({}, 0), choices: [], usage }),
    complete: (choices, usage) => ({
      id: o.id,
      object: 'text_completion',
      created: o.created,
      model: o.model,
      system_fingerprint: null,
      choices: choices.map((c, index) => {
        const own = o.logprobs === null ? null : legacy(c.tokens, index);
        return {
          index,
          text: o.echo === null ? c.text : o.promptText + c.text,
          logprobs: own === null ? null : o.echo === null ? own : join(echoed(), own),
          finish_reason: c.reason,
          ...(o.confidence ? { confidence: choiceConfidence(c.tokens) } : {}),
        };
      }),
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
  const chunk = (choice: object, index: number) => ({
    id: o.id,
    object: 'chat.completion.chunk',
    created: o.created,
    model: o.model,
    system_fingerprint: null,
    choices: [{ index, ...choice }],
    ...(o.includeUsage ? { usage: null } : {}),
  });
  return {
    opening: (index) =>
      chunk(
        { delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null },
        index,
      ),
    token: (t, index) =>
      chunk(
        {
          delta: { content: t.text },
          logprobs: logprobs([t]),
          finish_reason: null,
          ...(o.confidence ? { confidence: tokenConfidence(t) } : {}),
        },
        index,
      ),
    text: (text, index) => chunk({ delta: { content: text }, logprobs: null, finish_reason: null }, index),
    finish: (reason, index) => chunk({ delta: {}, logprobs: null, finish_reason: reason }, index),
    usage: (usage) => ({ ...chunk({}, 0), choices: [], usage }),
    complete: (choices, usage) => ({
      id: o.id,
      object: 'chat.completion',
      created: o.created,
      model: o.model,
      system_fingerprint: null,
      choices: choices.map((c, index) => ({
        index,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: logprobs(c.tokens),
        finish_reason: c.reason,
        ...(o.confidence ? { confidence: choiceConfidence(c.tokens) } : {}),
      })),
      usage,
    }),
  };
}
