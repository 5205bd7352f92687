// buildProxyServer: the sidecar in proxy mode. Every /v1/ request is relayed to the upstream
// (relay.ts); POST /v1/chat/completions and /v1/completions are also scored by the local model in
// the shadow (shadow.ts) when it is loaded. The sidecar's own routes stay its own: /healthz,
// /readyz (relay readiness, with whether scoring is live), /metrics, /v1/neurons and the monitor
// WebSocket, made from the same pieces serve mode uses (src/server). Fail-open: while the model
// loads, or if it never does, traffic flows unscored.

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Tracer } from '@opentelemetry/api';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { Pool } from 'undici';
import type { ServerEngine, ServerTelemetry } from '../server/app.ts';
import { makeTokenCheck } from '../server/auth.ts';
import { ChatFormatter } from '../server/chat-template.ts';
import { ApiError, toApiError } from '../server/errors.ts';
import type { ServerContext } from '../server/routes/context.ts';
import { registerNeuronRoutes } from '../server/routes/neurons.ts';
import { probeLogLevel } from '../server/routes/health.ts';
import { RouteMethods, unroutedError } from '../server/route-methods.ts';
import { registerConsoleRoutes } from '../server/routes/console.ts';
import { globalTracer } from '../server/telemetry/tracing.ts';
import { TokenIndex } from './aligner.ts';
import { ProxyMetrics } from './metrics.ts';
import { relay, type Timeouts } from './relay.ts';
import { ShadowScorer, type RecordListener, type ShadowRequest } from './shadow.ts';
import { bodyTap } from './tap.ts';

/** Defaults of the timeout flags (docs/PROXY.md explains each). */
export const DEFAULT_TIMEOUTS: Timeouts = {
  connectMs: 10_000,
  firstByteMs: 120_000,
  idleMs: 60_000,
  totalMs: 600_000,
};

export interface ProxyServerOptions {
  /** Base URL of the upstream (its /v1/... paths are appended as the client sent them). */
  upstream: string;
  /** The local model for shadow scoring; null = relay only. A rejected promise = scoring off (logged). */
  engine: Promise<ServerEngine> | null;
  /** Made once the engine has loaded; serve mode's Telemetry (its registry labels series mode="shadow"). */
  telemetry: (engine: ServerEngine) => ServerTelemetry;
  timeouts?: Partial<Timeouts>;
  /** Sent upstream as `Authorization: Bearer ...` in place of the client's (null = pass the client's). */
  upstreamApiKey?: string | null;
  /** Bearer token the monitor stream requires; null/absent = open. */
  adminToken?: string | null;
  maxPendingTokens?: number;
  /** Upstream connections kept (default: unlimited, reused keep-alive). */
  connections?: number | null;
  bodyLimit?: number;
  logger?: FastifyServerOptions['logger'] | FastifyBaseLogger;
  tracer?: Tracer;
  /** On close, how long relays in flight may finish before the upstream connections are cut (default 10 s). */
  shutdownGraceMs?: number;
  onRecord?: RecordListener;
  onFinished?: (requestId: string) => void;
}

export type ScoringState = 'disabled' | 'loading' | 'live' | 'failed';

declare module 'fastify' {
  interface FastifyInstance {
    /** Proxy mode only: settles with the scoring state once the model has loaded or failed. */
    scoringReady?: Promise<ScoringState>;
  }
}

const SCORED: Record<string, 'chat_completions' | 'completions'> = {
  '/v1/chat/completions': 'chat_completions',
  '/v1/completions': 'completions',
};
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const isLogger = (l: unknown): l is FastifyBaseLogger =>
  typeof l === 'object' && l !== null && typeof (l as FastifyBaseLogger).child === 'function';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function specialText(engine: ServerEngine, id: number | null): string | null {
  if (id === null) return null;
  return engine.tokenizer.specialTokens.find((t) => t.id === id)?.content ?? engine.tokenizer.tokenText(id);
}

