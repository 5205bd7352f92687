// A transformers.js model folder ships one graph per dtype side by side (onnx/model.onnx,
// model_fp16.onnx, model_quantized.onnx, model_q4.onnx, ...). `--dtype` picks among them for an
// export as it picks the build dtype for a checkpoint; a folder without the asked-for variant is
// refused with a message naming what it does have. The variants are written here from the
// gpt2-tiny-random export with the same second-implementation writers the q8/fp16 tests use.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import { concat, DataType, decodeModel, encodeModel } from '../src/model/onnx/proto.ts';
import { openModelSource, sourceKind } from '../src/model/source.ts';
import { createEngineFromSource } from '../src/runtime/index.ts';
import { exportFixture } from './helpers/export-session.ts';
import { readFixtureModel, toFp16, toQ8, writeExport } from './helpers/q8-fp16-writers.ts';
import { greedyParams } from './helpers/sampling.ts';

const scratch = mkdtempSync(join(tmpdir(), 'export-variants-'));
const cacheDir = join(scratch, 'cache');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const fx = exportFixture('gpt2-tiny-random-onnx');

/** A folder with onnx/model.onnx (float32 copy), model_fp16.onnx and model_quantized.onnx. */
function transformersJsFolder(): string {
  const dir = writeExport(fx.dir, join(scratch, 'tjs'), readFixtureModel(fx.dir));
  const write = (name: string, bytes: Uint8Array) => writeFileSync(join(dir, 'onnx', name), bytes);
  write('model_fp16.onnx', concat(encodeModel(toFp16(readFixtureModel(fx.dir)))));
  const q8 = readFixtureModel(fx.dir);
  toQ8(q8, 'int8');
  write('model_quantized.onnx', concat(encodeModel(q8)));
  return dir;
}

async function greedy(dir: string, dtype: 'fp32' | 'fp16' | 'int8') {
  const source = await openModelSource(dir, { dtype, cacheDir });
  const engine = await createEngineFromSource(source, {});
  try {
    const params = greedyParams(8);
    const tokens: number[] = [];
    for await (const t of engine.generate({ promptIds: fx.ids.slice(0, 6), params })) tokens.push(t.tokenId);
    // The cached instrumented graph shows which file it came from: q8 keeps MatMulInteger
    // chains, fp16 keeps its half weights behind Casts.
    const graph = decodeModel(readFileSync(source.modelPath)).graph;
    const plain = graph.node.some((n) => n.opType === 'MatMulInteger')
      ? 'q8'
      : graph.initializer.some((t) => t.dataType === DataType.FLOAT16)
        ? 'fp16'
        : 'fp32';
    return { tokens, plain, key: source.cacheKey };
  } finally {
    await engine.close();
  }
}

describe('export graph variants chosen by --dtype', () => {
  it(
    'fp32, fp16 and int8 each load their own file, with their own cache entry',
    { timeout: 120_000 },
    async () => {
      const dir = transformersJsFolder();
      expect(sourceKind(dir)).toBe('onnx-export');
      const [f32, f16, q8] = [
        await greedy(dir, 'fp32'),
        await greedy(dir, 'fp16'),
        await greedy(dir, 'int8'),
      ];
      expect([f32.plain, f16.plain, q8.plain]).toEqual(['fp32', 'fp16', 'q8']);
      expect(new Set([f32.key, f16.key, q8.key]).size).toBe(3);
      // Each variant is the same model: gpt2-tiny-random's greedy continuation survives fp16 and q8.
      expect(f16.tokens).toEqual(f32.tokens);
      expect(q8.tokens).toEqual(f32.tokens);
    },
  );

  it('a folder with only a q4 graph is an export; without --dtype int4 it is refused naming the file', async () => {
    const dir = join(scratch, 'only-q4');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    copyFileSync(join(fx.dir, 'config.json'), join(dir, 'config.json'));
    copyFileSync(join(fx.dir, 'onnx', 'model.onnx'), join(dir, 'onnx', 'model_q4.onnx'));
    expect(sourceKind(dir)).toBe('onnx-export');
    const refusal = await openModelSource(dir, { cacheDir }).catch((e: unknown) => e);
    expect(refusal).toBeInstanceOf(ModelLoadError);
    expect(String((refusal as Error).message)).toMatch(/no fp32 ONNX graph found/);
    expect(String((refusal as Error).message)).toContain('onnx/model_q4.onnx (--dtype int4)');
    // The file named there loads (a float32 graph under a q4 name is still a valid graph).
    const source = await openModelSource(dir, { cacheDir, dtype: 'int4' });
    expect(source.spec.vocabSize).toBe(fx.spec.vocabSize);
    expect(source.lastLayerWeights().vocabSize).toBe(fx.spec.vocabSize);
  });
});

describe('--quantize-last-layer on an export', () => {
  it('is refused: the surgery always folds the monitored matmuls to float32', async () => {
    const refusal = await openModelSource(fx.dir, { cacheDir, quantizeLastLayer: true }).catch((e: unknown) => e);
    expect(refusal).toBeInstanceOf(ModelLoadError);
    expect(String((refusal as Error).message)).toContain('--quantize-last-layer applies to checkpoints');
  });
});
