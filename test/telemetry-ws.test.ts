// The WebSocket monitor stream, with a real `ws` client against a real http.Server: event shapes,
// filters, refusals, the subscriber gauge, and the bounded buffer that drops the oldest events of a
// subscriber that stops reading.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Telemetry, type RequestContext } from '../src/server/telemetry/index.ts';
import { seededRandom, syntheticSummary, syntheticToken } from './helpers/telemetry-traffic.ts';
import { touchedBy } from './helpers/digest.ts';

const ENTROPY = ['11.584'];
const FREQUENCY = ['11.417'];
type Event = Record<string, unknown> & { type: string };

let server: Server;
let base: string;
const open: Telemetry[] = [];

beforeEach(async () => {
  server = createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

function telemetry(opts: Partial<ConstructorParameters<typeof Telemetry>[0]> = {}): Telemetry {
  const t = new Telemetry({ model: 'gpt2', entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY, ...opts });
  open.push(t);
  return t;
}

function ctx(requestId: string): RequestContext {
  return {
    requestId,
    model: 'gpt2',
    endpoint: 'chat_completions',
    params: { max_tokens: 8, temperature: 0, top_p: 1, stream: false },
    promptTokens: 4,
    interventions: [],
  };
}

/** A connected client that records every event it receives. */
async function subscribe(
  path: string,
  headers: Record<string, string> = {},
): Promise<{ ws: WebSocket; events: Event[] }> {
  const ws = new WebSocket(`${base}${path}`, { headers });
  const events: Event[] = [];
  ws.on('message', (data) => events.push(JSON.parse(String(data)) as Event));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, events };
}

/** The HTTP status a refused upgrade gets. */
function refusedStatus(path: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}${path}`, { headers });
    // With this listener ws leaves the response to us: read the status, then drop the request.
    ws.on('error', () => {});
    ws.once('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      req.destroy();
    });
    ws.once('open', () => reject(new Error('upgrade was accepted')));
  });
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function metricValue(t: Telemetry, name: string): Promise<number> {
  const json = await t.registry.getMetricsAsJSON();
  const m = json.find((x) => x.name === name);
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0);
}

describe('WebSocket monitor stream', () => {
  it('streams request_start, token, request_end and intervention events with snake_case fields', async () => {
    const t = telemetry();
    t.attachWebSocket(server);
    const { ws, events } = await subscribe('/v1/monitor/stream');
    expect(await metricValue(t, 'llm_ws_subscribers')).toBe(1);

    const rand = seededRandom(1);
    const tok = syntheticToken(0, rand, {
      entropyNeurons: ENTROPY,
      frequencyNeurons: FREQUENCY,
      interventions: ['iv-9'],
    });
    const r = t.requestStarted(ctx('req-1'));
    expect(r.token(tok)).toBeUndefined();
    r.end(syntheticSummary(4, 1, 'stop'), 'success');
    t.interventionChanged('created', {
      id: 'iv-9',
      neuron: '11.584',
      mode: 'clamp',
      value: 5,
      createdAt: '2024-05-01T00:00:00.000Z',
      expiresAt: null,
      requestId: null,
    });
    await until(() => events.length === 4, 'four events');

    const [start, token, end, iv] = events;
    expect(start).toMatchObject({
      type: 'request_start',
      request_id: 'req-1',
      model: 'gpt2',
      params: ctx('req-1').params,
    });
    expect(typeof start.ts).toBe('number');
    expect(token).toEqual({
      type: 'token',
      source: 'local',
      request_id: 'req-1',
      model: 'gpt2',
      index: 0,
      token_id: tok.tokenId,
      text: tok.text,
      logprob: tok.logprob,
      entropy: tok.entropy,
      top1_prob: tok.top1Prob,
      norm_scale: tok.normScale,
      entropy_neurons: tok.entropyNeurons,
      frequency_neurons: tok.frequencyNeurons,
      unigram_kl: tok.unigramKl,
      repeat: tok.repeat,
      interventions: touchedBy(['iv-9']),
      ts: token.ts,
    });
    expect(end).toMatchObject({
      type: 'request_end',
      request_id: 'req-1',
      outcome: 'success',
      usage: { prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 },
      finish_reason: 'stop',
    });
    expect(end.duration_s).toBeGreaterThanOrEqual(0);
    expect(iv).toMatchObject({
      type: 'intervention',
      action: 'created',
      intervention: {
        id: 'iv-9',
        neuron: '11.584',
        mode: 'clamp',
        value: 5,
        created_at: '2024-05-01T00:00:00.000Z',
        expires_at: null,
        request_id: null,
      },
    });

    ws.close();
    await until(() => ws.readyState === WebSocket.CLOSED, 'close');
    let subscribers = -1;
    await until(() => {
      void metricValue(t, 'llm_ws_subscribers').then((v) => (subscribers = v));
      return subscribers === 0;
    }, 'subscriber gauge back to 0');
  });

  it('filters by request_id and model', async () => {
    const t = telemetry();
    t.attachWebSocket(server);
    const onlyA = await subscribe('/v1/monitor/stream?request_id=req-a');
    const otherModel = await subscribe('/v1/monitor/stream?model=llama');
    const everything = await subscribe('/v1/monitor/stream?model=gpt2');
    const rand = seededRandom(2);
    for (const id of ['req-a', 'req-b']) {
      const r = t.requestStarted(ctx(id));
      r.token(syntheticToken(0, rand, { entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY }));
      r.end(syntheticSummary(4, 1), 'success');
    }
    const iv = {
      neuron: '11.584',
      mode: 'add' as const,
      value: 1,
      createdAt: '2024-05-01T00:00:00.000Z',
      expiresAt: null,
    };
    t.interventionChanged('created', { ...iv, id: 'scoped-b', requestId: 'req-b' });
    t.interventionChanged('created', { ...iv, id: 'global', requestId: null });
    await until(() => everything.events.length === 8, 'all events');
    await until(() => onlyA.events.length === 4, 'request-a events');

    expect(onlyA.events.map((e) => e.type)).toEqual([
      'request_start',
      'token',
      'request_end',
      'intervention',
    ]);
    expect(onlyA.events.slice(0, 3).every((e) => e.request_id === 'req-a')).toBe(true);
    // A global intervention acts on every request; one scoped to another request does not show.
    expect((onlyA.events[3].intervention as { id: string }).id).toBe('global');
    expect(otherModel.events).toEqual([]);
  });

  it('refuses unauthorized upgrades with 401 and unknown paths with 404', async () => {
    const t = telemetry();
    t.attachWebSocket(server, (req) => req.headers.authorization === 'Bearer s3cret');
    expect(await refusedStatus('/v1/monitor/stream')).toBe(401);
    expect(await refusedStatus('/v1/monitor/stream', { Authorization: 'Bearer wrong' })).toBe(401);
    expect(await refusedStatus('/v1/other')).toBe(404);
    const ok = await subscribe('/v1/monitor/stream', { Authorization: 'Bearer s3cret' });
    expect(ok.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('drops the oldest events of a subscriber that stops reading, then reports the gap', async () => {
    const bufferSize = 16;
    const t = telemetry({ wsBufferSize: bufferSize, wsHighWaterMarkBytes: 64 * 1024 });
    t.attachWebSocket(server);
    const { ws, events } = await subscribe('/v1/monitor/stream');
    // Stop reading: the kernel buffers fill, then the server socket's, then the bounded queue.
    ws.pause();

    const rand = seededRandom(5);
    const opts = { entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY, textBytes: 16 * 1024 };
    const r = t.requestStarted(ctx('flood'));
    // 2,000 events of 16 KiB (32 MiB) exceed any loopback socket buffering by far. The loop is
    // synchronous, as a generation loop is: it completes without the subscriber reading anything.
    const emitted = 2000;
    for (let i = 0; i < emitted; i++) r.token(syntheticToken(i, rand, opts));
    r.end(syntheticSummary(4, emitted), 'success');
    const dropped = await metricValue(t, 'llm_ws_events_dropped_total');
    expect(dropped).toBeGreaterThan(0);

    ws.resume();
    await until(() => events.some((e) => e.type === 'request_end'), 'request_end after catching up', 30_000);

    const types = events.map((e) => e.type);
    const gap = types.indexOf('dropped');
    expect(types.filter((x) => x === 'dropped')).toHaveLength(1);
    expect(events[gap].count).toBe(dropped);
    expect(types[0]).toBe('request_start');
    const indices = (list: Event[]) => list.map((e) => e.index as number);
    const before = indices(events.slice(1, gap));
    const after = indices(events.slice(gap + 1, -1));
    // Everything sent before the gap arrives in order from the first token...
    expect(before).toEqual(before.map((_, i) => i));
    // ...the newest `bufferSize` events survive (the last token ones plus request_end)...
    expect(after.length + 1).toBe(bufferSize);
    expect(after).toEqual(after.map((_, i) => emitted - after.length + i));
    expect(types.at(-1)).toBe('request_end');
    // ...and nothing is unaccounted for: 1 start + tokens + 1 end = received + dropped.
    expect(1 + emitted + 1).toBe(events.length - 1 + dropped);
  });
});
