// prepareCheckpointGraph: content-addressed caching, atomic builds, and ModelLoadErrors that
// name the offending file for broken checkpoints.

import {
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import { prepareCheckpointGraph } from '../src/model/graph-cache.ts';
import { SafetensorsCheckpoint, writeSafetensors, type TensorToWrite } from '../src/model/safetensors.ts';
import { writeRandomCheckpoint } from './helpers/random-checkpoint.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

function randomCheckpoint(overrides: Record<string, unknown> = {}, seed = 1): string {
  const d = writeRandomCheckpoint('llama', overrides, seed);
  dirs.push(d);
  return d;
}

/** Rewrites model.safetensors with `edit` applied to its tensors. */
function rewriteTensors(dir: string, edit: (tensors: Record<string, TensorToWrite>) => void): void {
  const file = join(dir, 'model.safetensors');
  const ckpt = SafetensorsCheckpoint.openFiles([file]);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, info] of ckpt.tensors) tensors[name] = { shape: info.shape, data: ckpt.float32(name) };
  edit(tensors);
  writeSafetensors(file, tensors);
}

async function expectLoadError(promise: Promise<unknown>): Promise<ModelLoadError> {
  const e = await promise.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ModelLoadError);
  return e as ModelLoadError;
}

describe('prepareCheckpointGraph caching', () => {
  it('builds once, then returns the cached graph without rebuilding', async () => {
    const ckpt = randomCheckpoint();
    const cacheDir = tempDir('cs-cache-');
    const first = await prepareCheckpointGraph(ckpt, { instrument: true, cacheDir });
    expect(first.modelPath).toBe(join(cacheDir, first.cacheKey, 'model.onnx'));
    expect(first.cacheKey).toMatch(/^[0-9a-f]{64}$/);
    expect(first.spec.modelType).toBe('llama');
    const before = statSync(first.modelPath);
    const dataBefore = statSync(join(cacheDir, first.cacheKey, 'model.onnx.data'));

    const second = await prepareCheckpointGraph(ckpt, { instrument: true, cacheDir });
    expect(second).toEqual(first);
    const after = statSync(second.modelPath);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(statSync(join(cacheDir, first.cacheKey, 'model.onnx.data')).mtimeMs).toBe(dataBefore.mtimeMs);
    // Only the final entry remains: no temp build folders are left behind.
    expect(readdirSync(cacheDir)).toEqual([first.cacheKey]);
  });

  it('keys on the instrument flag, the weights bytes and config.json', async () => {
    const ckpt = randomCheckpoint();
    const cacheDir = tempDir('cs-cache-');
    const base = await prepareCheckpointGraph(ckpt, { instrument: true, cacheDir });
    const plain = await prepareCheckpointGraph(ckpt, { instrument: false, cacheDir });
    expect(plain.cacheKey).not.toBe(base.cacheKey);

    rewriteTensors(ckpt, (t) => {
      t['model.norm.weight']!.data[0]! += 1;
    });
    const edited = await prepareCheckpointGraph(ckpt, { instrument: true, cacheDir });
    expect(edited.cacheKey).not.toBe(base.cacheKey);

    const config = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8'));
    writeFileSync(join(ckpt, 'config.json'), JSON.stringify({ ...config, rope_theta: 1234 }));
    const reconfigured = await prepareCheckpointGraph(ckpt, { instrument: true, cacheDir });
    expect(reconfigured.cacheKey).not.toBe(edited.cacheKey);
  });

  it('uses $CONFIDENCE_SIDECAR_CACHE when no cacheDir is given', async () => {
    const ckpt = randomCheckpoint();
    const cacheDir = tempDir('cs-cache-env-');
    const saved = process.env.CONFIDENCE_SIDECAR_CACHE;
    process.env.CONFIDENCE_SIDECAR_CACHE = cacheDir;
    try {
      const r = await prepareCheckpointGraph(ckpt, { instrument: false });
      expect(r.modelPath.startsWith(cacheDir)).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.CONFIDENCE_SIDECAR_CACHE;
      else process.env.CONFIDENCE_SIDECAR_CACHE = saved;
    }
  });
});

describe('prepareCheckpointGraph on broken checkpoints', () => {
  it('names the missing directory', async () => {
    const missing = join(tmpdir(), 'cs-definitely-missing-model');
    const e = await expectLoadError(
      prepareCheckpointGraph(missing, { instrument: true, cacheDir: tempDir('cs-cache-') }),
    );
    expect(e.message).toContain(missing);
  });

  it('names config.json for an unknown model_type', async () => {
    const ckpt = randomCheckpoint({ model_type: 'mamba' });
    const e = await expectLoadError(
      prepareCheckpointGraph(ckpt, { instrument: true, cacheDir: tempDir('cs-cache-') }),
    );
    expect(e.file).toBe(join(ckpt, 'config.json'));
    expect(e.message).toContain('unsupported model_type "mamba"');
  });

  it('names model.safetensors when it is truncated', async () => {
    const ckpt = randomCheckpoint();
    const file = join(ckpt, 'model.safetensors');
    const copy = join(tempDir('cs-trunc-'), 'model.safetensors');
    copyFileSync(file, copy);
    truncateSync(file, statSync(copy).size - 100);
    const cacheDir = tempDir('cs-cache-');
    const e = await expectLoadError(prepareCheckpointGraph(ckpt, { instrument: true, cacheDir }));
    expect(e.file).toBe(file);
    expect(e.message).toContain('truncated');
    expect(readdirSync(cacheDir)).toEqual([]);
  });

  it('names model.safetensors and the tensor when a tensor is missing', async () => {
    const ckpt = randomCheckpoint();
    rewriteTensors(ckpt, (t) => {
      delete t['model.layers.1.mlp.down_proj.weight'];
    });
    const e = await expectLoadError(
      prepareCheckpointGraph(ckpt, { instrument: true, cacheDir: tempDir('cs-cache-') }),
    );
    expect(e.file).toBe(join(ckpt, 'model.safetensors'));
    expect(e.message).toContain('missing tensor "model.layers.1.mlp.down_proj.weight"');
  });

  it('names the file when a tensor does not have the shape config.json implies', async () => {
    const ckpt = randomCheckpoint();
    rewriteTensors(ckpt, (t) => {
      t['model.norm.weight'] = { shape: [31], data: new Float32Array(31) };
    });
    const e = await expectLoadError(
      prepareCheckpointGraph(ckpt, { instrument: true, cacheDir: tempDir('cs-cache-') }),
    );
    expect(e.file).toBe(join(ckpt, 'model.safetensors'));
    expect(e.message).toContain('"model.norm.weight" has shape [31], config.json implies [32]');
  });

  it('names the folder when there are no weights at all', async () => {
    const ckpt = randomCheckpoint();
    rmSync(join(ckpt, 'model.safetensors'));
    const e = await expectLoadError(
      prepareCheckpointGraph(ckpt, { instrument: true, cacheDir: tempDir('cs-cache-') }),
    );
    expect(e.message).toContain('no model.safetensors');
  });
});
