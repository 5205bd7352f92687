// Already-quantized exports (the int4 files transformers.js / onnxruntime-genai users have:
// com.microsoft MatMulNBits) load and are instrumented. No such fixture exists, so the test
// writes one from each float32 fixture export with the project's ONNX codec: every MatMul whose
// weight is a 2-D initializer (unembedding and down projections included) becomes a 4-bit
// MatMulNBits. The surgery must dequantize just the unembedding and the last down projection,
// keep the rest quantized, and the instrumented graph must agree with expected.json (float64)
// within int4 error; the monitor's weights must be the dequantized ones.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { lastLayerWeightsFromExport, prepareExportGraph } from '../src/model/onnx/export-source.ts';
import { AttrType, concat, DataType, decodeModel, encodeModel, type TensorProto } from '../src/model/onnx/proto.ts';
import { dequantizeBlocks, fromFloat16, quantizeBlocks, toFloat16 } from '../src/model/onnx/quantize.ts';
import { IO } from '../src/model/types.ts';
import { entropy, exportFixture, floats, row, run } from './helpers/export-session.ts';
import { readFixtureModel, toFp16, writeExport } from './helpers/q8-fp16-writers.ts';

const scratch = mkdtempSync(join(tmpdir(), 'quant-exports-'));
const cacheDir = join(scratch, 'cache');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const BLOCK = 16;
type FixtureName = 'aidreams260K-onnx' | 'gpt2-tiny-random-onnx';

function floatsOf(t: TensorProto): Float32Array {
  return new Float32Array(new Uint8Array(t.rawData!).buffer);
}

/** Writes a q4 copy of a fixture export; returns its folder and how many MatMuls were quantized. */
function writeQ4Export(name: FixtureName): { dir: string; quantized: number } {
  const src = exportFixture(name).dir;
  const m = decodeModel(readFileSync(join(src, 'onnx', 'model.onnx')));
  const g = m.graph;
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  let quantized = 0;
  for (const node of g.node) {
    const w = node.opType === 'MatMul' ? inits.get(node.input[1]!) : undefined;
    if (!w || w.dims.length !== 2 || w.dataType !== DataType.FLOAT || !w.rawData) continue;
    const [k, n] = w.dims as [number, number];
    if (k % BLOCK !== 0) continue;
    const q = quantizeBlocks(floatsOf(w), k, n, 4, BLOCK);
    const base = `${w.name}.q4_${quantized}`;
    g.initializer.push(
      { name: `${base}.B`, dataType: DataType.UINT8, dims: [n, q.blocksPerColumn, q.blockBytes], rawData: q.packed },
      { name: `${base}.scales`, dataType: DataType.FLOAT, dims: [n * q.blocksPerColumn], rawData: new Uint8Array(q.scales.buffer) },
      { name: `${base}.zp`, dataType: DataType.UINT8, dims: [q.zeroPoints!.length], rawData: q.zeroPoints! },
    );
    node.opType = 'MatMulNBits';
    node.domain = 'com.microsoft';
    node.input = [node.input[0]!, `${base}.B`, `${base}.scales`, `${base}.zp`];
    const int = (a: string, i: number) => ({ name: a, type: AttrType.INT, i });
    node.attribute = [int('K', k), int('N', n), int('bits', 4), int('block_size', BLOCK)];
    quantized++;
  }
  if (!m.opsetImport.some((o) => o.domain === 'com.microsoft')) m.opsetImport.push({ domain: 'com.microsoft', version: 1 });
  const dir = join(scratch, `${name}-q4`);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(src, f), join(dir, f));
  writeFileSync(join(dir, 'onnx', 'model.onnx'), concat(encodeModel(m)));
  return { dir, quantized };
}