export function buildProxyServer(opts: ProxyServerOptions): FastifyInstance {
  const upstream = new URL(opts.upstream);
  const timeouts: Timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
  const logging = isLogger(opts.logger) ? { loggerInstance: opts.logger } : { logger: opts.logger ?? false };
  const app = Fastify({
    ...logging,
    bodyLimit: opts.bodyLimit ?? 16 * 1024 * 1024,
    genReqId: (req: IncomingMessage) => {
      const sent = req.headers['x-request-id'];
      return typeof sent === 'string' && CLIENT_REQUEST_ID.test(sent) ? sent : randomUUID();
    },
    return503OnClosing: false,
  }) as unknown as FastifyInstance;
  // A known path with the wrong method is 405 with Allow, as in serve mode (route-methods.ts).
  const routeMethods = new RouteMethods();
  app.addHook('onRoute', (route) => routeMethods.add(route.method, route.url));

  const metrics = new ProxyMetrics();
  const pool = new Pool(upstream.origin, {
    connect: { timeout: timeouts.connectMs },
    connections: opts.connections ?? null,
    keepAliveTimeout: 30_000,
  });
  const deps = {
    pool,
    upstream,
    timeouts,
    metrics,
    tracer: opts.tracer ?? globalTracer(),
    apiKey: opts.upstreamApiKey ?? null,
  };

  let state: ScoringState = opts.engine ? 'loading' : 'disabled';
  let loadError: string | null = null;
  let scorer: ShadowScorer | null = null;
  let telemetry: ServerTelemetry | null = null;
  let engine: ServerEngine | null = null;
  let closing = false;
  let inFlight = 0;
  const adminCheck = makeTokenCheck(opts.adminToken ?? null);

  const load = async (): Promise<ScoringState> => {
    if (!opts.engine) return 'disabled';
    try {
      const e = await opts.engine;
      if (closing) return 'disabled';
      const t = opts.telemetry(e);
      const chat = new ChatFormatter({
        chatTemplate: e.tokenizer.chatTemplate,
        bosToken: specialText(e, e.tokenizer.bosTokenId),
        eosToken: specialText(e, e.tokenizer.eosTokenId),
      });
      const tok = {
        encode: e.encode.bind(e),
        tokenBytes: (id: number) => e.tokenizer.tokenBytes(id),
        vocabSize: e.spec.vocabSize,
      };
      scorer = new ShadowScorer(
        { engine: e, telemetry: t, chat, index: new TokenIndex(tok) },
        {
          metrics,
          log: app.log,
          ...(opts.maxPendingTokens ? { maxPendingTokens: opts.maxPendingTokens } : {}),
          ...(opts.onRecord ? { onRecord: opts.onRecord } : {}),
          ...(opts.onFinished ? { onFinished: opts.onFinished } : {}),
        },
      );
      t.attachWebSocket?.(app.server, (req) =>
        adminCheck(req.headers, new URL(req.url ?? '/', 'http://localhost').searchParams.get('token')),
      );
      telemetry = t;
      engine = e;
      app.log.info({ model: e.modelId, upstream: upstream.origin }, 'shadow scoring live');
      return (state = 'live');
    } catch (err) {
      loadError = (err as Error).message;
      app.log.error({ err }, 'the local model failed to load: relaying unscored (fail-open)');
      return (state = 'failed');
    }
  };
  app.decorate('scoringReady', load());

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err, request, reply) => {
    const e = toApiError(err);
    request.log.info({ error: { code: e.code, message: e.message } }, 'request refused');
    return reply.code(e.status).headers(e.headers).send(e.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    const e = unroutedError(routeMethods, request.method, request.url.split('?')[0]!);
    return reply.code(e.status).headers(e.headers).send(e.toBody());
  });

  const logLevel = probeLogLevel(app.log.level);
  app.get('/healthz', { logLevel }, async () => ({ status: 'ok' }));
  app.get('/readyz', { logLevel }, async (_request, reply) => {
    const scoring = {
      state,
      ...(loadError ? { error: loadError } : {}),
      ...(engine ? { model: engine.modelId } : {}),
    };
    if (closing) return reply.code(503).send({ status: 'not_ready', reason: 'shutting down', scoring });
    return { status: 'ready', upstream: upstream.origin, scoring };
  });
  app.get('/metrics', { logLevel }, async (_request, reply) => {
    const own = await metrics.registry.metrics();
    const shadow = telemetry?.registry ? await telemetry.registry.metrics() : '';
    return reply.type(metrics.registry.contentType).send(own + shadow);
  });

  // The operator console: in proxy mode its prompt box goes upstream like any client, the live feed
  // and the catalogue work, and its intervention controls get the 409 below.
  registerConsoleRoutes(app);

  // /v1/neurons is serve mode's route on the local model; it reads only ready() and requireApiKey.
  registerNeuronRoutes(app, {
    ready: () => {
      if (!engine)
        throw new ApiError('model_not_ready', `Shadow scoring is ${state}; the local model is not loaded.`);
      return { engine };
    },
    requireApiKey: async () => undefined,
  } as unknown as ServerContext);

  const noInterventions = async () => {
    throw new ApiError(
      'interventions_unavailable',
      "Proxy mode: interventions act on the local model's neurons, and the tokens come from the upstream model, whose neurons the sidecar cannot reach.",
    );
  };
  app.all('/v1/interventions', noInterventions);
  app.all('/v1/interventions/*', noInterventions);

  app.all('/v1/*', async (request, reply) => {
    const arrivedMs = performance.now();
    const path = request.url.split('?')[0]!;
    const endpoint = request.method === 'POST' ? SCORED[path] : undefined;
    const body = Buffer.isBuffer(request.body) ? request.body : null;
    let shadow: ShadowRequest | null = null;
    if (endpoint && body) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        parsed = undefined; // the upstream answers an invalid body; nothing to score
      }
      const obj = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : null;
      if (obj && obj.interventions !== undefined) {
        throw new ApiError(
          'interventions_not_supported',
          "Proxy mode: 'interventions' cannot apply, the upstream model generates the tokens and the sidecar cannot reach its neurons.",
          'interventions',
        );
      }
      try {
        if (obj && scorer)
          shadow = scorer.start({ requestId: request.id, endpoint, body: obj, headers: request.headers });
      } catch (err) {
        request.log.warn({ err }, 'shadow scoring could not start; relaying unscored');
      }
    }
    const headers = { ...request.headers };
    if (!headers['x-request-id']) headers['x-request-id'] = request.id;
    let status = 0;
    reply.hijack();
    inFlight++;
    try {
      const outcome = await relay(
        deps,
        {
          method: request.method,
          url: request.url,
          headers,
          body,
          arrivedMs,
          log: request.log,
          ...(shadow?.rt.span ? { span: shadow.rt.span } : {}),
          ...(shadow
            ? {
                tap: (s, h) => {
                  status = s;
                  return bodyTap(
                    shadow!,
                    String(h['content-type'] ?? ''),
                    h['content-encoding'] as string | undefined,
                  );
                },
              }
            : {}),
        },
        reply.raw,
      );
      if (shadow) {
        const done =
          outcome === 'aborted' ? shadow.abort() : shadow.finish(status >= 400 ? 'error' : outcome);
        done.catch((err) => request.log.warn({ err }, 'shadow scoring failed'));
      }
    } finally {
      inFlight--;
    }
  });

  app.addHook('preClose', async () => {
    closing = true;
    const deadline = Date.now() + (opts.shutdownGraceMs ?? 10_000);
    while (inFlight > 0 && Date.now() < deadline) await sleep(25);
    await pool.destroy();
    await telemetry?.close?.();
    setTimeout(() => app.server.closeAllConnections(), 1000).unref();
  });
  app.addHook('onClose', async () => {
    if (!pool.destroyed) await pool.destroy();
  });
  return app;
}
