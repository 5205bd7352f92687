// OpenTelemetry tracing: one SERVER span per generation request, named and attributed after the
// GenAI semantic conventions, plus confidence summary attributes of our own (`confidence.*`).
//
// Tracing is off unless the standard OTEL_* variables ask for it, so a plain `serve` opens no
// exporter connections. When they do, the OpenTelemetry Node SDK is started with traces only (no
// OTel metrics — Prometheus serves those — and no logs), and it reads the rest of the standard
// variables itself: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / _PROTOCOL / _HEADERS, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, ...

import {
  ROOT_CONTEXT,
  SpanKind,
  context,
  propagation,
  SpanStatusCode,
  isSpanContextValid,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

export const TRACER_NAME = 'confidence-sidecar';
export const PROVIDER_NAME = 'confidence-sidecar';

type Env = Record<string, string | undefined>;

function envFlag(value: string | undefined): boolean {
  return value !== undefined && value.trim().toLowerCase() === 'true';
}

function envList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
}

/**
 * True when the environment asks for trace export: an OTLP endpoint is configured or
 * OTEL_TRACES_EXPORTER names an exporter. OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none win.
 */
export function tracingRequested(env: Env = process.env): boolean {
  if (envFlag(env.OTEL_SDK_DISABLED)) return false;
  const exporters = envList(env.OTEL_TRACES_EXPORTER);
  if (exporters.includes('none')) return false;
  if (exporters.length > 0) return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

interface TracingHandle {
  shutdown(): Promise<void>;
}

// The SDK registers process-wide globals (tracer provider, context manager), so it is started once
// and shared; each Telemetry holds a reference and the last one to close flushes and shuts it down.
let shared: { handle: Promise<TracingHandle | null>; refs: number } | null = null;

async function startNodeSdk(env: Env): Promise<TracingHandle> {
  // Loaded only when tracing is on: the SDK pulls in exporters that a plain serve never needs.
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const sdk = new NodeSDK({
    // OTEL_SERVICE_NAME (read by the SDK's env detector) takes precedence when set.
    serviceName: env.OTEL_SERVICE_NAME ? undefined : 'confidence-sidecar',
    instrumentations: [],
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  return {
    shutdown: async () => {
      await sdk.shutdown();
      // The SDK leaves its globals registered; clearing them lets a later start (a restarted server
      // in the same process) register afresh instead of failing as a duplicate registration.
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}

/**
 * The tracer requests use. It is the API's global proxy: a no-op until a tracer provider is registered
 * (by acquireTracingFromEnv, or by an embedding application), then it delegates to that provider.
 */
export function globalTracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

/**
 * Starts trace export in the background when the environment asks for it and returns true; returns
 * false (and starts nothing) otherwise. Spans begun before the SDK has loaded are not recorded.
 * Every `true` must be paired with one releaseTracing().
 */
export function acquireTracingFromEnv(
  env: Env = process.env,
  onError: (e: unknown) => void = () => {},
): boolean {
  if (!tracingRequested(env)) return false;
  shared ??= {
    handle: startNodeSdk(env).catch((e: unknown) => {
      onError(e);
      return null;
    }),
    refs: 0,
  };
  shared.refs++;
  return true;
}

/** Resolves true once the SDK started by acquireTracingFromEnv exports spans; false if none is running. */
export async function tracingStarted(): Promise<boolean> {
  return shared ? (await shared.handle) !== null : false;
}

/** Drops one reference; the last one flushes pending spans and shuts the SDK down. */
export async function releaseTracing(): Promise<void> {
  if (!shared) return;
  shared.refs--;
  if (shared.refs > 0) return;
  const { handle } = shared;
  shared = null;
  await (await handle)?.shutdown();
}

const headerGetter: TextMapGetter<Record<string, string | string[] | undefined>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    // Node lower-cases incoming header names; callers passing their own object may not have.
    const direct = carrier[key];
    if (direct !== undefined) return direct;
    const found = Object.keys(carrier).find((k) => k.toLowerCase() === key);
    return found === undefined ? undefined : carrier[found];
  },
};

const w3c = new W3CTraceContextPropagator();

/** The parent context carried by an incoming W3C `traceparent` (and `tracestate`) header, if any. */
export function parentContext(headers: Record<string, string | string[] | undefined> | undefined): Context {
  if (!headers) return ROOT_CONTEXT;
  return w3c.extract(ROOT_CONTEXT, headers, headerGetter);
}

export function startRequestSpan(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  parent: Context,
): Span {
  return tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
}

/** The trace id to print in log lines: null when neither we nor the caller is tracing. */
export function traceIdOf(span: Span): string | null {
  const sc = span.spanContext();
  return isSpanContextValid(sc) ? sc.traceId : null;
}

export function endSpanWithError(span: Span, error: Error | undefined): void {
  span.setAttribute('error.type', error?.name ?? 'Error');
  if (error) span.recordException(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error?.message });
  span.end();
}
