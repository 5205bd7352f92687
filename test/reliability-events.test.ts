// Issue 11, item 6: token events stay small however many interventions are live. Each monitor
// token event used to list every active intervention id (5000 of them made a 64-token response
// 13.5 MB). The bound here is on bytes per event, independent of the intervention count.
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer } from '../src/server/app.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { createTestEngine, postJson } from './helpers/server.ts';

/** Bytes a token event may take: room for a count and a digest, not for a list of ids. */
const MAX_TOKEN_EVENT_BYTES = 4096;
const INTERVENTIONS = 200;

describe('token events with many interventions', () => {
  it(`stay under ${MAX_TOKEN_EVENT_BYTES} bytes with ${INTERVENTIONS} interventions live`, async () => {
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
      maxConcurrency: 1,
      maxQueue: 0,
      shutdownGraceMs: 0,
    });
    await app.modelReady;
    await app.listen({ host: '127.0.0.1', port: 0 });
    const base = `127.0.0.1:${(app.server.address() as { port: number }).port}`;
    try {
      const layer = engine.spec.nLayers - 1;
      for (let i = 0; i < INTERVENTIONS; i++) {
        const r = await postJson(`http://${base}/v1/interventions`, {
          neuron: `${layer}.${i % engine.spec.dMlp}`,
          mode: 'add',
          value: 0,
        });
        expect(r.status).toBe(201);
      }
      const ws = new WebSocket(`ws://${base}/v1/monitor/stream`);
      const sizes: number[] = [];
      ws.on('message', (data: Buffer) => {
        if ((JSON.parse(data.toString()) as { type: string }).type === 'token') sizes.push(data.length);
      });
      await new Promise((r) => ws.once('open', r));
      const done = await postJson(`http://${base}/v1/completions`, {
        model: engine.modelId,
        prompt: 'The moon',
        max_tokens: 8,
      });
      expect(done.status).toBe(200);
      await new Promise((r) => setTimeout(r, 200));
      ws.close();
      expect(sizes).toHaveLength(8);
      expect(Math.max(...sizes)).toBeLessThan(MAX_TOKEN_EVENT_BYTES);
    } finally {
      await app.close();
    }
  });
});
