// The interventions API: admin-token auth, CRUD, validation, TTL expiry, request-scoped ones,
// audit lines and telemetry, and that a change reaches a generation from its next token.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer } from '../src/server/app.ts';
import { MONITOR_STREAM_PATH, Telemetry } from '../src/server/telemetry/index.ts';
import {
  createTestEngine,
  postJson,
  readSse,
  slowed,
  startServer,
  type TestServer,
} from './helpers/server.ts';
import { digestOf, touchedBy } from './helpers/digest.ts';

const ADMIN = 'admin-secret-token';
const auth = { authorization: `Bearer ${ADMIN}` };

async function call(url: string, method: string, headers: Record<string, string> = auth) {
  const res = await fetch(url, { method, headers });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

describe('interventions API', () => {
  let s: TestServer;
  let clock = Date.parse('2025-01-01T00:00:00Z');
  let ivs: string;
  let neuron: string;

  beforeAll(async () => {
    s = await startServer({
      adminToken: ADMIN,
      engine: slowed(await createTestEngine(), 10),
      now: () => clock,
    });
    ivs = `${s.url}/v1/interventions`;
    neuron = s.engine.catalogue.entropy[0]!;
  });
  afterAll(async () => s?.close());

  it('requires the admin token: 401 without or with a wrong one, 201 with it', async () => {
    const body = { neuron, mode: 'clamp', value: 3 };
    const none = await postJson(ivs, body);
    expect(none.status).toBe(401);
    expect(none.body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
    const wrong = await postJson(ivs, body, { authorization: `Bearer ${ADMIN}x` });
    expect(wrong.status).toBe(401);
    expect((await call(ivs, 'GET', {})).status).toBe(401);
    expect((await call(ivs, 'DELETE', {})).status).toBe(401);
    expect(s.registry.list()).toEqual([]);

    const ok = await postJson(ivs, body, auth);
    expect(ok.status).toBe(201);
    expect(ok.body).toEqual({
      object: 'intervention',
      id: expect.stringMatching(/^iv_/),
      neuron,
      mode: 'clamp',
      value: 3,
      created_at: new Date(clock).toISOString(),
      expires_at: null,
      request_id: null,
      neurons: [neuron],
      source: 'api',
      origin: null,
    });
    await call(`${ivs}/${ok.body.id}`, 'DELETE');
  });

  it('create, list, get, delete, then 404 for the deleted id', async () => {
    const a = (await postJson(ivs, { neuron, mode: 'scale', value: 0.5 }, auth)).body;
    const b = (await postJson(ivs, { neuron: s.engine.catalogue.frequency[0], mode: 'add', value: -1 }, auth))
      .body;
    const list = await call(ivs, 'GET');
    expect(list.body).toEqual({ object: 'list', data: [a, b] });
    expect((await call(`${ivs}/${a.id}`, 'GET')).body).toEqual(a);

    const del = await call(`${ivs}/${a.id}`, 'DELETE');
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ id: a.id, object: 'intervention.deleted', deleted: true, intervention: a });
    for (const method of ['DELETE', 'GET']) {
      const again = await call(`${ivs}/${a.id}`, method);
      expect(again.status).toBe(404);
      expect(again.body.error).toMatchObject({
        type: 'not_found_error',
        code: 'intervention_not_found',
        param: 'id',
      });
    }
    expect((await call(`${ivs}/iv_nope`, 'DELETE')).status).toBe(404);

    // DELETE on the collection clears it and returns what it removed.
    const cleared = await call(ivs, 'DELETE');
    expect(cleared.body).toEqual({ object: 'list', data: [b] });
    expect((await call(ivs, 'GET')).body.data).toEqual([]);
  });

  it('writes an audit line and tells telemetry about every change', async () => {
    const before = s.logs.length;
    const tBefore = s.telemetry.interventions.length;
    const iv = (await postJson(ivs, { neuron, mode: 'clamp', value: 1 }, auth)).body;
    await call(`${ivs}/${iv.id}`, 'DELETE');
    const audit = s.logs.slice(before).filter((l) => l.audit === true);
    expect(audit.map((l) => [l.action, (l.intervention as { id: string }).id, l.actor_ip, l.source])).toEqual(
      [
        ['create', iv.id, '127.0.0.1', 'api'],
        ['delete', iv.id, '127.0.0.1', 'api'],
      ],
    );
    expect(audit[0]!.intervention).toEqual(iv);
    expect(audit.every((l) => typeof l.request_id === 'string')).toBe(true);
    expect(s.telemetry.interventions.slice(tBefore).map(([kind, x]) => [kind, x.id])).toEqual([
      ['created', iv.id],
      ['removed', iv.id],
    ]);
  });

  // `n` is a valid last-layer neuron of the engine under test, so only the named field is wrong.
  const invalid: [string, (n: string, lastLayer: number) => Record<string, unknown>, string, string][] = [
    [
      'a malformed neuron address',
      () => ({ neuron: 'eleven', mode: 'clamp', value: 1 }),
      'neuron',
      'invalid_value',
    ],
    [
      'a neuron outside the last layer',
      (_n, last) => ({ neuron: `${last - 1}.3`, mode: 'clamp', value: 1 }),
      'neuron',
      'invalid_value',
    ],
    [
      'a neuron index past d_mlp',
      (_n, last) => ({ neuron: `${last}.100000`, mode: 'clamp', value: 1 }),
      'neuron',
      'invalid_value',
    ],
    ['an unknown mode', (n) => ({ neuron: n, mode: 'zap', value: 1 }), 'mode', 'invalid_value'],
    ['clamp without a value', (n) => ({ neuron: n, mode: 'clamp' }), 'value', 'invalid_value'],
    ['mean_ablate without calibration', (n) => ({ neuron: n, mode: 'mean_ablate' }), 'mode', 'invalid_value'],
    [
      'a non-positive ttl',
      (n) => ({ neuron: n, mode: 'clamp', value: 1, ttl_s: 0 }),
      'ttl_s',
      'invalid_value',
    ],
    [
      'an unknown field',
      (n) => ({ neuron: n, mode: 'clamp', value: 1, layer: 1 }),
      'layer',
      'unknown_parameter',
    ],
    ['a value of the wrong type', (n) => ({ neuron: n, mode: 'clamp', value: '1' }), 'value', 'invalid_type'],
  ];
  for (const [name, body, param, code] of invalid) {
    it(`refuses ${name} with 400 naming ${param}`, async () => {
      const r = await postJson(ivs, body(neuron, s.engine.spec.nLayers - 1), auth);
      expect(r.status).toBe(400);
      expect(r.body.error).toMatchObject({ type: 'invalid_request_error', code, param });
      expect(s.registry.list()).toEqual([]);
    });
  }

  it('expires after ttl_s: gone from the list, reported as expired and audited', async () => {
    const iv = (await postJson(ivs, { neuron, mode: 'clamp', value: 2, ttl_s: 30 }, auth)).body;
    expect(iv.expires_at).toBe(new Date(clock + 30_000).toISOString());
    clock += 29_000;
    expect((await call(ivs, 'GET')).body.data.map((x: { id: string }) => x.id)).toEqual([iv.id]);
    clock += 2_000;
    expect((await call(ivs, 'GET')).body.data).toEqual([]);
    expect(s.telemetry.interventions.filter(([, x]) => x.id === iv.id).map(([kind]) => kind)).toEqual([
      'created',
      'expired',
    ]);
    const audit = s.logs.filter((l) => l.audit === true && (l.intervention as { id: string }).id === iv.id);
    expect(audit.map((l) => [l.action, l.source, l.actor_ip])).toEqual([
      ['create', 'api', '127.0.0.1'],
      ['expire', 'ttl', null],
    ]);
  });

  it('a global intervention reaches generations; after DELETE it no longer does', async () => {
    const model = s.engine.modelId;
    const body = { model, prompt: 'The moon', max_tokens: 3, temperature: 0, confidence: true };
    const iv = (await postJson(ivs, { neuron, mode: 'clamp', value: 7.5 }, auth)).body;
    const on = (await postJson(`${s.url}/v1/completions`, body)).body.choices[0].confidence;
    expect(on.entropy_neurons[neuron]).toEqual([7.5, 7.5, 7.5]);
    expect(on.interventions).toEqual([touchedBy([iv.id]), touchedBy([iv.id]), touchedBy([iv.id])]);
    expect(on.summary.intervention_ids).toEqual([iv.id]);
    await call(`${ivs}/${iv.id}`, 'DELETE');
    const off = (await postJson(`${s.url}/v1/completions`, body)).body.choices[0].confidence;
    expect(off.entropy_neurons[neuron]).not.toContain(7.5);
    expect(off.interventions).toEqual([touchedBy([]), touchedBy([]), touchedBy([])]);
  });

  it('request_id scopes an intervention to that request, which removes it when it ends', async () => {
    const model = s.engine.modelId;
    const body = { model, prompt: 'The moon', max_tokens: 2, temperature: 0, confidence: true };
    const iv = (await postJson(ivs, { neuron, mode: 'clamp', value: -4, request_id: 'scoped-1' }, auth)).body;
    expect(iv.request_id).toBe('scoped-1');
    const other = (await postJson(`${s.url}/v1/completions`, body, { 'x-request-id': 'someone-else' })).body;
    expect(other.choices[0].confidence.interventions).toEqual([touchedBy([]), touchedBy([])]);
    // Claiming an admin-registered request-scoped intervention takes the admin token (issue 11).
    const mine = (await postJson(`${s.url}/v1/completions`, body, { 'x-request-id': 'scoped-1', ...auth }))
      .body;
    expect(mine.choices[0].confidence.entropy_neurons[neuron]).toEqual([-4, -4]);
    expect((await call(ivs, 'GET')).body.data).toEqual([]);
  });

  it('a change during a generation acts from the next token', async () => {
    const model = s.engine.modelId;
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'live-1' },
      body: JSON.stringify({
        model,
        prompt: 'The moon',
        max_tokens: 120,
        temperature: 0,
        stream: true,
        confidence: true,
      }),
    });
    const events = readSse(res);
    await vi.waitFor(() => expect(s.telemetry.tokens.get('live-1')?.length ?? 0).toBeGreaterThanOrEqual(3));
    const iv = (await postJson(ivs, { neuron, mode: 'clamp', value: 9 }, auth)).body;
    const chunks = (
      (await events).filter((e) => e !== '[DONE]') as {
        choices: { confidence?: { entropy_neurons: Record<string, number>; interventions: { count: number; digest: string | null } } }[];
      }[]
    )
      .map((e) => e.choices[0]?.confidence)
      .filter((c) => c !== undefined);
    expect(chunks).toHaveLength(120);
    const first = chunks.findIndex((c) => c.interventions.digest === digestOf([iv.id]));
    // Tokens before the change are untouched, every token after it carries the clamp.
    expect(first).toBeGreaterThanOrEqual(3);
    for (const c of chunks.slice(0, first)) expect(c.entropy_neurons[neuron]).not.toBe(9);
    for (const c of chunks.slice(first)) expect(c.entropy_neurons[neuron]).toBe(9);
    await call(`${ivs}/${iv.id}`, 'DELETE');
  });
});

