// Probes and metrics. /healthz: the process answers (liveness; 200 even while the model loads, so
// a slow load is not mistaken for a hang). /readyz: the model is loaded and the server is not
// shutting down (readiness: send traffic). /metrics: Prometheus text from the telemetry registry.
// The probes require no token (kubelets send none). /metrics carries the neuron catalogue in its
// labels, which /v1/neurons guards with the API key, so it is never more open than that: it takes
// --metrics-token when set, else the API key when set, else it is open.

import type { FastifyInstance, LogLevel } from 'fastify';
import type { ServerContext } from './context.ts';

const SEVERITY: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: 100 };

/**
 * The log level of probe and scrape requests: kubelets probe every few seconds and Prometheus
 * scrapes every 15 s, so at info their request lines would be most of the log. They show at debug
 * and trace; otherwise only their warnings and errors do (never more than the server's own level).
 */
export function probeLogLevel(serverLevel: string): LogLevel {
  const s = SEVERITY[serverLevel] ?? SEVERITY.info!;
  if (s <= SEVERITY.debug!) return serverLevel as LogLevel;
  return (s > SEVERITY.warn! ? serverLevel : 'warn') as LogLevel;
}

export function registerHealthRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const logLevel = probeLogLevel(app.log.level);
  app.get('/healthz', { logLevel }, async () => ({ status: 'ok' }));

  app.get('/readyz', { logLevel }, async (_request, reply) => {
    try {
      const { engine } = ctx.ready();
      return { status: 'ready', model: engine.modelId };
    } catch (e) {
      return reply.code(503).send({ status: 'not_ready', reason: (e as Error).message });
    }
  });

  app.get('/metrics', { onRequest: ctx.requireMetrics, logLevel }, async (_request, reply) => {
    const registry = ctx.telemetry()?.registry;
    if (!registry)
      return reply
        .code(503)
        .type('text/plain')
        .send('# metrics are not available until the model is loaded\n');
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
