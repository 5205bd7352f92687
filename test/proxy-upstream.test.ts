// Proxy mode in front of a real upstream: the project's own serve mode (aidreams260K) on another
// loopback port. Through the proxy the openai SDK and a raw client get exactly the bytes the
// upstream wrote, and the shadow record of every token equals the record serve mode made for it
// when it generated that token (same model, teacher-forced here), within 1e-4. The upstream's
// bytes are recorded where it writes them (its ServerResponse), not re-requested.

import type { ServerResponse } from 'node:http';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { SpanKind } from '@opentelemetry/api';
import OpenAI from 'openai';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerEngine } from '../src/server/app.ts';
import { createFixtureEngine, startServer, type TestServer } from './helpers/server.ts';
import { rawRequest, startProxy, until, type Shadowed, type TestProxy } from './helpers/proxy.ts';
import { shadowTelemetry } from '../src/proxy/telemetry.ts';
import type { TokenRecord } from '../src/runtime/types.ts';

let upstream: TestServer;
let proxy: TestProxy;
let local: ServerEngine;
/** Body bytes the upstream wrote, by request id. */
const written = new Map<string, Buffer[]>();
const exporter = new InMemorySpanExporter();
const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).getTracer(
  't',
);

beforeAll(async () => {
  upstream = await startServer({ engine: await createFixtureEngine('aidreams260K') });
  upstream.app.server.prependListener('request', (req, res: ServerResponse) => {
    const parts: Buffer[] = [];
    written.set(String(req.headers['x-request-id']), parts);
    const write = res.write.bind(res) as (...a: unknown[]) => boolean;
    const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse;
    const keep = (c: unknown) => {
      if (typeof c === 'string' || c instanceof Uint8Array) parts.push(Buffer.from(c as string));
    };
    res.write = ((c: unknown, ...a: unknown[]) => (keep(c), write(c, ...a))) as typeof res.write;
    res.end = ((c?: unknown, ...a: unknown[]) => {
      if (typeof c !== 'function') keep(c);
      return end(c, ...a);
    }) as typeof res.end;
  });
  local = await createFixtureEngine('aidreams260K');
  proxy = await startProxy(upstream.url, local, {
    telemetry: (e) => shadowTelemetry(e, undefined, { wsHeartbeatMs: 0, tracer }),
    tracer,
  });
}, 120_000);

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
  await local?.close();
  await upstream?.engine.close();
});

const sdk = () => new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'k', maxRetries: 0 });
const upstreamBytes = (id: string) => Buffer.concat(written.get(id) ?? []);

function expectSameSignals(shadow: Shadowed[], generated: TokenRecord[]) {
  expect(shadow.length).toBe(generated.length);
  expect(generated.length).toBeGreaterThan(0);
  shadow.forEach(({ record: s }, i) => {
    const g = generated[i]!;
    expect(s.source).toBe('shadow');
    expect(g.source).toBe('local');
    expect(s.tokenId).toBe(g.tokenId);
    expect(s.index).toBe(g.index);
    for (const k of ['entropy', 'top1Prob', 'normScale', 'logprob'] as const)
      expect(Math.abs(s[k] - g[k])).toBeLessThan(1e-4);
    for (const [n, v] of Object.entries(g.entropyNeurons))
      expect(Math.abs(s.entropyNeurons[n]! - v)).toBeLessThan(1e-4);
    for (const [n, v] of Object.entries(g.frequencyNeurons))
      expect(Math.abs(s.frequencyNeurons[n]! - v)).toBeLessThan(1e-4);
    expect(s.repeat).toBe(g.repeat);
  });
}