describe('with the real telemetry', () => {
  it('serves /metrics and guards the monitor stream with the admin token', async () => {
    const engine = await createTestEngine();
    const app = buildServer({
      engine,
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
      maxQueue: 0,
      shutdownGraceMs: 0,
    });
    await app.modelReady;
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as { port: number }).port;
    const base = `127.0.0.1:${port}`;
    const sockets: WebSocket[] = [];
    try {
      const done = await postJson(`http://${base}/v1/completions`, {
        model: engine.modelId,
        prompt: 'The moon',
        max_tokens: 2,
      });
      expect(done.status).toBe(200);
      const metrics = await fetch(`http://${base}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await metrics.text()).toContain(`model="${engine.modelId}"`);

      const status = (url: string, headers: Record<string, string> = {}) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(url, { headers });
          sockets.push(ws);
          ws.on('open', () => resolve(101));
          ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
          ws.on('error', () => resolve(-1));
        });
      expect(await status(`ws://${base}${MONITOR_STREAM_PATH}`)).toBe(401);
      expect(await status(`ws://${base}${MONITOR_STREAM_PATH}?token=wrong`)).toBe(401);
      expect(await status(`ws://${base}${MONITOR_STREAM_PATH}`, auth)).toBe(101);
      expect(await status(`ws://${base}${MONITOR_STREAM_PATH}?token=${ADMIN}`)).toBe(101);
    } finally {
      for (const ws of sockets) ws.terminate();
      await app.close();
    }
  });
});
