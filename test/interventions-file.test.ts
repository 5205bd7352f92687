// --interventions FILE: the schema (YAML and JSON, errors naming the line), applying it to the
// registry (unchanged entries keep their ids, a bad file leaves the last good set), noticing a
// Kubernetes ConfigMap-style symlink swap, and through serve(): listed as source "file", DELETE
// answers 409 naming the file, the cap answers 429.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { InterventionsFile, parseInterventionsFile } from '../src/server/interventions-file.ts';
import { serve } from '../src/server/serve.ts';
import { captureLog } from './helpers/log.ts';
import { createFixtureEngine, postJson } from './helpers/server.ts';

const registry = () => new InterventionRegistry({ lastLayer: 1, dMlp: 32, watched: ['1.3', '1.7'], targetNeurons: ['1.3'] });

describe('interventions file: schema', () => {
  it('reads YAML (a list under `interventions`, or at the top) and JSON alike', () => {
    const yaml = 'interventions:\n  - neuron: "1.3"\n    mode: clamp\n    value: 5\n  - mode: target_entropy\n    value: 2.5\n';
    expect(parseInterventionsFile(yaml, 'f.yaml')).toEqual({
      inputs: [
        { neuron: '1.3', mode: 'clamp', value: 5, neurons: undefined },
        { neuron: undefined, neurons: undefined, mode: 'target_entropy', value: 2.5 },
      ],
      lines: [2, 5],
    });
    const json = '[\n {"neuron": "1.7", "mode": "scale", "value": 0.5}\n]';
    expect(parseInterventionsFile(json, 'f.json').inputs).toEqual([{ neuron: '1.7', mode: 'scale', value: 0.5, neurons: undefined }]);
    expect(parseInterventionsFile('', 'empty.yaml').inputs).toEqual([]);
  });

  it('names the line of what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['interventions:\n  - neuron: "1.3"\n    mode: clamp\n    valu: 5\n', /^f:4: unknown field "valu"/],
      ['interventions:\n  - neuron: 1.30\n    mode: clamp\n    value: 1\n', /^f:2: neuron: 1\.3 is a number to YAML; quote the address/],
      ['interventions:\n  - neuron: "1.3"\n    ttl_s: 5\n', /^f:3: unknown field "ttl_s".*the API's/],
      ['intervention:\n  - {}\n', /^f:1: unknown key "intervention"/],
      ['interventions:\n  - [1, 2\n', /^f:\d+: /],
      ['interventions:\n  - clamp\n', /^f:2: each intervention is a mapping/],
    ];
    for (const [text, pattern] of cases) expect(() => parseInterventionsFile(text, 'f')).toThrow(pattern);
  });
});

