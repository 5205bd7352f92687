// POST /v1/completions: OpenAI's legacy text completion. The prompt is text or token ids (one
// prompt per request; n choices of it), the result text plus `logprobs: N` in the legacy shape;
// echo prepends the prompt, with its logprobs from a teacher-forced pass (engine.score).

import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.ts';
import { CompletionRequest } from '../schemas.ts';
import type { PromptEncoder } from '../tokenize/prompt-encoder.ts';
import type { ServerContext, ServerEngine } from './context.ts';
import { runGeneration } from './generation.ts';
import { unknownFieldsHooks } from './unknown-fields.ts';
import { completionShape } from './openai-format.ts';
import {
  checkModel,
  choiceCount,
  checkPromptBytes,
  completionBudget,
  rejectUnsupported,
  samplingParams,
  streamFlags,
} from './openai-params.ts';

/** OpenAI's default max_tokens for completions. */
const DEFAULT_MAX_TOKENS = 16;

interface Prompt {
  ids: number[];
  /** The prompt as text (text_offset in logprobs counts from its start). */
  text: string;
}

function onlyOne<T>(list: T[]): T {
  if (list.length > 1) {
    throw new ApiError(
      'unsupported_parameter',
      'Only one prompt per request is supported (send one request per prompt; n gives several choices of one).',
      'prompt',
    );
  }
  return list[0]!;
}

/** The prompt's text, or null when it is given as token ids; one prompt only. */
function promptText(prompt: CompletionRequest['prompt']): string | null {
  if (typeof prompt === 'string') return prompt;
  return typeof prompt[0] === 'string' ? onlyOne(prompt as string[]) : null;
}

async function readPrompt(
  prompt: CompletionRequest['prompt'],
  text: string | null,
  engine: ServerEngine,
  encoder: PromptEncoder,
): Promise<Prompt> {
  let ids: number[];
  if (text !== null) {
    // A completion prompt is the model's input verbatim: special tokens in it are meant.
    ids = await encoder.encode(text, { addSpecialTokens: true });
  } else {
    ids = typeof prompt[0] === 'number' ? (prompt as number[]) : onlyOne(prompt as number[][]);
    const { vocabSize } = engine.spec;
    const bad = ids.find((id) => id >= vocabSize);
    if (bad !== undefined) {
      throw new ApiError(
        'invalid_value',
        `Token id ${bad} in 'prompt' is outside the vocabulary (0..${vocabSize - 1}).`,
        'prompt',
      );
    }
  }
  if (ids.length === 0) {
    // OpenAI reads an empty prompt as the start of a document, i.e. the BOS token.
    const bos = engine.spec.bosTokenId;
    if (bos === null)
      throw new ApiError(
        'invalid_value',
        "'prompt' is empty and this model has no BOS token to start from.",
        'prompt',
      );
    ids = [bos];
  }
  return { ids, text: text ?? engine.decode(ids) };
}

export function registerCompletionRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post<{ Body: CompletionRequest }>(
    '/v1/completions',
    {
      schema: { body: CompletionRequest },
      onRequest: ctx.requireApiKey,
      ...unknownFieldsHooks(ctx, CompletionRequest, 'completions'),
    },
    async (request, reply) => {
      const body = request.body;
      const services = ctx.ready();
      const { engine } = services;
      checkModel(body.model, engine.modelId);
      rejectUnsupported(body);
      const { stream, includeUsage } = streamFlags(body);
      const text = promptText(body.prompt);
      if (text === null)
        onlyOne(typeof body.prompt[0] === 'number' ? [body.prompt] : (body.prompt as number[][]));
      else checkPromptBytes([text], services.maxPromptBytes, engine.spec.maxPositions, 'prompt');
      const logprobs = body.logprobs ?? null;
      return runGeneration(
        ctx,
        services,
        request,
        reply,
        { endpoint: 'completions', interventions: body.interventions ?? [] },
        async () => {
          const prompt = await readPrompt(body.prompt, text, engine, services.encoder);
          const maxTokens = completionBudget({
            promptTokens: prompt.ids.length,
            maxPositions: engine.spec.maxPositions,
            requested: body.max_tokens ?? null,
            defaultMax: DEFAULT_MAX_TOKENS,
            promptParam: 'prompt',
            maxParam: 'max_tokens',
          });
          const echo = body.echo === true ? await echoPrompt(engine, prompt.ids, logprobs !== null) : null;
          return {
            requestedModel: body.model,
            promptIds: prompt.ids,
            params: samplingParams(body, maxTokens, logprobs ?? 0, engine.spec.vocabSize),
            n: choiceCount(body.n, ctx.maxN),
            stream,
            includeUsage,
            shape: completionShape({
              id: `cmpl-${request.id}`,
              created: Math.floor(Date.now() / 1000),
              model: engine.modelId,
              includeUsage,
              confidence: body.confidence === true,
              logprobs,
              promptText: prompt.text,
              echo,
              tokenText: (id) => engine.tokenizer.tokenText(id),
            }),
          };
        },
      );
    },
  );
}

/** The prompt to echo, with each token's logprob under the model when logprobs are asked. */
async function echoPrompt(
  engine: ServerEngine,
  ids: number[],
  withLogprobs: boolean,
): Promise<{ ids: number[]; logprobs: (number | null)[] }> {
  if (!withLogprobs) return { ids, logprobs: ids.map(() => null) };
  // Position p predicts ids[p + 1]; the first token has no prediction (OpenAI reports null).
  const scored = await engine.score(ids);
  return { ids, logprobs: ids.map((_, k) => (k === 0 ? null : scored[k - 1]!.nextLogprob)) };
}
