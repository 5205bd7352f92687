// One generation request from admission to the last byte, shared by /v1/completions and
// /v1/chat/completions (they differ only in how they read the prompt and spell the result,
// see openai-format.ts). In order: the request's own interventions are registered under its id,
// a scheduler slot is awaited (or 429), the engine generates with the registry consulted before
// every step (so interventions added or removed meanwhile act from the next token), tokens go
// to telemetry and, when streaming, to the client; at the end, however it ends, the slot and the
// request's interventions are released.

import type { FastifyReply, FastifyRequest } from 'fastify';
import { InvalidInputError } from '../../errors.ts';
import type { GeneratedToken, GenerationSummary, SamplingParams } from '../../runtime/types.ts';
import { ApiError, toApiError } from '../errors.ts';
import { QueueFullError, type Release } from '../scheduler.ts';
import type { RequestIntervention } from '../schemas.ts';
import type { Endpoint } from '../telemetry/index.ts';
import { auditIntervention } from './audit.ts';
import type { ReadyServices, ServerContext } from './context.ts';
import { openAIFinishReason, type ChoiceResult, type ResponseShape, type Usage } from './openai-format.ts';
import { choiceParams } from './openai-params.ts';
import { SseStream } from './sse.ts';

/**
 * Abort reasons: the client hung up, the server is shutting down and the grace period ran out, or
 * a streaming client read nothing for the idle limit.
 */
export const CLIENT_GONE = Symbol('client gone');
export const SHUTDOWN = Symbol('shutdown');
export const STALLED = Symbol('stalled');

/** Seconds a client refused for a full queue is told to wait (Retry-After). */
const RETRY_AFTER_S = 1;

export interface GenerationPlan {
  endpoint: Endpoint;
  /** The model name the client sent (the span's gen_ai.request.model). */
  requestedModel: string;
  promptIds: number[];
  params: SamplingParams;
  /** Choices (OpenAI n); choice i runs with choiceParams(params, i). */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  interventions: RequestIntervention[];
  shape: ResponseShape;
}

/** What admission needs, known before the prompt is tokenized. */
export type Admission = Pick<GenerationPlan, 'endpoint' | 'interventions'>;

/**
 * Admission first: the request-scoped checks, the request's interventions and a scheduler slot
 * (or 429) come before `prepare` tokenizes the prompt, so a full server refuses a large prompt at
 * once instead of after tokenizing it.
 */
export async function runGeneration(
  ctx: ServerContext,
  services: ReadyServices,
  request: FastifyRequest,
  reply: FastifyReply,
  admission: Admission,
  prepare: () => Promise<Omit<GenerationPlan, keyof Admission>>,
): Promise<unknown> {
  const requestId = request.id;
  // Request-scoped interventions registered through the admin API bind to an id the admin chose;
  // only a request carrying the admin token may claim them, or anyone who learns the id could.
  if (services.registry.list().some((iv) => iv.requestId === requestId) && !ctx.isAdmin(request.headers)) {
    throw new ApiError(
      'permission_denied',
      'Interventions are registered for this X-Request-Id; only a request with the admin token may claim them.',
    );
  }
  if (ctx.generations.has(requestId)) {
    throw new ApiError(
      'request_id_in_use',
      `A generation with X-Request-Id "${requestId}" is still running; request ids scope interventions, so each must be unique.`,
    );
  }
  const controller = new AbortController();
  ctx.generations.set(requestId, controller);
  // 'close' also fires after a response completes; only one that closes unfinished is a hang-up.
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort(CLIENT_GONE);
  };
  reply.raw.on('close', onClose);
  let release: Release | null = null;
  try {
    registerRequestInterventions(services, request, admission.interventions);
    const queuedAt = performance.now();
    try {
      release = await ctx.scheduler.acquire(controller.signal);
    } catch (e) {
      if (e === SHUTDOWN) {
        throw new ApiError('server_shutting_down', 'The server shut down before this request was started.');
      }
      if (!(e instanceof QueueFullError)) {
        // Counted and logged: a queue that clients give up on is a capacity problem to see.
        services.telemetry.requestRejected(admission.endpoint, 'abandoned_in_queue');
        request.log.info({ waited_ms: Math.round(performance.now() - queuedAt) }, 'client left while queued');
        return clientGone(reply);
      }
      throw new ApiError(
        'rate_limit_exceeded',
        `The server is at capacity (${e.running} generation(s) running, ${e.waiting} queued). Please retry after a brief wait.`,
        null,
        { 'retry-after': String(RETRY_AFTER_S) },
      );
    }
    const plan: GenerationPlan = { ...admission, ...(await prepare()) };
    if (controller.signal.aborted) return clientGone(reply);
    return await generate(services, request, reply, plan, controller, ctx.streamIdleTimeoutMs);
  } finally {
    release?.();
    for (const iv of services.registry.clearRequest(requestId)) {
      auditIntervention(request.log, 'delete', iv, 'request', request.ip);
    }
    ctx.generations.delete(requestId);
    reply.raw.off('close', onClose);
  }
}