describe('interventions file: applied to the registry', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ivfile-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('applies, keeps unchanged entries, rejects a bad file with the line and keeps the last good set', async () => {
    const path = join(dir, 'a.yaml');
    const reg = registry();
    const { log, lines } = captureLog();
    writeFileSync(path, 'interventions:\n  - {neuron: "1.3", mode: clamp, value: 5}\n  - {neuron: "1.7", mode: add, value: 1}\n');
    const f = new InterventionsFile({ path, registry: reg, log, pollMs: 60_000 });
    await f.reload();
    const first = reg.list();
    expect(first.map((iv) => [iv.neuron, iv.mode, iv.value, iv.source, iv.origin])).toEqual([
      ['1.3', 'clamp', 5, 'file', path],
      ['1.7', 'add', 1, 'file', path],
    ]);
    // One entry changed: the other keeps its id.
    writeFileSync(path, 'interventions:\n  - {neuron: "1.3", mode: clamp, value: 5}\n  - {neuron: "1.7", mode: add, value: 2}\n');
    await f.reload();
    const second = reg.list();
    expect(second.find((iv) => iv.neuron === '1.3')!.id).toBe(first[0]!.id);
    expect(second.find((iv) => iv.neuron === '1.7')!.value).toBe(2);
    // Invalid against the model (index out of range) on line 3: rejected, nothing changes.
    writeFileSync(path, 'interventions:\n  - {neuron: "1.3", mode: clamp, value: 6}\n  - {neuron: "1.99", mode: add, value: 2}\n');
    await f.reload();
    expect(reg.list()).toEqual(second);
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.obj.error).toMatch(new RegExp(`^${path.replace(/[.]/g, '\\.')}:3: neuron 1\\.99: index must be below 32`));
    // The API cannot delete them.
    expect(() => reg.assertApiMayRemove(second[0]!)).toThrow(`declared in ${path}`);
    await f.close();
  });

  it('notices a ConfigMap-style update (the ..data symlink swapped, the file never written)', async () => {
    const mount = join(dir, 'mount');
    const v1 = join(mount, '..2026_01_01');
    const v2 = join(mount, '..2026_01_02');
    mkdirSync(v1, { recursive: true });
    mkdirSync(v2, { recursive: true });
    writeFileSync(join(v1, 'interventions.yaml'), '- {neuron: "1.3", mode: clamp, value: 1}\n');
    writeFileSync(join(v2, 'interventions.yaml'), '- {neuron: "1.3", mode: clamp, value: 2}\n');
    symlinkSync('..2026_01_01', join(mount, '..data'));
    symlinkSync('..data/interventions.yaml', join(mount, 'interventions.yaml'));
    const reg = registry();
    const { log } = captureLog();
    const f = new InterventionsFile({ path: join(mount, 'interventions.yaml'), registry: reg, log, pollMs: 60_000 });
    await f.start();
    expect(reg.list().map((iv) => iv.value)).toEqual([1]);
    // What the kubelet does: a new ..data link made beside, renamed over the old one.
    symlinkSync('..2026_01_02', join(mount, '..data_tmp'));
    renameSync(join(mount, '..data_tmp'), join(mount, '..data'));
    await vi.waitFor(() => expect(reg.list().map((iv) => iv.value)).toEqual([2]), { timeout: 5000 });
    await f.close();
  });

  it('falls back to polling when no watch event arrives', async () => {
    const path = join(dir, 'polled.json');
    writeFileSync(path, '[]');
    const reg = registry();
    const f = new InterventionsFile({ path, registry: reg, log: captureLog().log, pollMs: 100 });
    await f.start();
    // Stop the directory watch: only the poll can see the change now.
    (f as unknown as { watcher: { close(): void } }).watcher.close();
    writeFileSync(path, '[{"neuron": "1.7", "mode": "scale", "value": 3}]');
    await vi.waitFor(() => expect(reg.list().map((iv) => [iv.neuron, iv.value])).toEqual([['1.7', 3]]), { timeout: 5000 });
    await f.close();
  });
});

describe('serve --interventions --max-interventions', () => {
  let dir: string;
  let url = '';
  const ac = new AbortController();
  let done: Promise<void>;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ivserve-'));
    writeFileSync(join(dir, 'iv.yaml'), 'interventions:\n  - neuron: "1.3"\n    mode: clamp\n    value: 4\n');
    const engine = await createFixtureEngine('gpt2-tiny-random-onnx');
    const reg = new InterventionRegistry({ lastLayer: engine.spec.nLayers - 1, dMlp: engine.spec.dMlp, maxLive: 2 });
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
        interventionsFile: join(dir, 'iv.yaml'),
        load: async () => ({ engine, registry: reg }),
        onListening: (u) => ((url = u), resolve()),
      });
    });
    await vi.waitFor(async () => expect((await fetch(`${url}/readyz`)).status).toBe(200), { timeout: 60_000 });
  }, 90_000);
  afterAll(async () => {
    ac.abort();
    await done;
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists file interventions as such; DELETE answers 409 naming the file; the cap answers 429', async () => {
    const list = (await (await fetch(`${url}/v1/interventions`)).json()).data;
    expect(list).toMatchObject([{ neuron: '1.3', mode: 'clamp', value: 4, source: 'file', origin: join(dir, 'iv.yaml'), neurons: ['1.3'] }]);
    const del = await fetch(`${url}/v1/interventions/${list[0].id}`, { method: 'DELETE' });
    expect(del.status).toBe(409);
    const body = await del.json();
    expect(body.error.code).toBe('intervention_managed_by_file');
    expect(body.error.message).toContain(join(dir, 'iv.yaml'));
    // DELETE all leaves the file's.
    expect((await (await fetch(`${url}/v1/interventions`, { method: 'DELETE' })).json()).data).toEqual([]);
    const ok = await postJson(`${url}/v1/interventions`, { neuron: '1.7', mode: 'add', value: 1 });
    expect(ok.status).toBe(201);
    const over = await postJson(`${url}/v1/interventions`, { neuron: '1.8', mode: 'add', value: 1 });
    expect(over.status).toBe(429);
    expect(over.body.error.code).toBe('too_many_interventions');
    expect(over.body.error.message).toContain('--max-interventions 2');
  });
});
