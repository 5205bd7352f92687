// OpenAI request parameters -> the engine's SamplingParams, with every check the schema cannot
// express: parameters we cannot honour are refused by name (an OpenAI client that asks for n=3 or
// tools must learn it did not get them, not receive one plain completion), and the token budget
// must fit the model's context.

import type { SamplingParams } from '../../runtime/types.ts';
import { ApiError, echo } from '../errors.ts';

type Body = Record<string, unknown>;

const isEmptyObject = (v: unknown) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;

/**
 * OpenAI parameters that are accepted only at the value that means "feature off", with why any
 * other value is refused. `null` always counts as off (some clients send every field).
 */
const NEUTRAL_ONLY: Record<string, { neutral: (v: unknown) => boolean; why: string }> = {
  n: { neutral: (v) => v === 1, why: 'only n=1 is supported: each request generates one choice' },
  best_of: { neutral: (v) => v === 1, why: 'only best_of=1 is supported' },
  echo: { neutral: (v) => v === false, why: 'echo is not supported' },
  suffix: { neutral: (v) => v === '', why: 'suffix (insertion) is not supported' },
  frequency_penalty: { neutral: (v) => v === 0, why: 'frequency_penalty is not supported (only 0)' },
  presence_penalty: { neutral: (v) => v === 0, why: 'presence_penalty is not supported (only 0)' },
  logit_bias: { neutral: isEmptyObject, why: 'logit_bias is not supported (only {})' },
  response_format: {
    neutral: (v) =>
      isEmptyObject(v) ||
      (typeof v === 'object' && (v as Body).type === 'text' && Object.keys(v as Body).length === 1),
    why: 'only response_format {"type": "text"} is supported',
  },
  tools: { neutral: (v) => Array.isArray(v) && v.length === 0, why: 'tools are not supported' },
  tool_choice: { neutral: (v) => v === 'none', why: 'tool_choice is not supported (only "none")' },
  functions: { neutral: (v) => Array.isArray(v) && v.length === 0, why: 'functions are not supported' },
  function_call: { neutral: (v) => v === 'none', why: 'function_call is not supported (only "none")' },
  // Without tools there is nothing to call in parallel, so any value has nothing to change.
  parallel_tool_calls: {
    neutral: (v) => typeof v === 'boolean',
    why: 'parallel_tool_calls must be a boolean',
  },
  store: { neutral: (v) => v === false, why: 'store is not supported: completions are not kept' },
  metadata: { neutral: isEmptyObject, why: 'metadata is not supported (it only applies with store)' },
  service_tier: { neutral: (v) => v === 'auto' || v === 'default', why: 'service_tier is not supported' },
  modalities: {
    neutral: (v) => Array.isArray(v) && v.length === 1 && v[0] === 'text',
    why: 'only modalities ["text"] is supported',
  },
  audio: { neutral: () => false, why: 'audio output is not supported' },
  prediction: { neutral: () => false, why: 'predicted outputs are not supported' },
  reasoning_effort: { neutral: () => false, why: 'reasoning_effort is not supported' },
  web_search_options: { neutral: () => false, why: 'web search is not supported' },
  verbosity: { neutral: () => false, why: 'verbosity is not supported' },
  // A cache-routing hint and an end-user id: they never change the output, so any string is fine.
  prompt_cache_key: { neutral: (v) => typeof v === 'string', why: 'prompt_cache_key must be a string' },
  safety_identifier: { neutral: (v) => typeof v === 'string', why: 'safety_identifier must be a string' },
};

/** Throws a 400 naming the first parameter that asks for something this server does not do. */
export function rejectUnsupported(body: Body): void {
  for (const [name, rule] of Object.entries(NEUTRAL_ONLY)) {
    const v = body[name];
    if (v === undefined || v === null || rule.neutral(v)) continue;
    throw new ApiError('unsupported_parameter', `Unsupported value for '${name}': ${rule.why}.`, name);
  }
}