function registerRequestInterventions(
  services: ReadyServices,
  request: FastifyRequest,
  list: RequestIntervention[],
): void {
  list.forEach((spec, i) => {
    try {
      const iv = services.registry.add({
        neuron: spec.neuron,
        neurons: spec.neurons,
        mode: spec.mode,
        value: spec.value,
        requestId: request.id,
        source: 'request',
      });
      auditIntervention(request.log, 'create', iv, 'request', request.ip);
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      const param = `interventions[${i}]${e.param ? `.${e.param}` : ''}`;
      throw new ApiError('invalid_value', `Invalid intervention ${param}: ${e.message}`, param);
    }
  });
}

/** A client that hung up gets nothing; 499 (nginx's "client closed request") goes to the log. */
function clientGone(reply: FastifyReply): FastifyReply {
  return reply.code(499).send();
}

/**
 * Runs the n choices as n sequences through the engine, concurrently (their steps interleave in the
 * worker). Each prefills the prompt itself: sharing one prefill and its cache awaits the batched
 * worker. One scheduler slot covers the whole request.
 */
async function generate(
  { engine, registry, telemetry }: ReadyServices,
  request: FastifyRequest,
  reply: FastifyReply,
  plan: GenerationPlan,
  controller: AbortController,
  idleTimeoutMs: number,
): Promise<unknown> {
  const { signal } = controller;
  const requestId = request.id;
  const started = performance.now();
  const rt = telemetry.requestStarted({
    requestId,
    model: plan.requestedModel,
    endpoint: plan.endpoint,
    params: {
      max_tokens: plan.params.maxTokens,
      temperature: plan.params.temperature,
      top_p: plan.params.topP,
      top_k: plan.params.topK,
      stream: plan.stream,
      seed: plan.params.seed ?? null,
      stop: plan.params.stop,
      top_logprobs: plan.params.topLogprobs,
    },
    promptTokens: plan.promptIds.length,
    interventions: registry.liveFor(requestId).map((iv) => iv.id),
    headers: request.headers,
  });
  if (rt.traceId) request.log = reply.log = request.log.child({ trace_id: rt.traceId });

  // A failing choice stops its siblings.
  const inner = new AbortController();
  const stopAll = () => inner.abort(signal.reason);
  if (signal.aborted) stopAll();
  else signal.addEventListener('abort', stopAll, { once: true });
  const tokens: GeneratedToken[][] = Array.from({ length: plan.n }, () => []);
  let sse: SseStream | null = null;
  const summaries: GenerationSummary[] = [];
  // Confidence targets keep per-request state: the session feeds each token's record to them (with
  // n > 1 the choices share one controller, fed by all of them).
  const session = registry.session(requestId);
  try {
    const runs = tokens.map((_, i) =>
      engine.generate({
        promptIds: plan.promptIds,
        params: choiceParams(plan.params, i),
        interventions: () => session.interventions(),
        lockstep: () => session.feedback,
        signal: inner.signal,
      }),
    );
    // The first step of every choice runs before any header goes out, so a failure at the start
    // (a prompt the engine refuses) still gets its own HTTP status instead of an error event.
    const first = await settleAll(runs.map((r) => r.next()), inner);
    if (plan.stream && !signal.aborted) {
      sse = new SseStream(reply);
      for (let i = 0; i < plan.n; i++) {
        const opening = plan.shape.opening(i);
        if (opening) sse.send(opening);
      }
    }
    const drive = async (i: number): Promise<GenerationSummary> => {
      let step = first[i]!;
      while (!step.done) {
        session.observe(step.value);
        rt.token(step.value);
        tokens[i]!.push(step.value);
        sse?.send(plan.shape.token(step.value, i));
        // Backpressure: while the client is not reading, the next token is not asked for, so the
        // engine pauses this sequence and memory holds at most the socket's buffers. A client that
        // reads nothing for the idle limit is given up on.
        if (sse && !(await sse.writable(idleTimeoutMs)) && !signal.aborted) {
          request.log.info({ idle_ms: idleTimeoutMs }, 'streaming client stopped reading; generation aborted');
          controller.abort(STALLED);
        }
        step = await runs[i]!.next();
      }
      const s = step.value;
      if (sse && s.finishReason !== 'abort') {
        if (s.trailingText) sse.send(plan.shape.text(s.trailingText, i));
        sse.send(plan.shape.finish(openAIFinishReason(s.finishReason), i));
      }
      return s;
    };
    summaries.push(...(await settleAll(tokens.map((_, i) => drive(i)), inner)));
  } catch (err) {
    rt.end(partialSummary(plan, tokens.flat(), started), 'error', err as Error);
    if (!sse) throw err;
    const apiError = toApiError(err);
    request.log.error({ err }, 'generation failed after the stream started');
    sse.fail(apiError);
    return reply;
  } finally {
    signal.removeEventListener('abort', stopAll);
  }

  const summary = mergeSummaries(summaries);
  if (summary.finishReason === 'abort') {
    rt.end(summary, 'aborted');
    if (signal.reason === SHUTDOWN) {
      const e = new ApiError(
        'server_shutting_down',
        'The server is shutting down; the generation was stopped.',
      );
      if (!sse) throw e;
      sse.fail(e);
      return reply;
    }
    if (signal.reason === STALLED) reply.raw.destroy();
    return sse ? reply : clientGone(reply);
  }
  rt.end(summary, 'success');
  // OpenAI counts the prompt once however many choices; completion tokens are summed.
  const usage: Usage = {
    prompt_tokens: summary.promptTokens,
    completion_tokens: summary.completionTokens,
    total_tokens: summary.promptTokens + summary.completionTokens,
  };
  if (!sse) {
    const choices: ChoiceResult[] = summaries.map((s, i) => ({
      tokens: tokens[i]!,
      text: s.text,
      reason: openAIFinishReason(s.finishReason),
    }));
    return plan.shape.complete(choices, usage);
  }
  if (plan.includeUsage) sse.send(plan.shape.usage(usage));
  sse.done();
  return reply;
}

