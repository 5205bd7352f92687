// The sidecar's live telemetry behind one object: Prometheus metrics (`registry`, served on /metrics),
// the WebSocket monitor stream (GET /v1/monitor/stream) and OpenTelemetry request spans.
// The HTTP layer calls it at the points of a request's life; nothing here blocks generation.

import type { IncomingMessage, Server } from 'node:http';
import type { Tracer } from '@opentelemetry/api';
import { Registry } from 'prom-client';
import type { EngineStepStats, ReplicaInfo } from '../../runtime/types.ts';
import type { StoredIntervention } from '../../monitor/interventions.ts';
import { interventionEvent } from './events.ts';
import { createMetrics, initialiseSeries, type SidecarMetrics } from './metrics.ts';
import {
  LiveRequest,
  type Clock,
  type Endpoint,
  type RequestDeps,
  type RequestTelemetry,
} from './request-telemetry.ts';
import {
  acquireTracingFromEnv,
  globalTracer,
  parentContext,
  PROVIDER_NAME,
  releaseTracing,
  startRequestSpan,
} from './tracing.ts';
import { WsHub } from './ws-hub.ts';

export type { Endpoint, RequestTelemetry, RequestOutcome, Clock } from './request-telemetry.ts';
export { MONITOR_STREAM_PATH } from './ws-hub.ts';
export { METRIC_DEFINITIONS, METRIC_NAMES } from './metrics.ts';

export interface RequestContext {
  requestId: string;
  /** The model the client asked for (span name, gen_ai.request.model). Metrics use the served id. */
  model: string;
  endpoint: Endpoint;
  params: { max_tokens: number; temperature: number; top_p: number; stream: boolean; [k: string]: unknown };
  promptTokens: number;
  /** Ids of the interventions active at the start. */
  interventions: string[];
  /** Incoming request headers, for a W3C traceparent. */
  headers?: Record<string, string | string[] | undefined>;
}

export interface TelemetryOptions {
  /** The served model id: the `model` label of every metric and the `model` of every event. */
  model: string;
  /** Catalogued neuron addresses (`LAYER.INDEX`); the only values the `neuron` label takes. */
  entropyNeurons: string[];
  frequencyNeurons: string[];
  /** Events each WebSocket subscriber may have queued before the oldest are dropped (default 1024). */
  wsBufferSize?: number;
  logger?: { info(obj: object, msg?: string): void };
  /** Socket bytes in flight above which a subscriber's events queue (default 256 KiB). */
  wsHighWaterMarkBytes?: number;
  /** WebSocket ping interval in ms; 0 disables (default 30 s). */
  wsHeartbeatMs?: number;
  /**
   * The tracer for request spans. When absent, trace export starts from the OTEL_* environment
   * (see tracing.ts) and spans go to the global tracer provider (a no-op when nothing is configured).
   */
  tracer?: Tracer;
  /** Environment consulted for OTEL_* when no tracer is given (default process.env). */
  env?: Record<string, string | undefined>;
  /** What the engine runs, published as llm_model_info (absent for engines that do not say). */
  replica?: ReplicaInfo;
  clock?: Clock;
}

const OPERATION: Record<Endpoint, string> = { completions: 'text_completion', chat_completions: 'chat' };

const systemClock: Clock = { monotonicMs: () => performance.now(), epochMs: () => Date.now() };

export class Telemetry {
  /** A dedicated registry: only the sidecar's own metrics, no default process collectors. */
  readonly registry = new Registry();
  private readonly metrics: SidecarMetrics;
  private readonly hub: WsHub;
  private readonly deps: RequestDeps;
  private readonly tracer: Tracer;
  private readonly ownsTracing: boolean;
  private readonly liveInterventions = new Set<string>();
  /** Once the caller reports the intervention count itself, that count is authoritative. */
  private closed = false;

