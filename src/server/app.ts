// buildServer: the fastify instance of the sidecar's HTTP API, with nothing listening yet.
// The engine may still be loading (a promise): /healthz answers at once, /readyz and every model
// route answer 503 until it is loaded, and the registry and telemetry, which need the model's
// shape, are made then (pass factories) or given ready-made.

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyServerOptions,
  type onRequestHookHandler,
} from 'fastify';
import type { Catalogue } from '../monitor/catalogue.ts';
import type { InterventionRegistry, StoredIntervention } from '../monitor/interventions.ts';
import { makeTokenCheck } from './auth.ts';
import { ChatFormatter } from './chat-template.ts';
import { ApiError, toApiError } from './errors.ts';
import { expireOnTime } from './expiry.ts';
import { answerExpectation, clientErrorHandler, refuseSocket, serveUpgradeAsRequest } from './http-edge.ts';
import { REDACTED_LOG_PATHS, serializeRequest } from './redact.ts';
import { auditIntervention } from './routes/audit.ts';
import { registerChatRoutes } from './routes/chat.ts';
import { registerCompletionRoutes } from './routes/completions.ts';
import { RouteMethods, unroutedError } from './route-methods.ts';
import { registerConsoleRoutes } from './routes/console.ts';
import type { ReadyServices, ServerContext, ServerEngine, ServerTelemetry, UnknownFields } from './routes/context.ts';
import { DEFAULT_MAX_N } from './routes/openai-params.ts';
import { SHUTDOWN } from './routes/generation.ts';
import { registerHealthRoutes } from './routes/health.ts';
import { registerInterventionRoutes } from './routes/interventions.ts';
import { registerModelRoutes } from './routes/models.ts';
import { registerNeuronRoutes } from './routes/neurons.ts';
import { Scheduler } from './scheduler.ts';
import { createPromptEncoder } from './tokenize/prompt-encoder.ts';
import { MONITOR_STREAM_PATH, type Endpoint } from './telemetry/index.ts';

export type { ServerEngine, ServerTelemetry } from './routes/context.ts';

/** A ready instance, or how to make one from the loaded engine. */
export type FromEngine<T> = T | ((engine: ServerEngine) => T);

export interface BuildServerOptions {
  engine: ServerEngine | Promise<ServerEngine>;
  registry: FromEngine<InterventionRegistry>;
  /** The catalogue behind the watched set (its scores and provenance, for /v1/neurons). */
  catalogue?: FromEngine<Catalogue | null>;
  /** Closed with the server (its WebSocket subscribers would otherwise keep the server open). */
  telemetry: FromEngine<ServerTelemetry>;
  /** Bearer token the interventions API and the monitor stream require; null/absent = open. */
  adminToken?: string | null;
  /** Bearer token the inference routes (/v1/models, completions, chat, neurons) require; null/absent = open. */
  apiKey?: string | null;
  maxConcurrency: number;
  maxQueue: number;
  /** fastify logger options (true, {level}, {stream}) or a pino-compatible logger; default off. */
  logger?: FastifyServerOptions['logger'] | FastifyBaseLogger;
  /** Largest accepted request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** On close, how long generations in flight may finish before they are aborted (default 10 s). */
  shutdownGraceMs?: number;
  /** The most choices (n) per request (default DEFAULT_MAX_N). */
  maxN?: number;
  /** Unknown request fields: 'reject' (default, a 400 naming the field) or 'ignore' (warn, count, drop). */
  unknownFields?: UnknownFields;
  /**
   * Bearer token /metrics requires. Absent: /metrics takes the API key when one is set (it
   * carries the neuron catalogue, as /v1/neurons does), and is open when neither is set.
   */
  metricsToken?: string | null;
  /**
   * A streaming client that reads nothing for this long is dropped and its generation aborted
   * (default 30 s); meanwhile its sequence is not decoded further.
   */
  streamIdleTimeoutMs?: number;
  /** Tokenizer worker threads (default 1); 0 tokenizes on the main thread. */
  tokenizerWorkers?: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Settles when the model is loaded and every route can serve; rejects if loading failed. */
    modelReady: Promise<void>;
  }
}

/** Ids we echo and embed in response ids: reject anything that could garble a header or a log. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** After the generations have ended, how long their last bytes get before connections are dropped. */
const FINAL_FLUSH_MS = 1000;
/** How long aborted generations get to finish their current step. */
const ABORT_WAIT_MS = 5000;
/** How often shutdown checks whether the generations in flight have ended. */
const DRAIN_POLL_MS = 25;

