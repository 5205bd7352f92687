// serve(): listens before the model is loaded, answers probes, takes its tokens from the
// environment, shuts down on SIGTERM or an abort signal (closing the engine), and fails loudly
// when the model cannot be loaded.
import { describe, expect, it, vi } from 'vitest';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { serve, type LoadedModel } from '../src/server/serve.ts';
import { createTestEngine } from './helpers/server.ts';

async function loadedModel(): Promise<LoadedModel & { closed: () => boolean }> {
  const engine = await createTestEngine();
  let closed = false;
  const close = engine.close.bind(engine);
  engine.close = async () => {
    closed = true;
    await close();
  };
  const registry = new InterventionRegistry({ lastLayer: engine.spec.nLayers - 1, dMlp: engine.spec.dMlp });
  return { engine, registry, closed: () => closed };
}

function listening(): { url: Promise<string>; onListening: (url: string) => void } {
  let onListening!: (url: string) => void;
  const url = new Promise<string>((r) => (onListening = r));
  return { url, onListening };
}

describe('serve', () => {
  it('an abort while the model loads stops the server, and the engine is closed once loaded', async () => {
    let finishLoad!: (m: LoadedModel) => void;
    const model = await loadedModel();
    const stop = new AbortController();
    const l = listening();
    const done = serve({
      host: '127.0.0.1',
      port: 0,
      load: () => new Promise<LoadedModel>((r) => (finishLoad = r)),
      maxConcurrency: 1,
      maxQueue: 0,
      logLevel: 'silent',
      onListening: l.onListening,
      signal: stop.signal,
    });
    await l.url;
    stop.abort();
    finishLoad(model);
    await done;
    expect(model.closed()).toBe(true);
  });

  it('listens first, then loads; env tokens apply; SIGTERM shuts it down', async () => {
    let finishLoad!: (m: LoadedModel) => void;
    const model = await loadedModel();
    const l = listening();
    const done = serve({
      host: '127.0.0.1',
      port: 0,
      load: () => new Promise<LoadedModel>((r) => (finishLoad = r)),
      maxConcurrency: 1,
      maxQueue: 0,
      logLevel: 'silent',
      onListening: l.onListening,
      env: { CONFIDENCE_SIDECAR_ADMIN_TOKEN: 'from-env', CONFIDENCE_SIDECAR_API_KEY: '' },
    });
    const url = await l.url;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(503);

    finishLoad(model);
    await vi.waitFor(async () => expect((await fetch(`${url}/readyz`)).status).toBe(200));
    // The empty API key variable counts as unset: inference is open.
    expect((await fetch(`${url}/v1/models`)).status).toBe(200);
    // The admin token came from the environment.
    expect((await fetch(`${url}/v1/interventions`)).status).toBe(401);
    expect(
      (await fetch(`${url}/v1/interventions`, { headers: { authorization: 'Bearer from-env' } })).status,
    ).toBe(200);

    process.emit('SIGTERM');
    await done;
    expect(model.closed()).toBe(true);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });

  it('rejects with the load error, after closing the server', async () => {
    const l = listening();
    const failure = new Error('model.onnx: not an ONNX file');
    const done = serve({
      host: '127.0.0.1',
      port: 0,
      load: async () => {
        await l.url;
        throw failure;
      },
      maxConcurrency: 1,
      maxQueue: 0,
      logLevel: 'silent',
      onListening: l.onListening,
    });
    await expect(done).rejects.toBe(failure);
    await expect(fetch(`${await l.url}/healthz`)).rejects.toThrow();
  });

  it('options override the environment', async () => {
    const model = await loadedModel();
    const l = listening();
    const stop = new AbortController();
    const done = serve({
      host: '127.0.0.1',
      port: 0,
      load: async () => model,
      apiKey: 'opt-key',
      maxConcurrency: 1,
      maxQueue: 0,
      logLevel: 'silent',
      onListening: l.onListening,
      signal: stop.signal,
      env: { CONFIDENCE_SIDECAR_API_KEY: 'env-key' },
    });
    const url = await l.url;
    await vi.waitFor(async () => expect((await fetch(`${url}/readyz`)).status).toBe(200));
    const models = (key: string) =>
      fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect((await models('env-key')).status).toBe(401);
    expect((await models('opt-key')).status).toBe(200);
    stop.abort();
    await done;
    expect(model.closed()).toBe(true);
  });
});
