// q8 (quantize_dynamic's MatMulInteger chains) and fp16 (convert_float_to_float16) exports load
// and are instrumented. No such fixture exists, so test/helpers/q8-fp16-writers.ts writes them
// from the float32 fixture exports, as a second implementation of those tools. The surgery must
// upcast fp16 to float32, fold just the unembedding and the last down projection to float32,
// keep every other q8 matmul quantized, and agree with expected.json (float64); the monitor's
// weights must be the dequantized (or half-rounded) ones.

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import { lastLayerWeightsFromExport, prepareExportGraph } from '../src/model/onnx/export-source.ts';
import { DataType, decodeModel } from '../src/model/onnx/proto.ts';
import { fromFloat16, toFloat16 } from '../src/model/onnx/quantize.ts';
import { openModelSource } from '../src/model/source.ts';
import { IO } from '../src/model/types.ts';
import { createEngineFromSource } from '../src/runtime/index.ts';
import {
  entropy,
  exportFixture,
  feedsFor,
  floats,
  row,
  run,
  type ExportFixture,
} from './helpers/export-session.ts';
import {
  readFixtureModel,
  toFp16,
  toQ8,
  toQdqWeights,
  writeExport,
  type Q8Variant,
} from './helpers/q8-fp16-writers.ts';
import { greedyParams } from './helpers/sampling.ts';

const scratch = mkdtempSync(join(tmpdir(), 'quant-exports-q8-fp16-'));
const cacheDir = join(scratch, 'cache');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const FIXTURES = ['aidreams260K-onnx', 'gpt2-tiny-random-onnx'] as const;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Mean |d entropy| and mean |d mlp_act| of logits/activations against expected.json. */
function deviations(fx: ExportFixture, logits: Float32Array, act: Float32Array | null) {
  const V = fx.spec.vocabSize;
  const dEntropy = mean(fx.ids.map((_, t) => Math.abs(entropy(row(logits, t, V)) - fx.expected.entropy[t]!)));
  const expAct = fx.expected.last_mlp_act.flat();
  const dAct = act ? act.reduce((a, v, i) => a + Math.abs(v - expAct[i]!), 0) / act.length : NaN;
  return { dEntropy, dAct };
}

/** The second prepare finds the cached graph: same file, not rewritten. */
async function expectCacheReused(dir: string, modelPath: string): Promise<void> {
  const before = statSync(modelPath);
  const again = await prepareExportGraph(dir, { cacheDir });
  expect(again.modelPath).toBe(modelPath);
  const after = statSync(modelPath);
  expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
}

async function instrumentedDeviations(dir: string, fx: ExportFixture) {
  const prepared = await prepareExportGraph(dir, { cacheDir });
  const graph = decodeModel(readFileSync(prepared.modelPath)).graph;
  const session = await ort.InferenceSession.create(prepared.modelPath);
  try {
    const out = await run(session, fx.spec, fx.ids);
    return {
      prepared,
      graph,
      ...deviations(fx, floats(out[IO.logits] as ort.Tensor), floats(out[IO.mlpAct] as ort.Tensor)),
    };
  } finally {
    await session.release();
  }
}

// The q8 format itself (weights AND activations in 8 bits: DynamicQuantizeLinear quantizes each
// matmul's input per tensor) costs aidreams260K (64-wide) 0.028-0.034 nats mean |d entropy| when
// onnxruntime runs the export as written, uninstrumented; gpt2-tiny-random 0.0002. Folding the two
// monitored matmuls to float32 only removes error, so the bound is 0.02 where the format allows
// it and the format's own measured error otherwise; every variant must also do no worse than the
// export run as written.
const Q8_ENTROPY_BOUND: Record<(typeof FIXTURES)[number], number> = {
  'aidreams260K-onnx': 0.03,
  'gpt2-tiny-random-onnx': 0.02,
};

