// Export folders as a model source: finding the graph, the cache (key, reuse, atomic entries)
// and the ModelLoadErrors a user gets for folders that cannot work.

import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import {
  isExportDir,
  lastLayerWeightsFromExport,
  prepareExportGraph,
} from '../src/model/onnx/export-source.ts';
import { fixture } from './helpers/shared.ts';

const scratch = mkdtempSync(join(tmpdir(), 'export-source-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;

/** A writable copy of the aidreams export; `edit` may change its files before use. */
function aidreamsCopy(layout: 'onnx/model.onnx' | 'model.onnx' = 'onnx/model.onnx'): {
  dir: string;
  model: string;
} {
  const src = fixture('aidreams260K-onnx');
  const dir = join(scratch, `copy-${counter++}`);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join(src, f), join(dir, f));
  const model = join(dir, layout);
  copyFileSync(join(src, 'onnx', 'model.onnx'), model);
  return { dir, model };
}

function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(readFileSync(file, 'utf8'));
  edit(j);
  writeFileSync(file, JSON.stringify(j));
}

async function loadError(p: Promise<unknown> | (() => unknown)): Promise<ModelLoadError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelLoadError);
    return e as ModelLoadError;
  }
  throw new Error('expected a ModelLoadError');
}

describe('isExportDir', () => {
  it('recognises export folders and nothing else', () => {
    expect(isExportDir(fixture('aidreams260K-onnx'))).toBe(true);
    expect(isExportDir(fixture('gpt2-tiny-random-onnx'))).toBe(true);
    expect(isExportDir(fixture('aidreams260K'))).toBe(false);
    expect(isExportDir(join(scratch, 'does-not-exist'))).toBe(false);
  });

  it('finds model.onnx at the folder root too', async () => {
    const { dir, model } = aidreamsCopy('model.onnx');
    expect(isExportDir(dir)).toBe(true);
    const prepared = await prepareExportGraph(dir, { cacheDir: join(scratch, 'cache-root') });
    expect(prepared.plainModelPath).toBe(model);
  });
});

describe('the instrumented-graph cache', () => {
  const saved = process.env.CONFIDENCE_SIDECAR_CACHE;
  afterEach(() => {
    if (saved === undefined) delete process.env.CONFIDENCE_SIDECAR_CACHE;
    else process.env.CONFIDENCE_SIDECAR_CACHE = saved;
  });

  it('defaults to $CONFIDENCE_SIDECAR_CACHE and reuses the entry on the second call', async () => {
    const cacheDir = join(scratch, 'cache-env');
    process.env.CONFIDENCE_SIDECAR_CACHE = cacheDir;
    const dir = fixture('aidreams260K-onnx');
    const first = await prepareExportGraph(dir);
    expect(first.modelPath.startsWith(cacheDir)).toBe(true);
    expect(first.cacheKey).toMatch(/^[0-9a-f]{64}$/);
    const before = statSync(first.modelPath);
    const second = await prepareExportGraph(dir);
    expect(second).toEqual(first);
    const after = statSync(second.modelPath);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    // Only the finished entry is left: no temporary folders.
    expect(readdirSync(join(cacheDir, 'onnx-exports'))).toEqual([first.cacheKey]);
  });

  it('keys on the model bytes and config.json', async () => {
    const cacheDir = join(scratch, 'cache-key');
    const { dir } = aidreamsCopy();
    const a = await prepareExportGraph(dir, { cacheDir });
    editJson(join(dir, 'config.json'), (j) => (j.rms_norm_eps = 1e-6));
    const b = await prepareExportGraph(dir, { cacheDir });
    expect(b.cacheKey).not.toBe(a.cacheKey);
    expect(existsSync(a.modelPath) && existsSync(b.modelPath)).toBe(true);
  });
});

describe('folders that cannot be used give a ModelLoadError naming the file', () => {
  const cacheDir = join(scratch, 'cache-errors');

  it('no graph file', async () => {
    const dir = join(scratch, 'no-graph');
    mkdirSync(dir);
    copyFileSync(join(fixture('aidreams260K-onnx'), 'config.json'), join(dir, 'config.json'));
    const e = await loadError(prepareExportGraph(dir, { cacheDir }));
    expect(e.file).toBe(dir);
    expect(e.message).toMatch(/no fp32 ONNX graph found/);
  });

  it('a truncated graph file', async () => {
    const { dir, model } = aidreamsCopy();
    const bytes = readFileSync(model);
    writeFileSync(model, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const e = await loadError(prepareExportGraph(dir, { cacheDir }));
    expect(e.file).toBe(model);
    expect(e.message).toContain(model);
    expect(e.message).toMatch(/corrupt or truncated/);
    expect((await loadError(() => lastLayerWeightsFromExport(dir))).file).toBe(model);
  });

  it('config vocab_size differing from the logits width', async () => {
    const { dir, model } = aidreamsCopy();
    editJson(join(dir, 'config.json'), (j) => (j.vocab_size = 600));
    const e = await loadError(prepareExportGraph(dir, { cacheDir }));
    expect(e.file).toBe(model);
    expect(e.message).toMatch(/512 wide.*vocab_size 600/);
  });

  it('a tokenizer with more tokens than the model', async () => {
    const { dir } = aidreamsCopy();
    const tokenizer = join(dir, 'tokenizer.json');
    editJson(tokenizer, (j) =>
      (j.added_tokens as unknown[]).push({ id: 700, content: '<extra>', special: true }),
    );
    const e = await loadError(prepareExportGraph(dir, { cacheDir }));
    expect(e.file).toBe(tokenizer);
    expect(e.message).toMatch(/701 tokens.*512/);
  });

  it('no MLP down projection of the configured width', async () => {
    const { dir, model } = aidreamsCopy();
    editJson(join(dir, 'config.json'), (j) => (j.intermediate_size = 100));
    const e = await loadError(prepareExportGraph(dir, { cacheDir }));
    expect(e.file).toBe(model);
    expect(e.message).toMatch(/down projection/);
  });
});
