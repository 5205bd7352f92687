// --state-dir: interventions created through the API are saved atomically on every change and
// restored at the next start (expired ones dropped), with audit lines at restore and shutdown;
// without it the server says they live in memory only. Checked on the registry and through two
// runs of serve() on the same directory.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { InterventionState, STATE_FILE, startInterventionSources } from '../src/server/interventions-state.ts';
import { serve } from '../src/server/serve.ts';
import type { ServerEngine } from '../src/server/app.ts';
import { captureLog } from './helpers/log.ts';
import { createFixtureEngine, postJson } from './helpers/server.ts';

describe('interventions state directory', () => {
  let dir: string;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const registry = () => new InterventionRegistry({ lastLayer: 1, dMlp: 32, now: () => clock });
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ivstate-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('saves API interventions on each change (only those), restores them with ids and drops expired ones', async () => {
    const a = registry();
    const first = captureLog();
    const state = new InterventionState(dir, a, first.log);
    await state.start();
    const keep = a.add({ neuron: '1.3', mode: 'clamp', value: 2 });
    const short = a.add({ neuron: '1.4', mode: 'add', value: 1, ttlS: 60 });
    a.add({ neuron: '1.5', mode: 'add', value: 1, requestId: 'req-1' });
    a.add({ neuron: '1.6', mode: 'add', value: 1, source: 'cli' });
    await state.save();
    const saved = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8'));
    expect(saved.interventions.map((iv: { id: string }) => iv.id)).toEqual([keep.id, short.id]);
    // Atomic: no temporary file left beside it.
    expect(readdirSync(dir)).toEqual([STATE_FILE]);
    await state.close();
    expect(first.lines.filter((l) => l.obj.audit === true && l.obj.action === 'persist').map((l) => (l.obj.intervention as { id: string }).id)).toEqual([keep.id, short.id]);

    clock += 120_000; // the ttl one has expired meanwhile
    const b = registry();
    const second = captureLog();
    await new InterventionState(dir, b, second.log).start();
    expect(b.list()).toEqual([keep]);
    expect(second.lines.filter((l) => l.obj.audit === true).map((l) => [l.obj.action, (l.obj.intervention as { id: string } | undefined)?.id ?? l.obj.id])).toEqual([
      ['restore', keep.id],
      ['drop', short.id],
    ]);
  });

  it('an unreadable state file is reported and replaced at the next change', async () => {
    const d = mkdtempSync(join(tmpdir(), 'ivstate-bad-'));
    writeFileSync(join(d, STATE_FILE), '{not json');
    const reg = registry();
    const { log, lines } = captureLog();
    const state = new InterventionState(d, reg, log);
    await state.start();
    expect(lines.filter((l) => l.level === 'error')).toHaveLength(1);
    reg.add({ neuron: '1.2', mode: 'clamp', value: 1 });
    await state.save();
    expect(JSON.parse(readFileSync(join(d, STATE_FILE), 'utf8')).interventions).toHaveLength(1);
    rmSync(d, { recursive: true, force: true });
  });

  it('without --state-dir says at start that API interventions are in memory only', async () => {
    const { log, lines } = captureLog();
    const s = await startInterventionSources(registry(), log, {});
    expect(lines.filter((l) => l.msg.includes('in memory only')).map((l) => l.level)).toEqual(['info']);
    await s.close();
  });
});

describe('serve --state-dir: a restart keeps API interventions', () => {
  let engine: ServerEngine;
  let dir: string;
  beforeAll(async () => {
    engine = await createFixtureEngine('gpt2-tiny-random-onnx');
    dir = mkdtempSync(join(tmpdir(), 'ivserve-state-'));
  }, 60_000);
  afterAll(async () => {
    await engine?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function run<T>(body: (url: string) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    let url = '';
    let done: Promise<void> = Promise.resolve();
    // The engine outlives both runs (serve closes the engine it loaded: hand it a view whose close is a no-op).
    const view = Object.create(engine, { close: { value: async () => undefined } }) as ServerEngine;
    await new Promise<void>((resolve) => {
      done = serve({
        host: '127.0.0.1',
        port: 0,
        maxConcurrency: 1,
        maxQueue: 1,
        logLevel: 'silent',
        shutdownGraceMs: 0,
        signal: ac.signal,
        env: {},
        stateDir: dir,
        load: async () => ({ engine: view, registry: new InterventionRegistry({ lastLayer: engine.spec.nLayers - 1, dMlp: engine.spec.dMlp }) }),
        onListening: (u) => ((url = u), resolve()),
      });
    });
    await vi.waitFor(async () => expect((await fetch(`${url}/readyz`)).status).toBe(200), { timeout: 60_000 });
    try {
      return await body(url);
    } finally {
      ac.abort();
      await done;
    }
  }

  it('an intervention created in one run is there, same id, in the next', async () => {
    const created = await run(async (url) => (await postJson(`${url}/v1/interventions`, { neuron: '1.5', mode: 'scale', value: 0.5 })).body);
    expect(created.id).toMatch(/^iv_/);
    expect(existsSync(join(dir, STATE_FILE))).toBe(true);
    const after = await run(async (url) => (await (await fetch(`${url}/v1/interventions`)).json()).data);
    expect(after).toEqual([created]);
  });
});