export function normalizeStop(stop: string | string[] | null | undefined): string[] {
  if (stop === undefined || stop === null) return [];
  return typeof stop === 'string' ? [stop] : stop;
}

export interface BudgetInput {
  promptTokens: number;
  maxPositions: number;
  /** max_tokens / max_completion_tokens as sent, null when absent. */
  requested: number | null;
  /** Used when nothing was requested (capped to the room left). */
  defaultMax: number;
  /** The parameters to name in an error: the prompt's and the budget's. */
  promptParam: 'prompt' | 'messages';
  maxParam: 'max_tokens' | 'max_completion_tokens';
}

/**
 * The completion budget: the requested max tokens when they fit beside the prompt in the
 * model's context, else a context_length_exceeded 400 worded as OpenAI words it.
 */
export function completionBudget(b: BudgetInput): number {
  const room = b.maxPositions - b.promptTokens;
  const limit = `This model's maximum context length is ${b.maxPositions} tokens.`;
  if (b.requested === null) {
    if (room < 1) {
      throw new ApiError(
        'context_length_exceeded',
        `${limit} However, your prompt has ${b.promptTokens} tokens, which leaves no room for a completion. Please reduce the length of the prompt.`,
        b.promptParam,
      );
    }
    return Math.min(b.defaultMax, room);
  }
  if (b.requested > room) {
    throw new ApiError(
      'context_length_exceeded',
      `${limit} However, you requested ${b.promptTokens + b.requested} tokens (${b.promptTokens} in the prompt, ${b.requested} for the completion). Please reduce the length of the prompt or of ${b.maxParam}.`,
      room < 1 ? b.promptParam : b.maxParam,
    );
  }
  return b.requested;
}

/**
 * Refuses, before any tokenization, a prompt text too long to fit the context whatever its tokens
 * (see ReadyServices.maxPromptBytes): the cheap admission check that keeps a megabyte prompt
 * from costing seconds of tokenizer time only to be refused.
 */
export function checkPromptBytes(
  texts: string[],
  maxPromptBytes: () => number,
  maxPositions: number,
  param: string,
): void {
  const bytes = texts.reduce((n, t) => n + Buffer.byteLength(t, 'utf8'), 0);
  // The limit is at least maxPositions * 4 bytes (a token holds >= 1 byte): shorter texts skip it.
  if (bytes <= maxPositions * 4) return;
  if (bytes > maxPromptBytes()) {
    throw new ApiError(
      'context_length_exceeded',
      `This model's maximum context length is ${maxPositions} tokens. However, your prompt has ${bytes} bytes of text, which is more than that many tokens can hold. Please reduce the length of the prompt.`,
      param,
    );
  }
}

export interface CommonSamplingInput {
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

/** OpenAI defaults: temperature 1, top_p 1. */
export function samplingParams(
  body: CommonSamplingInput,
  maxTokens: number,
  topLogprobs: number,
): SamplingParams {
  return {
    maxTokens,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    ...(body.seed !== undefined && body.seed !== null ? { seed: body.seed } : {}),
    stop: normalizeStop(body.stop),
    topLogprobs,
  };
}

/** The served model is the only one; anything else is a 404 as OpenAI answers it. */
export function checkModel(requested: string, served: string): void {
  if (requested !== served) {
    throw new ApiError(
      'model_not_found',
      `The model '${echo(requested)}' does not exist. This server serves '${served}' (see GET /v1/models).`,
      'model',
    );
  }
}

export interface StreamFlags {
  stream: boolean;
  includeUsage: boolean;
}

export function streamFlags(body: {
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
}): StreamFlags {
  const stream = body.stream === true;
  if (!stream && body.stream_options !== undefined && body.stream_options !== null) {
    throw new ApiError(
      'invalid_value',
      "The 'stream_options' parameter is only allowed when 'stream' is true.",
      'stream_options',
    );
  }
  return { stream, includeUsage: stream && body.stream_options?.include_usage === true };
}
