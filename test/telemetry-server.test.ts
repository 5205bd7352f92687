// Telemetry inside the real HTTP server (buildServer, src/server/app.ts) with the test engine of
// test/helpers/server.ts: real OpenAI-SDK traffic, a real interventions API call and a real
// WebSocket subscriber; then the live /metrics exposition must pass `promtool check metrics` and
// agree with what the clients saw, the stream must carry every token, the span must continue the
// client's traceparent, and the probe paths of the Kubernetes manifest must answer.

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { parseAllDocuments } from 'yaml';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer } from '../src/server/app.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { promtoolCheckMetrics } from './helpers/prometheus.ts';
import { createTestEngine } from './helpers/server.ts';
import { digestOf } from './helpers/digest.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ADMIN = 'admin-token-for-tests';
// Events are checked field by field below; their static types live in src/server/telemetry/events.ts.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Event = Record<string, any> & { type: string };

let app: FastifyInstance;
let telemetry: Telemetry;
let url: string;
let model: string;
let entropyNeuron: string;
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

beforeAll(async () => {
  const engine = await createTestEngine();
  model = engine.modelId;
  entropyNeuron = engine.catalogue.entropy[0];
  telemetry = new Telemetry({
    model,
    entropyNeurons: engine.catalogue.entropy,
    frequencyNeurons: engine.catalogue.frequency,
    tracer: provider.getTracer('test'),
  });
  const registry = new InterventionRegistry({ lastLayer: engine.spec.nLayers - 1, dMlp: engine.spec.dMlp });
  app = buildServer({ engine, registry, telemetry, adminToken: ADMIN, maxConcurrency: 2, maxQueue: 8 });
  await app.modelReady;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (!address || typeof address === 'string') throw new Error('no TCP address');
  url = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await app?.close();
  await telemetry?.close();
  await provider.shutdown();
});

function subscribe(headers: Record<string, string>): Promise<{ ws: WebSocket; events: Event[] }> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/monitor/stream`, { headers });
  const events: Event[] = [];
  ws.on('message', (d) => events.push(JSON.parse(String(d)) as Event));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, events }));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function sampleValue(exposition: string, series: string): number {
  const line = exposition.split('\n').find((l) => l.startsWith(`${series} `));
  if (!line) throw new Error(`no sample ${series} in the exposition`);
  return Number(line.slice(series.length + 1));
}

describe('telemetry in the running server', () => {
  it('records real traffic consistently in metrics, the monitor stream and spans', async () => {
    await expect(subscribe({})).rejects.toThrow(/401/);
    const { ws, events } = await subscribe({ Authorization: `Bearer ${ADMIN}` });

    const created = await fetch(`${url}/v1/interventions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify({ neuron: entropyNeuron, mode: 'clamp', value: 2 }),
    });
    expect(created.status).toBe(201);
    const intervention = (await created.json()) as { id: string };

    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const completion = await client.completions.create(
      { model, prompt: 'The moon', max_tokens: 6, temperature: 0 },
      { headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } },
    );
    let chatTokens = 0;
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) if (chunk.usage) chatTokens = chunk.usage.completion_tokens;
    await expect(client.completions.create({ model, prompt: 'x', max_tokens: 2, n: 30 })).rejects.toThrow();

    const generated = completion.usage!.completion_tokens + chatTokens;
    expect(generated).toBeGreaterThan(0);
    await until(() => events.filter((e) => e.type === 'request_end').length === 2, 'two request_end events');

    // Live exposition: valid for promtool and consistent with what the clients were told.
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    const exposition = await res.text();
    const check = promtoolCheckMetrics(exposition);
    expect(check.output).toBe('');
    expect(check.ok).toBe(true);
    const m = `model="${model}"`;
    expect(sampleValue(exposition, `llm_generated_tokens_total{${m}}`)).toBe(generated);
    const ends = events.filter((e) => e.type === 'request_end');
    expect(ends.map((e) => e.usage.prompt_tokens)).toContain(completion.usage!.prompt_tokens);
    expect(sampleValue(exposition, `llm_prompt_tokens_total{${m}}`)).toBe(
      ends.reduce((s, e) => s + (e.usage.prompt_tokens as number), 0),
    );
    expect(sampleValue(exposition, `llm_requests_total{${m},endpoint="completions",outcome="success"}`)).toBe(
      1,
    );
    expect(
      sampleValue(exposition, `llm_requests_total{${m},endpoint="chat_completions",outcome="success"}`),
    ).toBe(1);
    expect(sampleValue(exposition, `llm_requests_total{${m},endpoint="completions",outcome="invalid"}`)).toBe(
      1,
    );
    expect(sampleValue(exposition, `llm_interventions_active{${m}}`)).toBe(1);
    expect(sampleValue(exposition, `llm_intervened_tokens_total{${m}}`)).toBe(generated);
    expect(sampleValue(exposition, `llm_ws_subscribers{${m}}`)).toBe(1);
    expect(sampleValue(exposition, `llm_token_entropy_nats_count{${m}}`)).toBe(generated);

    // The stream carried the intervention and every token, each under the intervention.
    expect(events.filter((e) => e.type === 'intervention').map((e) => e.intervention.id)).toEqual([
      intervention.id,
    ]);
    const tokenEvents = events.filter((e) => e.type === 'token');
    expect(tokenEvents).toHaveLength(generated);
    expect(tokenEvents.every((e) => e.interventions.digest === digestOf([intervention.id]) && e.interventions.count === 1)).toBe(true);
    expect(events.filter((e) => e.type === 'request_start')).toHaveLength(2);

    // Spans: one per generation; the completion continues the client's trace.
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.name).sort()).toEqual([`chat ${model}`, `text_completion ${model}`]);
    const completionSpan = spans.find((s) => s.name.startsWith('text_completion'))!;
    expect(completionSpan.spanContext().traceId).toBe(traceId);
    expect(completionSpan.parentSpanContext?.spanId).toBe('b7ad6b7169203331');
    expect(completionSpan.attributes['gen_ai.usage.output_tokens']).toBe(completion.usage!.completion_tokens);
    ws.close();
  });

  it('answers the probe and scrape paths the Kubernetes manifests use', async () => {
    for (const file of ['deploy/k8s/serve/deployment.yaml', 'deploy/k8s/proxy/deployment.yaml']) {
      const docs = parseAllDocuments(readFileSync(join(repoRoot, file), 'utf8')).map((d) => d.toJS());
      const sidecar = docs[0].spec.template.spec.containers.find(
        (c: { name: string }) => c.name === 'confidence-sidecar',
      );
      const paths = [
        sidecar.livenessProbe.httpGet.path,
        sidecar.readinessProbe.httpGet.path,
        sidecar.startupProbe.httpGet.path,
        docs[0].spec.template.metadata.annotations['prometheus.io/path'],
      ];
      for (const path of paths) expect((await fetch(`${url}${path}`)).status, `${file} ${path}`).toBe(200);
    }
  });
});
