// The standing bad-input suite (issue 11): malformed and hostile requests across every route, each
// spoken as raw HTTP/1.1 so nothing is tidied up by a client. Each case asserts the status, the
// OpenAI error shape {"error": {message, type, param, code}} with its stable code, and that
// /healthz still answers afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer } from '../src/server/app.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { httpText, rawRequest, type RawResponse } from './helpers/raw-http.ts';
import './helpers/bad-input-cases-body.ts';
import './helpers/bad-input-cases-edge.ts';
import { ADMIN, admin, cases, KEY, lastLayer, post, TYPES, useEngine } from './helpers/bad-input-cases.ts';
import { createTestEngine } from './helpers/server.ts';

let port = 0;
let app: ReturnType<typeof buildServer>;

describe('bad-input suite', () => {
  beforeAll(async () => {
    const engine = useEngine(await createTestEngine());
    app = buildServer({
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
      apiKey: KEY,
      maxConcurrency: 2,
      maxQueue: 8,
      bodyLimit: 256 * 1024,
      shutdownGraceMs: 0,
    });
    await app.modelReady;
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
    // The target of the claim case: a request-scoped intervention registered by the admin.
    const claimed = await rawRequest(
      port,
      post(
        '/v1/interventions',
        { neuron: `${lastLayer()}.2`, mode: 'clamp', value: 1, request_id: 'claimed-id' },
        admin,
      ),
    );
    expect(claimed.status).toBe(201);
  });
  afterAll(async () => app?.close());

  it('has at least 150 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(150);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r: RawResponse = await rawRequest(port, c.request());
    expect(r.status, r.body.slice(0, 300)).toBe(c.status);
    if (c.code !== null) {
      const body = JSON.parse(r.body);
      expect(Object.keys(body)).toEqual(['error']);
      expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
      expect(body.error.code).toBe(c.code);
      expect(body.error.type).toBe(TYPES[c.status]);
      expect(typeof body.error.message).toBe('string');
      expect(body.error.message.length).toBeGreaterThan(0);
      expect(body.error.message.length).toBeLessThanOrEqual(2000);
    }
    const health = await rawRequest(port, httpText('GET', '/healthz'));
    expect(health.status).toBe(200);
  });
});