describe('int4 (MatMulNBits) exports', () => {
  for (const name of ['aidreams260K-onnx', 'gpt2-tiny-random-onnx'] as const) {
    it(`${name}: instrumented with the unembedding and last down projection dequantized`, async () => {
      const fx = exportFixture(name);
      const { dir, quantized } = writeQ4Export(name);
      expect(quantized).toBeGreaterThan(2);

      const prepared = await prepareExportGraph(dir, { cacheDir });
      const instrumented = decodeModel(readFileSync(prepared.modelPath));
      const ops = instrumented.graph.node.map((n) => n.opType);
      const stillQuantized = ops.filter((o) => o === 'MatMulNBits').length;
      // Exactly the down projection and (when it was a MatMul on an initializer) the unembedding went back to float.
      expect(stillQuantized).toBeGreaterThanOrEqual(quantized - 2);
      expect(stillQuantized).toBeLessThan(quantized);

      const session = await ort.InferenceSession.create(prepared.modelPath);
      const out = await run(session, fx.spec, fx.ids);
      const logits = floats(out[IO.logits] as ort.Tensor);
      const act = floats(out[IO.mlpAct] as ort.Tensor);
      const V = fx.spec.vocabSize;
      const dEntropy = fx.ids.map((_, t) => Math.abs(entropy(row(logits, t, V)) - fx.expected.entropy[t]!));
      const meanD = dEntropy.reduce((a, b) => a + b, 0) / dEntropy.length;
      const expAct = fx.expected.last_mlp_act.flat();
      const actD = act.reduce((a, v, i) => a + Math.abs(v - expAct[i]!), 0) / act.length;
      console.log(`${name} q4 export: mean |d entropy| ${meanD.toFixed(4)} nats, mean |d mlp_act| ${actD.toFixed(4)} vs float64`);
      expect(meanD).toBeLessThan(0.1);
      expect(actD).toBeLessThan(0.1);
      await session.release();

      // The monitor's weights: w_out is the dequantized int4 matrix, not the float one.
      const plain = lastLayerWeightsFromExport(fx.dir);
      const q = lastLayerWeightsFromExport(dir);
      const { dMlp, dModel } = q;
      // (aidreams' d_mlp 172 is not a whole number of blocks: its down projections stayed float.)
      const expectedWOut =
        dMlp % BLOCK === 0
          ? dequantizeBlocks(quantizeBlocks(plain.wOut, dMlp, dModel, 4, BLOCK), dMlp, dModel, 4, BLOCK)
          : plain.wOut;
      expect(Array.from(q.wOut)).toEqual(Array.from(expectedWOut));
      let worst = 0;
      for (let i = 0; i < q.unembed.length; i++) worst = Math.max(worst, Math.abs(q.unembed[i]! - plain.unembed[i]!));
      const spread = plain.unembed.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      expect(worst).toBeLessThan(0.2 * spread);
      expect(dirname(prepared.modelPath)).toContain(cacheDir);
    });
  }
});

// transformers.js q4f16: MatMulNBits with float16 activations and scales, every other float in
// float16 too. The surgery upcasts it (scales converted in place, since MatMulNBits reads them as
// initializers) and then folds the monitored matmuls as for q4.
describe('int4 with float16 (q4f16) exports', () => {
  it('gpt2-tiny-random-onnx: upcast, instrumented, and w_out is the dequantized int4 matrix', async () => {
    const fx = exportFixture('gpt2-tiny-random-onnx');
    const { dir: q4 } = writeQ4Export('gpt2-tiny-random-onnx');
    const dir = writeExport(fx.dir, join(scratch, 'gpt2-q4f16'), toFp16(readFixtureModel(q4)));
    const prepared = await prepareExportGraph(dir, { cacheDir });
    const session = await ort.InferenceSession.create(prepared.modelPath);
    const logits = floats((await run(session, fx.spec, fx.ids))[IO.logits] as ort.Tensor);
    await session.release();
    const V = fx.spec.vocabSize;
    const dEntropy = fx.ids.reduce((a, _, t) => a + Math.abs(entropy(row(logits, t, V)) - fx.expected.entropy[t]!), 0) / fx.ids.length;
    console.log(`gpt2-tiny-random-onnx q4f16 export: mean |d entropy| ${dEntropy.toFixed(4)} nats vs float64`);
    expect(dEntropy).toBeLessThan(0.1);
    const stored = decodeModel(readFileSync(prepared.modelPath)).graph;
    expect(stored.node.filter((n) => n.opType === 'MatMulNBits').length).toBeGreaterThan(0);
    // The half scales became float32 initializers (MatMulNBits' T1 follows its float32 input).
    const scales = new Set(stored.node.filter((n) => n.opType === 'MatMulNBits').map((n) => n.input[2]!));
    expect(stored.initializer.filter((t) => scales.has(t.name)).every((t) => t.dataType === DataType.FLOAT)).toBe(true);

    // w_out: the q4 codes dequantized with the half-rounded scales.
    const plain = lastLayerWeightsFromExport(fx.dir);
    const q = quantizeBlocks(plain.wOut, plain.dMlp, plain.dModel, 4, BLOCK);
    q.scales = fromFloat16(toFloat16(q.scales));
    const expected = dequantizeBlocks(q, plain.dMlp, plain.dModel, 4, BLOCK);
    expect(Array.from(lastLayerWeightsFromExport(dir).wOut)).toEqual(Array.from(expected));
  });
});
