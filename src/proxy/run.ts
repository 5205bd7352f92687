// runProxy(): the sidecar in proxy mode as a process. It listens and relays at once (the local
// model loads in the background; until it is up, or if it never comes up, traffic flows
// unscored), logs JSON lines, and on SIGINT/SIGTERM lets relays in flight finish for the grace
// period, then closes the upstream pool, the telemetry and the engine.

import type { ServerEngine } from '../server/app.ts';
import { runUntilStopped } from '../server/lifecycle.ts';
import { buildProxyServer, type ProxyServerOptions } from './app.ts';
import { shadowTelemetry } from './telemetry.ts';

export interface RunProxyOptions extends Pick<
  ProxyServerOptions,
  'upstream' | 'timeouts' | 'upstreamApiKey' | 'maxPendingTokens' | 'shutdownGraceMs'
> {
  host: string;
  port: number;
  /** Loads the local model; null = relay only. */
  load: (() => Promise<ServerEngine>) | null;
  adminToken?: string | null;
  logLevel?: string;
  onListening?: (url: string) => void;
  signal?: AbortSignal;
}

export async function runProxy(opts: RunProxyOptions): Promise<void> {
  const engine = opts.load ? opts.load() : null;
  // A failed load is reported by the app (fail-open); it must not become an unhandled rejection.
  engine?.catch(() => undefined);
  const app = buildProxyServer({
    upstream: opts.upstream,
    engine,
    telemetry: (e) => shadowTelemetry(e, app.log),
    adminToken: opts.adminToken ?? null,
    logger: { level: opts.logLevel ?? 'info' },
    ...(opts.timeouts ? { timeouts: opts.timeouts } : {}),
    ...(opts.upstreamApiKey ? { upstreamApiKey: opts.upstreamApiKey } : {}),
    ...(opts.maxPendingTokens ? { maxPendingTokens: opts.maxPendingTokens } : {}),
    ...(opts.shutdownGraceMs !== undefined ? { shutdownGraceMs: opts.shutdownGraceMs } : {}),
  });
  await runUntilStopped(app, { ...opts, what: 'the proxy' }, async () => {
    await engine?.then(
      (e) => e.close(),
      () => undefined,
    );
  });
}
