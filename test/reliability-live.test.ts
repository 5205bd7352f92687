// Issue 11 regression tests that need the real telemetry (WebSocket hub), shutdown or the SSE stream.
import { describe, expect, it } from 'vitest';
import { PassThrough, Writable } from 'node:stream';
import WebSocket from 'ws';
import { SseStream } from '../src/server/routes/sse.ts';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer } from '../src/server/app.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { httpText, rawRequest } from './helpers/raw-http.ts';
import { createTestEngine, postJson, slowed, type JsonBody } from './helpers/server.ts';

const ADMIN = 'admin-secret';
const admin = { authorization: `Bearer ${ADMIN}` };

function expectError(body: JsonBody, code: string) {
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(body.error.code).toBe(code);
}

describe('with the real telemetry (WebSocket, shutdown, backpressure)', () => {
  async function realServer(engine: Awaited<ReturnType<typeof createTestEngine>>, extra = {}) {
    let release!: (e: typeof engine) => void;
    const loading = new Promise<typeof engine>((r) => (release = r));
    const app = buildServer({
      engine: loading,
      registry: (e) => new InterventionRegistry({ lastLayer: e.spec.nLayers - 1, dMlp: e.spec.dMlp }),
      telemetry: (e) =>
        new Telemetry({
          model: e.modelId,
          entropyNeurons: e.catalogue.entropy,
          frequencyNeurons: e.catalogue.frequency,
          env: {},
        }),
      adminToken: ADMIN,
      maxConcurrency: 1,
      maxQueue: 2,
      shutdownGraceMs: 0,
      ...extra,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    return { app, port, load: () => release(engine) };
  }

  const wsRefusal = (url: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: JsonBody }>((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.on('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      ws.on('open', () => reject(new Error('opened')));
      ws.on('error', () => undefined);
    });

  it('8: WebSocket refusals carry a code; during model load the stream is a 503', async () => {
    const engine = await createTestEngine();
    const { app, port, load } = await realServer(engine);
    try {
      const url = `ws://127.0.0.1:${port}/v1/monitor/stream`;
      const loading = await wsRefusal(url, admin);
      expect(loading.status).toBe(503);
      expectError(loading.body, 'model_not_ready');
      // Upgrade offers elsewhere are plain requests, while loading too.
      const h = await rawRequest(
        port,
        httpText('GET', '/healthz', { connection: 'Upgrade', upgrade: 'websocket' }),
      );
      expect(h.status).toBe(200);
      load();
      await app.modelReady;
      const denied = await wsRefusal(url);
      expect(denied.status).toBe(401);
      expectError(denied.body, 'invalid_api_key');
      const badKey = await rawRequest(
        port,
        httpText('GET', '/v1/monitor/stream', {
          ...admin,
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': 'short',
        }),
      );
      expect(badKey.status).toBe(400);
      expectError(JSON.parse(badKey.body), 'invalid_websocket_handshake');
      const plainGet = await rawRequest(port, httpText('GET', '/v1/monitor/stream', admin));
      expect(plainGet.status).toBe(426);
      expectError(JSON.parse(plainGet.body), 'upgrade_required');
      const other = await rawRequest(
        port,
        httpText('GET', '/readyz', { connection: 'Upgrade', upgrade: 'websocket' }),
      );
      expect(other.status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('3: at shutdown queued requests get 503 server_shutting_down; streams end with an error event', async () => {
    const engine = slowed(await createTestEngine(), 20);
    const { app, port, load } = await realServer(engine);
    load();
    await app.modelReady;
    const base = `http://127.0.0.1:${port}`;
    const model = engine.modelId;
    const streaming = fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, prompt: 'The moon', max_tokens: 200, stream: true }),
    });
    // The stream has started once its first event arrives.
    const res = await streaming;
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = new TextDecoder().decode((await reader.read()).value);
    const queued = postJson(`${base}/v1/completions`, { model, prompt: 'The moon', max_tokens: 2 });
    await new Promise((r) => setTimeout(r, 200));
    const closing = app.close();
    const q = await queued;
    expect(q.status).toBe(503);
    expectError(q.body, 'server_shutting_down');
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      text += new TextDecoder().decode(chunk.value);
    const events = text.split('\n\n').filter((b) => b.startsWith('data: '));
    expect(JSON.parse(events.at(-1)!.slice(6)).error.code).toBe('server_shutting_down');
    await closing;
  });

  it('7: a streaming client that reads nothing makes the stream unwritable, then gives up', async () => {
    // The SSE stream as the generation loop sees it, piped into a consumer that takes one chunk
    // and then stops reading (as a client that never reads its socket does).
    let stalled: (() => void) | null = null;
    const consumer = new Writable({
      highWaterMark: 1024,
      write(_chunk, _enc, done) {
        stalled = done;
      },
    });
    const reply = {
      code: () => reply,
      header: () => reply,
      send: (stream: PassThrough) => stream.pipe(consumer),
    };
    const sse = new SseStream(reply as never);
    const event = { text: 'x'.repeat(2000) };
    let sent = 0;
    while (await sse.writable(0).then((ok) => ok && sent < 1000)) {
      sse.send(event);
      sent++;
    }
    // Backpressure arrives after a few tens of KB buffered, not after everything was generated.
    expect(sent).toBeLessThan(40);
    expect(await sse.writable(100)).toBe(false);
    // A consumer that reads again makes it writable again.
    const resumed = sse.writable(5000);
    const drain = setInterval(() => {
      const done = stalled;
      stalled = null;
      done?.();
    }, 1);
    expect(await resumed).toBe(true);
    clearInterval(drain);
  });
});