async function plainDeviation(dir: string, fx: ExportFixture): Promise<number> {
  const session = await ort.InferenceSession.create(join(dir, 'onnx', 'model.onnx'));
  try {
    const out = await run(session, fx.spec, fx.ids);
    return deviations(fx, floats(out[IO.logits] as ort.Tensor), null).dEntropy;
  } finally {
    await session.release();
  }
}

describe('q8 (quantize_dynamic MatMulInteger) exports', () => {
  // Per-channel with reduce_range (7-bit codes), as the tool recommends for per-channel on CPUs
  // without VNNI: with full 8-bit per-channel codes onnxruntime's AVX2 u8s8 kernel saturates its
  // int16 pair sums, and the export as written measured 0.163 nats on aidreams (0.024 reduced).
  const variants: [(typeof FIXTURES)[number], Q8Variant, boolean][] = [
    ['aidreams260K-onnx', 'int8', false],
    ['gpt2-tiny-random-onnx', 'int8', false],
    ['aidreams260K-onnx', 'int8-per-channel', true],
    ['gpt2-tiny-random-onnx', 'uint8', false],
  ];
  for (const [name, variant, reduceRange] of variants) {
    it(`${name} ${variant}: instrumented with the unembedding and last down projection folded to float32`, async () => {
      const fx = exportFixture(name);
      const { model, quantized, weights } = toQ8(readFixtureModel(fx.dir), variant, reduceRange);
      const dir = writeExport(fx.dir, join(scratch, `${name}-${variant}`), model);
      expect(quantized).toBeGreaterThan(2);

      const asWritten = await plainDeviation(dir, fx);
      const { prepared, graph, dEntropy, dAct } = await instrumentedDeviations(dir, fx);
      console.log(
        `${name} q8 ${variant}${reduceRange ? ' reduce_range' : ''}: mean |d entropy| ${dEntropy.toFixed(5)} nats ` +
          `(export as written ${asWritten.toFixed(5)}), mean |d mlp_act| ${dAct.toFixed(5)} vs float64`,
      );
      // Both monitored matmuls were quantized MatMuls in these fixtures (their weights are initializers).
      expect(graph.node.filter((n) => n.opType === 'MatMulInteger').length).toBe(quantized - 2);
      expect(dEntropy).toBeLessThanOrEqual(Q8_ENTROPY_BOUND[name]);
      expect(dEntropy).toBeLessThanOrEqual(asWritten + 1e-3);
      expect(dAct).toBeLessThan(0.02);

      // w_out is the dequantized codes of the last [d_mlp, d_model] matmul, computed by the writer.
      const q = lastLayerWeightsFromExport(dir);
      const downs = [...weights.values()].filter((w) => w.k === q.dMlp && w.n === q.dModel);
      expect(Array.from(q.wOut)).toEqual(Array.from(downs[downs.length - 1]!.dequantized));
      const unembed = [...weights.values()].find((w) => w.k === q.dModel && w.n === q.vocabSize)!;
      expect(Array.from(q.unembed)).toEqual(Array.from(unembed.dequantized));

      await expectCacheReused(dir, prepared.modelPath);
    });
  }

  it('gpt2-tiny-random-onnx QDQ weights (DequantizeLinear, per channel): the monitored weights fold to the dequantized codes', async () => {
    const fx = exportFixture('gpt2-tiny-random-onnx');
    const { model, quantized, weights } = toQdqWeights(readFixtureModel(fx.dir), 'int8-per-channel');
    const dir = writeExport(fx.dir, join(scratch, 'gpt2-qdq'), model);
    const { graph, dEntropy, dAct } = await instrumentedDeviations(dir, fx);
    console.log(
      `gpt2-tiny-random-onnx QDQ int8 per channel: mean |d entropy| ${dEntropy.toFixed(5)} nats, mean |d mlp_act| ${dAct.toFixed(5)}`,
    );
    expect(graph.node.filter((n) => n.opType === 'DequantizeLinear').length).toBe(quantized - 2);
    expect(dEntropy).toBeLessThanOrEqual(0.02);
    const q = lastLayerWeightsFromExport(dir);
    const downs = [...weights.values()].filter((w) => w.k === q.dMlp && w.n === q.dModel);
    expect(Array.from(q.wOut)).toEqual(Array.from(downs[downs.length - 1]!.dequantized));
  });

  it('refuses a non-initializer weight at the unembedding with a ModelLoadError naming the node and the file', async () => {
    const fx = exportFixture('aidreams260K-onnx');
    const { model } = toQ8(readFixtureModel(fx.dir), 'int8');
    const inits = new Map(model.graph.initializer.map((t) => [t.name, t]));
    const unembed = model.graph.node
      .filter((n) => n.opType === 'MatMulInteger')
      .find((n) => inits.get(n.input[1]!)!.dims[1] === fx.spec.vocabSize)!;
    const computed = `${unembed.input[1]}_identity`;
    model.graph.node.unshift({
      name: 'w_identity',
      opType: 'Identity',
      domain: '',
      input: [unembed.input[1]!],
      output: [computed],
      attribute: [],
    });
    unembed.input[1] = computed;
    const dir = writeExport(fx.dir, join(scratch, 'aidreams-q8-computed-weight'), model);
    const err = await prepareExportGraph(dir, { cacheDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toContain(join(dir, 'onnx', 'model.onnx'));
    expect((err as Error).message).toContain(
      `MatMulInteger "${unembed.name}": its weight "${computed}" is not an initializer`,
    );
  });

  it('refuses an unsupported layout at a monitored matmul with a ModelLoadError naming the file', async () => {
    const fx = exportFixture('gpt2-tiny-random-onnx');
    const { model } = toQ8(readFixtureModel(fx.dir), 'int8-per-channel');
    // The last down projection's weight zero point becomes 2-D ([1, N]): not a layout MatMulInteger folding reads.
    const mmis = model.graph.node.filter((n) => n.opType === 'MatMulInteger');
    const inits = new Map(model.graph.initializer.map((t) => [t.name, t]));
    const down = mmis.filter((n) => inits.get(n.input[1]!)!.dims[0] === fx.spec.dMlp).pop()!;
    const zp = inits.get(down.input[3]!)!;
    zp.dims = [1, zp.dims[0]!];
    const dir = writeExport(fx.dir, join(scratch, 'gpt2-q8-bad-zp'), model);
    const err = await prepareExportGraph(dir, { cacheDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toContain(join(dir, 'onnx', 'model.onnx'));
    expect((err as Error).message).toMatch(/MatMulInteger ".*": .*zero point .* is 2-D/);
  });
});

describe('fp16 (convert_float_to_float16) exports', () => {
  for (const name of FIXTURES) {
    it(`${name}: upcast to float32 and instrumented`, async () => {
      const fx = exportFixture(name);
      const dir = writeExport(fx.dir, join(scratch, `${name}-fp16`), toFp16(readFixtureModel(fx.dir)));

      // The fp16 copy is a valid model: onnxruntime CPU runs it as written (ops without half
      // kernels get Casts inserted by onnxruntime) and its logits track the float32 export's.
      const direct = await ort.InferenceSession.create(join(dir, 'onnx', 'model.onnx'));
      try {
        const feeds = feedsFor(direct, fx.spec, fx.ids);
        for (const k of Object.keys(feeds)) {
          if (k.startsWith('past_key_values'))
            feeds[k] = new ort.Tensor('float16', new Uint16Array(0), feeds[k]!.dims);
        }
        const out = await direct.run(feeds);
        const logits = fromFloat16((out[IO.logits] as ort.Tensor).data as Uint16Array);
        const { dEntropy } = deviations(fx, logits, null);
        console.log(`${name} fp16 run directly: mean |d entropy| ${dEntropy.toFixed(5)} nats vs float64`);
        expect(dEntropy).toBeLessThanOrEqual(0.02);
      } finally {
        await direct.release();
      }

      const { prepared, graph, dEntropy, dAct } = await instrumentedDeviations(dir, fx);
      console.log(
        `${name} fp16 upcast: mean |d entropy| ${dEntropy.toFixed(5)} nats, mean |d mlp_act| ${dAct.toFixed(5)} vs float64`,
      );
      expect(dEntropy).toBeLessThanOrEqual(0.005);
      expect(dAct).toBeLessThan(0.005);
      // The half weights are still stored as half (the file is not doubled); no half type is left in the graph's IO.
      expect(graph.initializer.some((t) => t.dataType === DataType.FLOAT16)).toBe(true);
      expect([...graph.input, ...graph.output].every((v) => v.elemType !== DataType.FLOAT16)).toBe(true);

      // The monitor's weights are the half-rounded float32 ones.
      const plain = lastLayerWeightsFromExport(fx.dir);
      const half = lastLayerWeightsFromExport(dir);
      expect(Array.from(half.wOut)).toEqual(Array.from(fromFloat16(toFloat16(plain.wOut))));
      expect(Array.from(half.unembed)).toEqual(Array.from(fromFloat16(toFloat16(plain.unembed))));
      expect(Array.from(half.finalNormWeight)).toEqual(
        Array.from(fromFloat16(toFloat16(plain.finalNormWeight))),
      );
      await expectCacheReused(dir, prepared.modelPath);
    });
  }
});

describe('engine on q8 and fp16 exports', () => {
  for (const name of FIXTURES) {
    it(
      `${name}: greedy tokens of the q8 and fp16 copies equal the float32 export's`,
      { timeout: 120_000 },
      async () => {
        const fx = exportFixture(name);
        const dirs = {
          fp32: fx.dir,
          q8: writeExport(
            fx.dir,
            join(scratch, `${name}-engine-q8`),
            toQ8(readFixtureModel(fx.dir), 'int8').model,
          ),
          fp16: writeExport(fx.dir, join(scratch, `${name}-engine-fp16`), toFp16(readFixtureModel(fx.dir))),
        };
        const tokens: Record<string, number[]> = {};
        for (const [label, dir] of Object.entries(dirs)) {
          const engine = await createEngineFromSource(await openModelSource(dir, { cacheDir }), {
            intraOpThreads: 1,
          });
          try {
            const it = engine.generate({
              promptIds: fx.expected.prompt_ids!,
              params: greedyParams(12),
            });
            const got: number[] = (tokens[label] = []);
            for (let r = await it.next(); !r.done; r = await it.next()) got.push(r.value.tokenId);
          } finally {
            await engine.close();
          }
        }
        console.log(`${name} greedy tokens: ${JSON.stringify(tokens)}`);
        expect(tokens.fp32!.length).toBe(12);
        // aidreams' expected.json holds the float64 greedy continuation: the float32 export reproduces it.
        if (fx.expected.greedy_ids)
          expect(tokens.fp32).toEqual(
            fx.expected.greedy_ids.slice(fx.expected.prompt_ids!.length, fx.expected.prompt_ids!.length + 12),
          );
        expect(tokens.fp16).toEqual(tokens.fp32);
        // gpt2-tiny-random is nearly unaffected by 8-bit weights and activations. aidreams260K is
        // not: its q8 copy (measured: agrees on the first 2 of 12 tokens) leaves the float32 path
        // at the third token, from the format's own error (see Q8_ENTROPY_BOUND), so it is reported.
        if (name === 'gpt2-tiny-random-onnx') expect(tokens.q8).toEqual(tokens.fp32);
        const agree = tokens.q8!.findIndex((t, i) => t !== tokens.fp32![i]);
        console.log(`${name} q8 greedy agreement: ${agree < 0 ? 12 : agree} of 12 tokens`);
      },
    );
  }
});