describe('proxy in front of serve mode', () => {
  it('streams chat through the SDK byte for byte; shadow records equal the generated ones', async () => {
    const id = 'up-chat-stream';
    const stream = await sdk().chat.completions.create(
      {
        model: upstream.engine.modelId,
        messages: [{ role: 'user', content: 'Once upon a time' }],
        max_tokens: 24,
        temperature: 0,
        stream: true,
        logprobs: true,
        top_logprobs: 3,
      },
      { headers: { 'x-request-id': id } },
    );
    const chunks: unknown[] = [];
    for await (const c of stream) chunks.push(c);
    const bytes = upstreamBytes(id);
    const fromUpstream = bytes
      .toString('utf8')
      .split('\n\n')
      .filter((b) => b.startsWith('data: ') && b !== 'data: [DONE]')
      .map((b) => JSON.parse(b.slice(6)));
    expect(chunks).toEqual(fromUpstream);
    await until(() => proxy.finished.has(id), 'scoring');
    expectSameSignals(proxy.records.get(id)!.get(0)!, upstream.telemetry.tokens.get(id)!);
    // The upstream's own logprob of each token against the replica's: the same model, so ~0.
    for (const s of proxy.records.get(id)!.get(0)!)
      expect(Math.abs(s.record.logprob - s.upstream!.logprob!)).toBeLessThan(1e-4);
  });

  it('relays raw bytes exactly (stream and not) and re-tokenizes text when no tokens are given', async () => {
    for (const stream of [true, false]) {
      const id = `up-raw-${stream}`;
      const res = await rawRequest(
        `${proxy.url}/v1/completions`,
        { model: upstream.engine.modelId, prompt: 'The little dog', max_tokens: 16, temperature: 0, stream },
        { 'x-request-id': id },
      );
      expect(res.status).toBe(200);
      expect(res.bytes.equals(upstreamBytes(id))).toBe(true);
      expect(Number(res.headers['x-confidence-sidecar-overhead-ms'])).toBeGreaterThanOrEqual(0);
      await until(() => proxy.finished.has(id), 'scoring');
      const generated = upstream.telemetry.tokens.get(id)!;
      const shadow = proxy.records.get(id)!.get(0)!;
      const text = generated.map((t) => t.text).join('');
      expect(local.decode(shadow.map((s) => s.record.tokenId))).toBe(text);
      // Re-tokenizing the streamed text gives the generated ids back here (greedy output of this
      // model is canonically tokenized), so the signals must agree too.
      expect(shadow.map((s) => s.record.tokenId)).toEqual(generated.map((t) => t.tokenId));
      expectSameSignals(shadow, generated);
    }
  });

  it('publishes shadow tokens on the monitor stream and metrics with mode="shadow"', async () => {
    const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/v1/monitor/stream`);
    const events: { type: string; source?: string; request_id?: string; entropy?: number }[] = [];
    ws.on('message', (m) => events.push(JSON.parse(String(m))));
    await new Promise((r) => ws.once('open', r));
    const id = 'up-ws';
    await rawRequest(
      `${proxy.url}/v1/chat/completions`,
      {
        model: upstream.engine.modelId,
        messages: [{ role: 'user', content: 'Hi' }],
        max_tokens: 8,
        temperature: 0,
        logprobs: true,
      },
      { 'x-request-id': id },
    );
    await until(() => events.some((e) => e.type === 'request_end' && e.request_id === id), 'request_end');
    const tokens = events.filter((e) => e.type === 'token' && e.request_id === id);
    const generated = upstream.telemetry.tokens.get(id)!;
    expect(tokens.length).toBe(generated.length);
    tokens.forEach((t, i) => {
      expect(t.source).toBe('shadow');
      expect(Math.abs(t.entropy! - generated[i]!.entropy)).toBeLessThan(1e-4);
    });
    ws.close();
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(metrics).toMatch(/llm_token_entropy_nats_count\{[^}]*mode="shadow"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/llm_upstream_requests_total\{code="200"\} [1-9]/);
    // The replica's facts, on the shadow registry like every other series.
    expect(metrics).toMatch(/llm_model_info\{[^}]*dtype="fp32"[^}]*provider="cpu"[^}]*mode="shadow"\} 1/);
  });

  it('puts the upstream CLIENT span inside the request SERVER span and propagates traceparent', async () => {
    exporter.reset();
    const id = 'up-trace';
    const parent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await rawRequest(
      `${proxy.url}/v1/completions`,
      { model: upstream.engine.modelId, prompt: 'A', max_tokens: 4, temperature: 0 },
      { 'x-request-id': id, traceparent: parent },
    );
    await until(() => proxy.finished.has(id), 'scoring');
    const spans = exporter.getFinishedSpans();
    const server = spans.find((s) => s.kind === SpanKind.SERVER)!;
    const client = spans.find((s) => s.kind === SpanKind.CLIENT)!;
    expect(server.spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId);
    const sent = upstream.telemetry.started.find((c) => c.requestId === id)!.headers!.traceparent;
    expect(sent).toBe(`00-${client.spanContext().traceId}-${client.spanContext().spanId}-01`);
  });

  it('refuses interventions: 409 on the routes, 400 in a body', async () => {
    const r1 = await rawRequest(`${proxy.url}/v1/interventions`, {}, {}, 'GET');
    expect(r1.status).toBe(409);
    expect(JSON.parse(r1.bytes.toString()).error.code).toBe('interventions_unavailable');
    const r2 = await rawRequest(`${proxy.url}/v1/chat/completions`, {
      model: 'x',
      messages: [{ role: 'user', content: 'Hi' }],
      interventions: [{ neuron: '0.1', mode: 'zero' }],
    });
    expect(r2.status).toBe(400);
    expect(JSON.parse(r2.bytes.toString()).error).toMatchObject({
      code: 'interventions_not_supported',
      param: 'interventions',
    });
    const ready = await (await fetch(`${proxy.url}/readyz`)).json();
    expect(ready).toMatchObject({ status: 'ready', scoring: { state: 'live' } });
  });

  it('serves the operator console itself at GET / (not relayed upstream)', async () => {
    const page = await fetch(`${proxy.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toMatch(/<script[^>]+src="\/console\/app\.js"/);
    expect((await fetch(`${proxy.url}/console/app.js`)).status).toBe(200);
  });

  it('relays /v1/models and unscored routes untouched', async () => {
    const direct = await rawRequest(`${upstream.url}/v1/models`, null, {}, 'GET');
    const via = await rawRequest(`${proxy.url}/v1/models`, null, {}, 'GET');
    expect(via.status).toBe(200);
    expect(via.bytes.equals(direct.bytes)).toBe(true);
    const other = await rawRequest(`${proxy.url}/v1/embeddings`, { input: 'x' });
    expect(other.status).toBe(404); // the upstream's own answer, passed through
    expect(JSON.parse(other.bytes.toString()).error.code).toBe('route_not_found');
  });
});
