// serve(): the sidecar as a process. Listens at once (so /healthz answers while a large model
// loads; /readyz turns 200 when it is loaded), logs JSON lines to stdout, and on SIGINT/SIGTERM
// shuts down gracefully: stop taking work, let generations finish for the grace period, close the
// telemetry and the engine. Resolves when it has shut down; rejects if the model failed to load.

import type { Catalogue } from '../monitor/catalogue.ts';
import type { InterventionRegistry } from '../monitor/interventions.ts';
import { buildServer, type ServerEngine } from './app.ts';
import { runUntilStopped } from './lifecycle.ts';
import { startInterventionSources, type InterventionSourcesOptions } from './interventions-state.ts';
import type { UnknownFields } from './routes/context.ts';
import { Telemetry } from './telemetry/index.ts';

export interface LoadedModel {
  engine: ServerEngine;
  /** Bound to the model's last layer (and its calibration means, for mean_ablate). */
  registry: InterventionRegistry;
  /** The catalogue the watched set came from (GET /v1/neurons shows its scores and provenance). */
  catalogue?: Catalogue | null;
}

export interface ServeOptions extends InterventionSourcesOptions {
  host: string;
  port: number;
  /** Loads the model; runs while the server already listens. */
  load: () => Promise<LoadedModel>;
  /** Default: $CONFIDENCE_SIDECAR_ADMIN_TOKEN; unset = the interventions API is open. */
  adminToken?: string | null;
  /** Default: $CONFIDENCE_SIDECAR_API_KEY; unset = the inference routes are open. */
  apiKey?: string | null;
  /** Default: $CONFIDENCE_SIDECAR_METRICS_TOKEN; unset = /metrics takes the API key, if any. */
  metricsToken?: string | null;
  /** A streaming client that reads nothing this long is dropped (default 30 s). */
  streamIdleTimeoutMs?: number;
  maxConcurrency: number;
  maxQueue: number;
  /** The most choices (n) per request; default DEFAULT_MAX_N. */
  maxN?: number;
  /** Unknown request fields: refused (default) or dropped with a warning. */
  unknownFields?: UnknownFields;
  /** pino level (default "info"). */
  logLevel?: string;
  /** On shutdown, how long generations in flight may finish (default 10 s). */
  shutdownGraceMs?: number;
  /** Called once listening, with the base URL (port 0 picks a free port). */
  onListening?: (url: string) => void;
  /** Shuts the server down when aborted, like a signal (for embedding and tests). */
  signal?: AbortSignal;
  env?: Record<string, string | undefined>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** An empty variable counts as unset: `FOO= cmd` must not mean "the token is the empty string". */
function secret(option: string | null | undefined, env: string | undefined): string | null {
  if (option !== undefined) return option;
  return env ? env : null;
}

export async function serve(opts: ServeOptions): Promise<void> {
  const env = opts.env ?? process.env;
  const adminToken = secret(opts.adminToken, env.CONFIDENCE_SIDECAR_ADMIN_TOKEN);
  const apiKey = secret(opts.apiKey, env.CONFIDENCE_SIDECAR_API_KEY);
  const metricsToken = secret(opts.metricsToken, env.CONFIDENCE_SIDECAR_METRICS_TOKEN);

  let loadedModel: LoadedModel | null = null;
  let sources = null as { close(): Promise<void> } | null;
  // The file and the saved state are applied before the model counts as loaded (readyz).
  const loaded = opts.load().then(async (m) => {
    sources = await startInterventionSources(m.registry, app.log, opts);
    return (loadedModel = m);
  });
  const app = buildServer({
    engine: loaded.then((m) => m.engine),
    // Called once the engine has loaded, so loadedModel is set.
    registry: () => loadedModel!.registry,
    catalogue: () => loadedModel!.catalogue ?? null,
    telemetry: (e) =>
      new Telemetry({
        model: e.modelId,
        entropyNeurons: e.catalogue.entropy,
        frequencyNeurons: e.catalogue.frequency,
        logger: app.log,
        ...(e.replica ? { replica: e.replica } : {}),
      }),
    adminToken,
    apiKey,
    metricsToken,
    ...(opts.streamIdleTimeoutMs !== undefined ? { streamIdleTimeoutMs: opts.streamIdleTimeoutMs } : {}),
    maxConcurrency: opts.maxConcurrency,
    maxQueue: opts.maxQueue,
    ...(opts.maxN !== undefined ? { maxN: opts.maxN } : {}),
    ...(opts.unknownFields !== undefined ? { unknownFields: opts.unknownFields } : {}),
    logger: { level: opts.logLevel ?? 'info' },
    ...(opts.shutdownGraceMs !== undefined ? { shutdownGraceMs: opts.shutdownGraceMs } : {}),
  });

  if (!adminToken && !LOOPBACK.has(opts.host)) {
    app.log.warn(
      { host: opts.host },
      'no admin token (CONFIDENCE_SIDECAR_ADMIN_TOKEN): anyone who can reach this address can change neuron interventions',
    );
  }

  await runUntilStopped(
    app,
    { host: opts.host, port: opts.port, signal: opts.signal, onListening: opts.onListening, failure: app.modelReady, what: 'the server' },
    async () => {
      await sources?.close();
      // A model still loading (listen failed early) is closed once it is up, not leaked.
      await loaded.then(
        (m) => m.engine.close(),
        () => undefined,
      );
    },
  );
}
