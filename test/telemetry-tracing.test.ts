// OpenTelemetry spans of the Telemetry class: names, kind and GenAI attributes checked on an
// in-memory exporter, W3C traceparent continuation, error status, the OTEL_* switch, and one real
// OTLP/HTTP export to a local collector stand-in started from the environment alone.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import type { GeneratedToken } from '../src/runtime/types.ts';
import { Telemetry, type RequestContext } from '../src/server/telemetry/index.ts';
import { tracingRequested, tracingStarted } from '../src/server/telemetry/tracing.ts';
import { seededRandom, syntheticSummary, syntheticToken } from './helpers/telemetry-traffic.ts';

const ENTROPY = ['11.584'];
const FREQUENCY: string[] = [];

function setup() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const telemetry = new Telemetry({
    model: 'gpt2',
    entropyNeurons: ENTROPY,
    frequencyNeurons: FREQUENCY,
    tracer: provider.getTracer('test'),
  });
  return { exporter, provider, telemetry };
}

function ctx(over: Partial<RequestContext> = {}): RequestContext {
  return {
    requestId: 'req-42',
    model: 'gpt2-alias',
    endpoint: 'completions',
    params: { max_tokens: 32, temperature: 0.8, top_p: 0.95, stream: false },
    promptTokens: 9,
    interventions: ['iv-start'],
    ...over,
  };
}

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0)) await f();
});

describe('request spans', () => {
  it('names a completion span after the operation and model and summarises confidence', async () => {
    const { exporter, provider, telemetry } = setup();
    cleanup.push(
      () => telemetry.close(),
      () => provider.shutdown(),
    );
    const rand = seededRandom(11);
    const tokens: GeneratedToken[] = [];
    const r = telemetry.requestStarted(ctx());
    for (let i = 0; i < 6; i++) {
      const t = syntheticToken(i, rand, {
        entropyNeurons: ENTROPY,
        frequencyNeurons: FREQUENCY,
        interventions: i >= 4 ? ['iv-late'] : [],
      });
      tokens.push(t);
      r.token(t);
    }
    r.end(syntheticSummary(9, 6, 'length'), 'success');

    const [span] = exporter.getFinishedSpans();
    expect(exporter.getFinishedSpans()).toHaveLength(1);
    expect(span.name).toBe('text_completion gpt2-alias');
    expect(span.kind).toBe(SpanKind.SERVER);
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(r.traceId).toBe(span.spanContext().traceId);
    expect(span.parentSpanContext).toBeUndefined();

    const entropies = tokens.map((t) => t.entropy);
    const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const a = span.attributes;
    expect(a).toMatchObject({
      'gen_ai.operation.name': 'text_completion',
      'gen_ai.provider.name': 'confidence-sidecar',
      'gen_ai.request.model': 'gpt2-alias',
      'gen_ai.request.max_tokens': 32,
      'gen_ai.request.temperature': 0.8,
      'gen_ai.request.top_p': 0.95,
      'gen_ai.response.id': 'req-42',
      'gen_ai.response.model': 'gpt2',
      'gen_ai.response.finish_reasons': ['length'],
      'gen_ai.usage.input_tokens': 9,
      'gen_ai.usage.output_tokens': 6,
      'confidence.tokens': 6,
      'confidence.intervened_tokens': 2,
      'confidence.interventions.active': 2,
      'confidence.interventions.ids': ['iv-start', 'iv-late'],
      'confidence.entropy.max': Math.max(...entropies),
    });
    expect(a['confidence.entropy.mean']).toBeCloseTo(meanOf(entropies), 12);
    expect(a['confidence.top1_prob.mean']).toBeCloseTo(meanOf(tokens.map((t) => t.top1Prob)), 12);
    expect(a['confidence.norm_scale.mean']).toBeCloseTo(meanOf(tokens.map((t) => t.normScale)), 12);
    expect(a['confidence.unigram_kl.mean']).toBeCloseTo(meanOf(tokens.map((t) => t.unigramKl!)), 12);
  });

  it('continues an incoming W3C traceparent and names chat spans "chat {model}"', async () => {
    const { exporter, provider, telemetry } = setup();
    cleanup.push(
      () => telemetry.close(),
      () => provider.shutdown(),
    );
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentId = '00f067aa0ba902b7';
    const r = telemetry.requestStarted(
      ctx({
        endpoint: 'chat_completions',
        headers: { traceparent: `00-${traceId}-${parentId}-01`, tracestate: 'vendor=x' },
      }),
    );
    expect(r.traceId).toBe(traceId);
    r.end(syntheticSummary(9, 0, 'stop'), 'aborted');
    const [span] = exporter.getFinishedSpans();
    expect(span.name).toBe('chat gpt2-alias');
    expect(span.attributes['gen_ai.operation.name']).toBe('chat');
    expect(span.spanContext().traceId).toBe(traceId);
    expect(span.parentSpanContext?.spanId).toBe(parentId);
    expect(span.parentSpanContext?.isRemote).toBe(true);
    expect(span.spanContext().traceState?.get('vendor')).toBe('x');
    // An abort is the client's doing, not a server error.
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(span.attributes['confidence.tokens']).toBe(0);
    expect(span.attributes['confidence.entropy.mean']).toBeUndefined();
  });

  it('ignores a malformed traceparent and starts a new trace', async () => {
    const { exporter, provider, telemetry } = setup();
    cleanup.push(
      () => telemetry.close(),
      () => provider.shutdown(),
    );
    const r = telemetry.requestStarted(ctx({ headers: { traceparent: 'garbage' } }));
    r.end(syntheticSummary(9, 0), 'success');
    const [span] = exporter.getFinishedSpans();
    expect(span.parentSpanContext).toBeUndefined();
    expect(r.traceId).toMatch(/^[0-9a-f]{32}$/);
  });

  it('marks failed requests with ERROR status, error.type and the exception', async () => {
    const { exporter, provider, telemetry } = setup();
    cleanup.push(
      () => telemetry.close(),
      () => provider.shutdown(),
    );
    const r = telemetry.requestStarted(ctx());
    class EngineCrash extends Error {
      override name = 'EngineCrash';
    }
    r.end(syntheticSummary(9, 0, 'abort'), 'error', new EngineCrash('onnx session died'));
    const [span] = exporter.getFinishedSpans();
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'onnx session died' });
    expect(span.attributes['error.type']).toBe('EngineCrash');
    expect(span.events.map((e) => e.name)).toEqual(['exception']);
    expect(span.events[0].attributes?.['exception.message']).toBe('onnx session died');
  });

  it('gives no trace id when nothing traces (no tracer, no OTEL_* variables, no traceparent)', async () => {
    const telemetry = new Telemetry({ model: 'gpt2', entropyNeurons: [], frequencyNeurons: [], env: {} });
    cleanup.push(() => telemetry.close());
    const r = telemetry.requestStarted(ctx());
    expect(r.traceId).toBeNull();
    r.end(syntheticSummary(9, 0), 'success');
  });
});