  constructor(private readonly opts: TelemetryOptions) {
    const model = opts.model;
    this.metrics = createMetrics(this.registry);
    initialiseSeries(this.metrics, model);
    if (opts.replica) {
      const { source, dtype, quantizeLastLayer, provider } = opts.replica;
      this.metrics.modelInfo.set({ model, source, dtype, quantize_last_layer: String(quantizeLastLayer), provider }, 1);
    }
    const clock = opts.clock ?? systemClock;
    this.hub = new WsHub({
      bufferSize: opts.wsBufferSize ?? 1024,
      highWaterMarkBytes: opts.wsHighWaterMarkBytes ?? 256 * 1024,
      heartbeatMs: opts.wsHeartbeatMs ?? 30_000,
      onSubscriberCount: (n) => this.metrics.wsSubscribers.set({ model }, n),
      onDropped: (n) => this.metrics.wsEventsDropped.inc({ model }, n),
      now: clock.epochMs,
      ...(opts.logger ? { log: (fields: object, msg: string) => opts.logger!.info(fields, msg) } : {}),
    });
    this.deps = {
      metrics: this.metrics,
      hub: this.hub,
      clock,
      model,
      entropyNeurons: [...new Set(opts.entropyNeurons)],
      frequencyNeurons: [...new Set(opts.frequencyNeurons)],
    };
    if (opts.tracer) {
      this.tracer = opts.tracer;
      this.ownsTracing = false;
    } else {
      this.tracer = globalTracer();
      this.ownsTracing = acquireTracingFromEnv(opts.env ?? process.env, (e) =>
        opts.logger?.info({ err: e }, 'OpenTelemetry tracing failed to start; continuing without traces'),
      );
      if (this.ownsTracing)
        opts.logger?.info({ tracing: 'otlp' }, 'OpenTelemetry trace export enabled from OTEL_* environment');
    }
  }

  /** One engine batch step: batch size, KV cache bytes, step count. */
  engineStep(s: EngineStepStats): void {
    const model = this.opts.model;
    this.metrics.engineBatchSize.observe({ model }, s.batch);
    this.metrics.engineKvCacheBytes.set({ model }, s.kvBytes);
    this.metrics.engineSteps.inc({ model });
  }

  setQueue(running: number, waiting: number): void {
    this.metrics.running.set({ model: this.opts.model }, running);
    this.metrics.waiting.set({ model: this.opts.model }, waiting);
  }

  /** Unknown fields a request carried and the server dropped (--unknown-fields ignore). */
  fieldsIgnored(endpoint: Endpoint, count: number): void {
    this.metrics.ignoredFields.inc({ model: this.opts.model, endpoint }, count);
  }

  /** A request refused before generation (no span, no events): counts it by endpoint and outcome. */
  requestRejected(
    endpoint: Endpoint,
    outcome: 'rejected_queue_full' | 'invalid' | 'unauthorized' | 'abandoned_in_queue',
  ): void {
    this.metrics.requests.inc({ model: this.opts.model, endpoint, outcome });
  }

  requestStarted(ctx: RequestContext): RequestTelemetry {
    const model = this.opts.model;
    const operation = OPERATION[ctx.endpoint];
    const span = startRequestSpan(
      this.tracer,
      `${operation} ${ctx.model}`,
      {
        'gen_ai.operation.name': operation,
        'gen_ai.provider.name': PROVIDER_NAME,
        'gen_ai.request.model': ctx.model,
        'gen_ai.request.max_tokens': ctx.params.max_tokens,
        'gen_ai.request.temperature': ctx.params.temperature,
        'gen_ai.request.top_p': ctx.params.top_p,
        'confidence.request.stream': ctx.params.stream,
      },
      parentContext(ctx.headers),
    );
    // Prompt tokens count at admission: prefill is the first work done, whatever the outcome.
    this.metrics.promptTokens.inc({ model }, ctx.promptTokens);
    const live = new LiveRequest(this.deps, ctx.requestId, ctx.endpoint, span, ctx.interventions);
    this.hub.publish({
      type: 'request_start',
      request_id: ctx.requestId,
      model,
      params: ctx.params,
      ts: this.deps.clock.epochMs(),
    });
    return live;
  }

  interventionChanged(kind: 'created' | 'removed' | 'expired', iv: StoredIntervention): void {
    if (kind === 'created') this.liveInterventions.add(iv.id);
    else this.liveInterventions.delete(iv.id);
    this.metrics.interventionsActive.set({ model: this.opts.model }, this.liveInterventions.size);
    this.hub.publish(interventionEvent(kind, this.opts.model, iv, this.deps.clock.epochMs()));
  }

  /** Serves GET /v1/monitor/stream upgrades on `server`; `authorize` returning false answers 401. */
  attachWebSocket(server: Server, authorize?: (req: IncomingMessage) => boolean): void {
    this.hub.attach(server, authorize);
  }

  /** Closes monitor subscriptions and, if this object started trace export, flushes it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.hub.close();
    if (this.ownsTracing) await releaseTracing();
  }
}
