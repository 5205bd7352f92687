// POST /v1/chat/completions: messages rendered through the model's chat template (or the plain
// one, see chat-template.ts), one assistant reply, logprobs in the chat shape.

import type { FastifyInstance } from 'fastify';
import type { ChatMessage, ChatRole } from '../chat-template.ts';
import { ApiError, echo } from '../errors.ts';
import { ChatCompletionRequest, type ChatMessageIn } from '../schemas.ts';
import type { ServerContext } from './context.ts';
import { runGeneration } from './generation.ts';
import { unknownFieldsHooks } from './unknown-fields.ts';
import { chatShape } from './openai-format.ts';
import {
  checkModel,
  choiceCount,
  checkPromptBytes,
  completionBudget,
  rejectUnsupported,
  samplingParams,
  streamFlags,
} from './openai-params.ts';

/** `developer` is OpenAI's newer name for the system role; templates only know `system`. */
const ROLES: Record<string, ChatRole> = {
  system: 'system',
  developer: 'system',
  user: 'user',
  assistant: 'assistant',
};

const isAbsent = (v: unknown) => v === undefined || v === null || (Array.isArray(v) && v.length === 0);

function readMessage(m: ChatMessageIn, i: number): ChatMessage {
  const at = `messages[${i}]`;
  const role = ROLES[m.role];
  if (!role) {
    if (m.role === 'tool' || m.role === 'function') {
      throw new ApiError(
        'unsupported_parameter',
        `${at}.role: '${echo(m.role)}' messages are not supported (this server has no tools).`,
        `${at}.role`,
      );
    }
    throw new ApiError(
      'invalid_value',
      `${at}.role must be one of system, developer, user, assistant; got '${echo(m.role)}'.`,
      `${at}.role`,
    );
  }
  for (const field of ['tool_calls', 'tool_call_id', 'function_call', 'audio', 'refusal'] as const) {
    if (!isAbsent(m[field])) {
      throw new ApiError(
        'unsupported_parameter',
        `${at}.${field} is not supported (only text messages).`,
        `${at}.${field}`,
      );
    }
  }
  let content = '';
  if (typeof m.content === 'string') content = m.content;
  else if (Array.isArray(m.content)) {
    content = m.content
      .map((part, j) => {
        if (part.type !== 'text' || typeof part.text !== 'string') {
          throw new ApiError(
            'unsupported_parameter',
            `${at}.content[${j}]: only {"type": "text", "text": ...} parts are supported, got type '${echo(part.type)}'.`,
            `${at}.content[${j}].type`,
          );
        }
        return part.text;
      })
      .join('');
  } else if (role !== 'assistant') {
    throw new ApiError(
      'missing_required_parameter',
      `${at}.content is required for ${m.role} messages.`,
      `${at}.content`,
    );
  }
  return { role, content, ...(m.name !== undefined ? { name: m.name } : {}) };
}

/** max_completion_tokens is the current name, max_tokens the deprecated one; both must agree. */
function requestedMax(body: ChatCompletionRequest): {
  requested: number | null;
  param: 'max_tokens' | 'max_completion_tokens';
} {
  const a = body.max_completion_tokens ?? null;
  const b = body.max_tokens ?? null;
  if (a !== null && b !== null && a !== b) {
    throw new ApiError(
      'invalid_value',
      "'max_tokens' and 'max_completion_tokens' disagree; send only one.",
      'max_tokens',
    );
  }
  return a !== null
    ? { requested: a, param: 'max_completion_tokens' }
    : { requested: b, param: 'max_tokens' };
}

/** null = no logprobs; else the number of alternatives per token. */
function requestedTopLogprobs(body: ChatCompletionRequest): number | null {
  const top = body.top_logprobs ?? null;
  if (body.logprobs !== true) {
    if (top !== null)
      throw new ApiError('invalid_value', "'top_logprobs' requires 'logprobs' to be true.", 'top_logprobs');
    return null;
  }
  return top ?? 0;
}

export function registerChatRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post<{ Body: ChatCompletionRequest }>(
    '/v1/chat/completions',
    {
      schema: { body: ChatCompletionRequest },
      onRequest: ctx.requireApiKey,
      ...unknownFieldsHooks(ctx, ChatCompletionRequest, 'chat_completions'),
    },
    async (request, reply) => {
      const body = request.body;
      const services = ctx.ready();
      const { engine, chat } = services;
      checkModel(body.model, engine.modelId);
      rejectUnsupported(body);
      const { stream, includeUsage } = streamFlags(body);
      const topLogprobs = requestedTopLogprobs(body);
      const { requested, param } = requestedMax(body);
      const messages = body.messages.map(readMessage);
      checkPromptBytes(
        messages.map((m) => m.content),
        services.maxPromptBytes,
        engine.spec.maxPositions,
        'messages',
      );
      return runGeneration(
        ctx,
        services,
        request,
        reply,
        { endpoint: 'chat_completions', interventions: body.interventions ?? [] },
        async () => {
          const rendered = chat.render(messages);
          const promptIds = await services.encoder.encodeSegments(rendered.segments, {
            addSpecialTokens: rendered.addSpecialTokens,
          });
          if (promptIds.length === 0)
            throw new ApiError('invalid_value', "'messages' render to an empty prompt.", 'messages');
          const maxTokens = completionBudget({
            promptTokens: promptIds.length,
            maxPositions: engine.spec.maxPositions,
            requested,
            // OpenAI's chat default: as long as the context allows.
            defaultMax: Infinity,
            promptParam: 'messages',
            maxParam: param,
          });
          return {
            requestedModel: body.model,
            promptIds,
            params: samplingParams(body, maxTokens, topLogprobs ?? 0, engine.spec.vocabSize),
            n: choiceCount(body.n, ctx.maxN),
            stream,
            includeUsage,
            shape: chatShape({
              id: `chatcmpl-${request.id}`,
              created: Math.floor(Date.now() / 1000),
              model: engine.modelId,
              includeUsage,
              confidence: body.confidence === true,
              topLogprobs,
              tokenText: (id) => engine.tokenizer.tokenText(id),
              tokenBytes: (id) => engine.tokenizer.tokenBytes(id),
            }),
          };
        },
      );
    },
  );
}