describe('OTEL_* environment switch', () => {
  it.each([
    [{}, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, true],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' }, true],
    [{ OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_TRACES_EXPORTER: 'console' }, true],
    [{ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, false],
    [{ OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'otlp' }, false],
    [{ OTEL_SDK_DISABLED: 'false', OTEL_TRACES_EXPORTER: 'otlp' }, true],
    [{ OTEL_SERVICE_NAME: 'x' }, false],
  ])('%j -> %s', (env, expected) => {
    expect(tracingRequested(env)).toBe(expected);
  });

  it('exports request spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set', async () => {
    const received: unknown[] = [];
    const collector = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        received.push({ path: req.url, body: JSON.parse(body) });
        res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => collector.close(() => r())));
    // The SDK reads process.env itself; vitest runs each test file in its own process.
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_SERVICE_NAME: 'sidecar-under-test',
    };
    Object.assign(process.env, env);
    cleanup.push(async () => {
      for (const k of Object.keys(env)) delete process.env[k];
    });

    // Twice: a server restarted in the same process must export again.
    for (const round of [1, 2]) {
      received.length = 0;
      const telemetry = new Telemetry({
        model: 'gpt2',
        entropyNeurons: ENTROPY,
        frequencyNeurons: FREQUENCY,
      });
      expect(await tracingStarted()).toBe(true);
      const r = telemetry.requestStarted(ctx({ endpoint: 'chat_completions', requestId: `req-${round}` }));
      expect(r.traceId).toMatch(/^[0-9a-f]{32}$/);
      r.token(syntheticToken(0, seededRandom(1), { entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY }));
      r.end(syntheticSummary(9, 1, 'stop'), 'success');
      // close() flushes the batch processor and shuts the SDK down.
      await telemetry.close();
      expect(await tracingStarted()).toBe(false);

      expect(received).toHaveLength(1);
      const { path, body } = received[0] as { path: string; body: OtlpTraces };
      expect(path).toBe('/v1/traces');
      const resourceSpans = body.resourceSpans[0];
      const serviceName = resourceSpans.resource.attributes.find((x) => x.key === 'service.name');
      expect(serviceName?.value.stringValue).toBe('sidecar-under-test');
      const spans = resourceSpans.scopeSpans.flatMap((s) => s.spans);
      expect(spans).toHaveLength(1);
      expect(spans[0].name).toBe('chat gpt2-alias');
      expect(spans[0].traceId).toBe(r.traceId);
      // OTLP's SPAN_KIND_SERVER is 2.
      expect(spans[0].kind).toBe(2);
      const responseId = spans[0].attributes.find((x) => x.key === 'gen_ai.response.id');
      expect(responseId?.value.stringValue).toBe(`req-${round}`);
    }
  });
});

interface OtlpTraces {
  resourceSpans: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeSpans: {
      spans: {
        name: string;
        traceId: string;
        kind: number;
        attributes: { key: string; value: { stringValue?: string } }[];
      }[];
    }[];
  }[];
}