/** Like Promise.all, but the first failure aborts the siblings and is rethrown once they settle. */
async function settleAll<T>(promises: Promise<T>[], inner: AbortController): Promise<T[]> {
  const guarded = promises.map((p) =>
    p.catch((e: unknown) => {
      inner.abort(e);
      throw e;
    }),
  );
  const results = await Promise.allSettled(guarded);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** The request's summary for telemetry: one prompt, the choices' tokens summed, abort if any aborted. */
function mergeSummaries(list: GenerationSummary[]): GenerationSummary {
  if (list.length === 1) return list[0]!;
  const completion = list.reduce((a, s) => a + s.completionTokens, 0);
  const durationS = Math.max(...list.map((s) => s.durationS));
  const ttfts = list.map((s) => s.timeToFirstTokenS).filter((t): t is number => t !== null);
  return {
    promptTokens: list[0]!.promptTokens,
    completionTokens: completion,
    finishReason: list.some((s) => s.finishReason === 'abort') ? 'abort' : list[0]!.finishReason,
    text: list[0]!.text,
    durationS,
    tokensPerS: list.reduce((a, s) => a + s.tokensPerS, 0),
    timeToFirstTokenS: ttfts.length ? Math.min(...ttfts) : null,
    trailingText: '',
  };
}

/** What telemetry learns of a generation the engine failed in the middle of. */
function partialSummary(plan: GenerationPlan, tokens: GeneratedToken[], started: number): GenerationSummary {
  return {
    promptTokens: plan.promptIds.length,
    completionTokens: tokens.length,
    finishReason: 'abort',
    text: tokens.map((t) => t.text).join(''),
    durationS: (performance.now() - started) / 1000,
    tokensPerS: 0,
    timeToFirstTokenS: null,
    trailingText: '',
  };
}