/** How much a tokenizer's normalizer may shrink text, at most (see maxPromptBytes). */
const NORMALIZER_SLACK = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for the generations in flight to end; after graceMs aborts them and waits for that. */
async function drainGenerations(generations: Map<string, AbortController>, graceMs: number): Promise<void> {
  const deadline = Date.now() + graceMs;
  while (generations.size > 0 && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
  for (const c of generations.values()) c.abort(SHUTDOWN);
  // An aborted generation ends within one engine step; a step that hangs must not hang shutdown.
  const stepDeadline = Date.now() + ABORT_WAIT_MS;
  while (generations.size > 0 && Date.now() < stepDeadline) await sleep(DRAIN_POLL_MS);
}

const GENERATION_ENDPOINTS: Record<string, Endpoint> = {
  '/v1/completions': 'completions',
  '/v1/chat/completions': 'chat_completions',
};

function isLogger(l: unknown): l is FastifyBaseLogger {
  return typeof l === 'object' && l !== null && typeof (l as FastifyBaseLogger).child === 'function';
}

/** fastify logger options with credentials redacted and request URLs bounded. */
function loggerOptions(logger: BuildServerOptions['logger']): Record<string, unknown> {
  if (isLogger(logger)) return { loggerInstance: logger };
  if (!logger) return { logger: false };
  const given = logger === true ? {} : (logger as Record<string, unknown>);
  return {
    logger: {
      ...given,
      redact: { paths: REDACTED_LOG_PATHS, censor: '[REDACTED]' },
      serializers: { req: serializeRequest, ...((given.serializers as object) ?? {}) },
    },
  };
}

const resolve = <T>(v: FromEngine<T>, engine: ServerEngine): T =>
  typeof v === 'function' ? (v as (e: ServerEngine) => T)(engine) : v;

/** The special token's text for templates that write {{ bos_token }}. */
function specialText(engine: ServerEngine, id: number | null): string | null {
  if (id === null) return null;
  return engine.tokenizer.specialTokens.find((t) => t.id === id)?.content ?? engine.tokenizer.tokenText(id);
}

/** Which refusal a rejected generation request counts as in the requests metric. */
function rejection(e: ApiError): 'unauthorized' | 'rejected_queue_full' | 'invalid' | null {
  if (e.status === 401) return 'unauthorized';
  if (e.status === 429) return 'rejected_queue_full';
  return e.status < 500 ? 'invalid' : null;
}

export function buildServer(opts: BuildServerOptions): FastifyInstance {
  const app = Fastify({
    ...loggerOptions(opts.logger),
    // Node's parser errors (bad Content-Length, 431, ...) and router errors (bad percent-encoding)
    // answer in the error shape like every other refusal.
    clientErrorHandler,
    frameworkErrors: (err, request, reply) => {
      const e = toApiError(err);
      request.log.info({ error: { code: e.code, message: e.message } }, 'request refused');
      void (reply as FastifyReply).code(e.status).headers(e.headers).send(e.toBody());
    },
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    genReqId: (req: IncomingMessage) => {
      const sent = req.headers['x-request-id'];
      return typeof sent === 'string' && CLIENT_REQUEST_ID.test(sent) ? sent : randomUUID();
    },
    logController: new LogController({ requestIdLogLabel: 'request_id' }),
    // fastify's own 503 while closing is not in OpenAI's shape; ctx.ready() answers instead.
    return503OnClosing: false,
    ajv: {
      customOptions: {
        // fastify's defaults drop unknown properties and coerce "5" to 5; an OpenAI-compatible API
        // must refuse both, as OpenAI does, so a typo never passes as a default.
        removeAdditional: false,
        coerceTypes: false,
        useDefaults: false,
        allErrors: false,
      },
    },
  }) as unknown as FastifyInstance;
  // Before any route is registered: the not-found handler answers 405 for known paths from it.
  const routeMethods = new RouteMethods();
  app.addHook('onRoute', (route) => routeMethods.add(route.method, route.url));

  let services: ReadyServices | null = null;
  let loadError: Error | null = null;
  let closing = false;
  let flushTimer: NodeJS.Timeout | undefined;
  let unwire: (() => void) | null = null;
  let hubAttached = false;

  const scheduler = new Scheduler({
    maxConcurrency: opts.maxConcurrency,
    maxQueue: opts.maxQueue,
    onChange: (running, waiting) => services?.telemetry.setQueue(running, waiting),
  });

  const bearer = (secret: string | null, what: string): onRequestHookHandler => {
    const check = makeTokenCheck(secret);
    return async (request, reply) => {
      if (check(request.headers)) return;
      reply.header('www-authenticate', 'Bearer');
      throw new ApiError(
        'invalid_api_key',
        `Missing or incorrect ${what}: send it as "Authorization: Bearer <token>".`,
      );
    };
  };
  const adminCheck = makeTokenCheck(opts.adminToken ?? null);
  // The admin token is a superset of the API key: an operator may call the inference routes with it
  // (and must, to claim request-scoped interventions it registered; see routes/generation.ts).
  const apiKeyCheck = makeTokenCheck(opts.apiKey ?? null);
  const metricsSecret = opts.metricsToken ?? opts.apiKey ?? null;

  const ctx: ServerContext = {
    ready() {
      if (closing) throw new ApiError('server_shutting_down', 'The server is shutting down.');
      if (services) return services;
      if (loadError) throw new ApiError('model_not_ready', `The model failed to load: ${loadError.message}`);
      throw new ApiError('model_not_ready', 'The model is still loading; retry shortly.', null, {
        'retry-after': '1',
      });
    },
    telemetry: () => services?.telemetry ?? null,
    scheduler,
    generations: new Map(),
    requireApiKey: async (request, reply) => {
      if (apiKeyCheck(request.headers) || (opts.adminToken && adminCheck(request.headers))) return;
      reply.header('www-authenticate', 'Bearer');
      throw new ApiError(
        'invalid_api_key',
        'Missing or incorrect API key: send it as "Authorization: Bearer <token>".',
      );
    },
    requireAdmin: bearer(opts.adminToken ?? null, 'admin token'),
    maxN: opts.maxN ?? DEFAULT_MAX_N,
    unknownFields: opts.unknownFields ?? 'reject',
    requireMetrics: bearer(metricsSecret, opts.metricsToken ? 'metrics token' : 'API key'),
    isAdmin: (headers) => (opts.adminToken ? adminCheck(headers) : true),
    streamIdleTimeoutMs: opts.streamIdleTimeoutMs ?? 30_000,
  };

  /** Registry changes reach telemetry (metrics gauge, monitor stream) whoever made them. */
  const wireRegistry = (registry: InterventionRegistry, telemetry: ServerTelemetry) => {
    const created = (iv: StoredIntervention) => telemetry.interventionChanged('created', iv);
    const removed = (iv: StoredIntervention) => telemetry.interventionChanged('removed', iv);
    const expired = (iv: StoredIntervention) => {
      telemetry.interventionChanged('expired', iv);
      auditIntervention(app.log, 'expire', iv, 'ttl', null);
    };
    registry.on('created', created).on('removed', removed).on('expired', expired);
    const stopExpiry = expireOnTime(registry);
    return () => {
      stopExpiry();
      registry.off('created', created).off('removed', removed).off('expired', expired);
    };
  };

  const load = async (): Promise<void> => {
    const engine = await opts.engine;
    // Closed while loading: nothing may be started for a server that is gone.
    if (closing) throw new Error('the server closed before the model finished loading');
    const registry = resolve(opts.registry, engine);
    const telemetry = resolve(opts.telemetry, engine);
    const chat = new ChatFormatter({
      chatTemplate: engine.tokenizer.chatTemplate,
      bosToken: specialText(engine, engine.tokenizer.bosTokenId),
      eosToken: specialText(engine, engine.tokenizer.eosTokenId),
    });
    const unwireRegistry = wireRegistry(registry, telemetry);
    // Engine batch metrics (batch size, KV bytes, steps) straight from the engine's step events.
    const offStep = engine.onStep?.((st) => telemetry.engineStep?.(st));
    unwire = () => {
      unwireRegistry();
      offStep?.();
    };
    // Browsers cannot set headers on a WebSocket upgrade, so the admin token may come as ?token=.
    if (telemetry.attachWebSocket) {
      // The hub's listener takes over upgrades (and serves the non-monitor ones as plain requests).
      app.server.off('upgrade', earlyUpgrade);
      hubAttached = true;
      telemetry.attachWebSocket(app.server, (req) =>
        adminCheck(req.headers, new URL(req.url ?? '/', 'http://localhost').searchParams.get('token')),
      );
    }
    telemetry.setQueue(scheduler.running, scheduler.waiting);
    const encoder = createPromptEncoder(engine, opts.tokenizerWorkers ?? 1);
    // Every token stands for at most maxTokenBytes bytes of text; normalizers can shrink text
    // (NFKC folds a 3-byte fullwidth letter to 1 byte), hence the slack. The vocabulary scan
    // runs on the first prompt long enough to need it.
    let limit: number | null = null;
    const maxPromptBytes = () => {
      const longest = (limit ??= engine.tokenizer.maxTokenBytes?.() ?? Infinity);
      return longest * engine.spec.maxPositions * NORMALIZER_SLACK;
    };
    const catalogue = opts.catalogue === undefined ? null : resolve(opts.catalogue, engine);
    services = { engine, registry, telemetry, chat, catalogue, encoder, maxPromptBytes };
    app.log.info({ model: engine.modelId, catalogue: engine.catalogue }, 'model ready');
  };
  const modelReady = load().catch((e: Error) => {
    loadError = e;
    throw e;
  });
  // Callers learn of a failed load from modelReady or /readyz; it must not crash the process here.
  modelReady.catch(() => undefined);
  app.decorate('modelReady', modelReady);

  // Until the hub is attached (the model is loading; or a telemetry without a monitor stream),
  // upgrades are answered here: the monitor stream says why it cannot open, every other path is
  // served as the plain HTTP request it also is.
  const earlyUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== MONITOR_STREAM_PATH) return serveUpgradeAsRequest(app.server, req, socket, head);
    socket.on('error', () => socket.destroy());
    try {
      ctx.ready();
      refuseSocket(socket, new ApiError('route_not_found', 'This server has no monitor stream.'));
    } catch (e) {
      refuseSocket(socket, toApiError(e));
    }
  };
  app.server.on('upgrade', earlyUpgrade);
  // Node answers an Expect it cannot meet with a bare 417.
  app.server.on('checkExpectation', answerExpectation);

  // The API speaks JSON only; fastify's default text/plain parser would let a string through.
  app.removeContentTypeParser('text/plain');

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  app.setErrorHandler((err, request, reply) => {
    const e = toApiError(err);
    if (e.code === 'internal_error') request.log.error({ err }, 'request failed');
    else request.log.info({ error: { code: e.code, param: e.param, message: e.message } }, 'request refused');
    const endpoint = GENERATION_ENDPOINTS[request.routeOptions.url ?? ''];
    const outcome = rejection(e);
    if (endpoint && outcome) ctx.telemetry()?.requestRejected(endpoint, outcome);
    return reply.code(e.status).headers(e.headers).send(e.toBody());
  });

  app.setNotFoundHandler((request, reply) => {
    const e = unroutedError(routeMethods, request.method, request.url.split('?')[0]!);
    return reply.code(e.status).headers(e.headers).send(e.toBody());
  });

  // Without an upgrade the monitor stream path is an HTTP GET: say what it needs (or why not yet).
  app.get(MONITOR_STREAM_PATH, async () => {
    ctx.ready();
    if (!hubAttached) throw new ApiError('route_not_found', 'This server has no monitor stream.');
    throw new ApiError(
      'upgrade_required',
      'GET /v1/monitor/stream is a WebSocket: send an Upgrade handshake.',
      null,
      {
        upgrade: 'websocket',
      },
    );
  });
  registerHealthRoutes(app, ctx);
  registerConsoleRoutes(app);
  registerModelRoutes(app, ctx);
  registerNeuronRoutes(app, ctx);
  registerCompletionRoutes(app, ctx);
  registerChatRoutes(app, ctx);
  registerInterventionRoutes(app, ctx);

  // Closing: refuse new work at once (readyz 503 takes the pod out of rotation) and let the
  // generations in flight finish for the grace period, then abort them so close() cannot hang on
  // a long one. Telemetry closes next: its WebSocket subscribers would otherwise hold the server
  // open. A moment later, whatever connections remain (a client may open one ahead of use, which
  // server.close() would wait on indefinitely) are dropped.
  app.addHook('preClose', async () => {
    closing = true;
    await drainGenerations(ctx.generations, opts.shutdownGraceMs ?? 10_000);
    await services?.telemetry.close?.();
    flushTimer = setTimeout(() => app.server.closeAllConnections(), FINAL_FLUSH_MS);
    flushTimer.unref();
  });
  // A keep-alive connection whose response finishes after close() began would otherwise sit idle
  // until keepAliveTimeout (72 s) before server.close() completes: end it with its response.
  app.addHook('onResponse', async (request) => {
    if (closing) request.raw.socket?.end();
  });
  app.addHook('onClose', async () => {
    clearTimeout(flushTimer);
    unwire?.();
    await services?.encoder.close();
  });

  return app;
}
