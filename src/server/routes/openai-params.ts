// OpenAI (and vLLM) request parameters -> the engine's SamplingParams, with every check the schema
// cannot express: parameters we cannot honour are refused by name (an OpenAI client that asks for
// tools must learn it did not get them, not receive one plain completion), logit_bias keys must be
// token ids of this vocabulary, n is bounded by --max-n, and the token budget must fit the context.

import type { LogitsParams } from '../../runtime/logits-processors.ts';
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
  best_of: { neutral: (v) => v === 1, why: 'only best_of=1 is supported (use n for several choices)' },
  suffix: { neutral: (v) => v === '', why: 'suffix (insertion) is not supported' },
  response_format: {
    neutral: (v) =>
      isEmptyObject(v) ||
      (typeof v === 'object' && (v as Body).type === 'text' && Object.keys(v as Body).length === 1),
    why: 'JSON mode and structured outputs (json_object, json_schema) are not supported: no constrained decoding; only {"type": "text"}',
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
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  repetition_penalty?: number | null;
  min_p?: number | null;
  logit_bias?: Record<string, number> | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
  min_tokens?: number | null;
}

/** OpenAI's range for a logit_bias value. */
export const LOGIT_BIAS_MAX = 100;

/** logit_bias as [id, bias] pairs: keys must be decimal token ids of the vocabulary. */
function readLogitBias(bias: Record<string, number>, vocabSize: number): [number, number][] {
  return Object.entries(bias).map(([key, value]) => {
    const id = /^\d+$/.test(key) ? Number(key) : NaN;
    if (!Number.isSafeInteger(id) || id >= vocabSize) {
      throw new ApiError(
        'invalid_value',
        `Invalid key '${key}' in 'logit_bias': keys must be token ids in 0..${vocabSize - 1}.`,
        'logit_bias',
      );
    }
    if (!(Math.abs(value) <= LOGIT_BIAS_MAX)) {
      throw new ApiError(
        'invalid_value',
        `Invalid value for 'logit_bias' token ${key}: ${value} is outside [-${LOGIT_BIAS_MAX}, ${LOGIT_BIAS_MAX}].`,
        'logit_bias',
      );
    }
    return [id, value];
  });
}

function readLogits(body: CommonSamplingInput, maxTokens: number, vocabSize: number): LogitsParams | undefined {
  const p: LogitsParams = {};
  if (body.frequency_penalty) p.frequencyPenalty = body.frequency_penalty;
  if (body.presence_penalty) p.presencePenalty = body.presence_penalty;
  if (body.repetition_penalty !== undefined && body.repetition_penalty !== null && body.repetition_penalty !== 1)
    p.repetitionPenalty = body.repetition_penalty;
  if (body.min_p) p.minP = body.min_p;
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0)
    p.logitBias = readLogitBias(body.logit_bias, vocabSize);
  if (body.stop_token_ids && body.stop_token_ids.length > 0) {
    const bad = body.stop_token_ids.find((id) => id >= vocabSize);
    if (bad !== undefined) {
      throw new ApiError(
        'invalid_value',
        `Token id ${bad} in 'stop_token_ids' is outside the vocabulary (0..${vocabSize - 1}).`,
        'stop_token_ids',
      );
    }
    p.stopTokenIds = body.stop_token_ids;
  }
  if (body.ignore_eos === true) p.ignoreEos = true;
  if (body.min_tokens) {
    if (body.min_tokens > maxTokens) {
      throw new ApiError(
        'invalid_value',
        `'min_tokens' (${body.min_tokens}) must not exceed the completion budget (${maxTokens}).`,
        'min_tokens',
      );
    }
    p.minTokens = body.min_tokens;
  }
  return Object.keys(p).length > 0 ? p : undefined;
}

/** OpenAI defaults: temperature 1, top_p 1; vLLM's extensions off unless asked. */
export function samplingParams(
  body: CommonSamplingInput,
  maxTokens: number,
  topLogprobs: number,
  vocabSize: number,
): SamplingParams {
  const logits = readLogits(body, maxTokens, vocabSize);
  return {
    maxTokens,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    ...(body.seed !== undefined && body.seed !== null ? { seed: body.seed } : {}),
    stop: normalizeStop(body.stop),
    topLogprobs,
    ...(body.ignore_eos === true ? { stopAtEos: false } : {}),
    ...(logits ? { logits } : {}),
  };
}

/** Default of --max-n: the most choices one request may ask for. */
export const DEFAULT_MAX_N = 8;

/** n as asked (default 1), bounded by the server's --max-n. */
export function choiceCount(n: number | null | undefined, maxN: number): number {
  const count = n ?? 1;
  if (count > maxN) {
    throw new ApiError(
      'invalid_value',
      `'n' is ${count}; this server generates at most ${maxN} choices per request (--max-n).`,
      'n',
    );
  }
  return count;
}

/**
 * The parameters of choice i of n: the same, with seed s + i when seeded (so n seeded choices are
 * the n single requests seeded s, s+1, ...). Unseeded choices each draw their own seed.
 */
export function choiceParams(params: SamplingParams, i: number): SamplingParams {
  if (i === 0 || params.seed === undefined) return params;
  return { ...params, seed: params.seed + i };
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
