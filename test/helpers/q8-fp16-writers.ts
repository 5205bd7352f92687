// Second implementations of what two export tools write, for tests (no such fixture exists and
// nothing may be downloaded): onnxruntime.quantization's quantize_dynamic (8-bit MatMulInteger
// chains; transformers.js model_quantized.onnx) and onnxconverter-common's
// convert_float_to_float16 with keep_io_types=False (transformers.js model_fp16.onnx). Each
// rewrites a float32 fixture export with the project's ONNX codec into a new folder.

import { copyFileSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AttrType,
  concat,
  DataType,
  decodeModel,
  encodeModel,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from '../../src/model/onnx/proto.ts';
import { toFloat16 } from '../../src/model/onnx/quantize.ts';

export type Q8Variant = 'int8' | 'int8-per-channel' | 'uint8';

export interface Q8Weight {
  /** The float32 [K, N] matrix the codes stand for, (W_q - zp) * scale, computed here. */
  dequantized: Float32Array;
  k: number;
  n: number;
}

export function floatsOf(t: TensorProto): Float32Array {
  return new Float32Array(new Uint8Array(t.rawData!).buffer.slice(0));
}

/** numpy's rounding (half to even), which onnxruntime's quantizer uses. */
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Symmetric 8-bit codes of W [K, N]: per tensor, or per output column. `reduceRange` is the
 * tool's reduce_range (7-bit codes, +-64), which it recommends on CPUs without VNNI.
 */
export function quantizeQ8(w: Float32Array, k: number, n: number, variant: Q8Variant, reduceRange = false) {
  const qmax = reduceRange ? 64 : 127;
  const perChannel = variant === 'int8-per-channel';
  const zp = variant === 'uint8' ? 128 : 0;
  const scales = new Float32Array(perChannel ? n : 1);
  for (let i = 0; i < w.length; i++) {
    const j = perChannel ? i % n : 0;
    scales[j] = Math.max(scales[j]!, Math.abs(w[i]!));
  }
  for (let j = 0; j < scales.length; j++) scales[j] = scales[j]! / qmax || 1;
  const codes = variant === 'uint8' ? new Uint8Array(k * n) : new Int8Array(k * n);
  const dequantized = new Float32Array(k * n);
  for (let i = 0; i < w.length; i++) {
    const s = scales[perChannel ? i % n : 0]!;
    const q = Math.max(-qmax, Math.min(qmax, roundEven(w[i]! / s)));
    codes[i] = q + zp;
    dequantized[i] = (codes[i]! - zp) * s;
  }
  return { codes: new Uint8Array(codes.buffer), scales, zp, dequantized };
}

const node = (
  opType: string,
  input: string[],
  output: string[],
  attribute: NodeProto['attribute'] = [],
): NodeProto => ({
  name: `${output[0]}.node`,
  opType,
  domain: '',
  input,
  output,
  attribute,
});

/**
 * Every MatMul with a 2-D float initializer weight becomes quantize_dynamic's chain. Returns the
 * model, how many were quantized, and each quantized weight's dequantized matrix by MatMul output.
 */
export function toQ8(m: ModelProto, variant: Q8Variant, reduceRange = false) {
  const g = m.graph;
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const quantizedInputs = new Set<string>();
  const weights = new Map<string, Q8Weight>();
  const nodes: NodeProto[] = [];
  for (const n of g.node) {
    const w = n.opType === 'MatMul' ? inits.get(n.input[1]!) : undefined;
    if (!w || w.dims.length !== 2 || w.dataType !== DataType.FLOAT) {
      nodes.push(n);
      continue;
    }
    const [k, cols] = w.dims as [number, number];
    const x = n.input[0]!;
    const out = n.output[0]!;
    const [xq, xs, xzp] = [`${x}_quantized`, `${x}_scale`, `${x}_zero_point`];
    if (!quantizedInputs.has(x)) {
      quantizedInputs.add(x); // one DynamicQuantizeLinear per quantized input, shared like the tool does
      nodes.push(node('DynamicQuantizeLinear', [x], [xq, xs, xzp]));
    }
    const q = quantizeQ8(floatsOf(w), k, cols, variant, reduceRange);
    const type = variant === 'uint8' ? DataType.UINT8 : DataType.INT8;
    const perChannel = q.scales.length > 1;
    const base = `${w.name}_${weights.size}`;
    g.initializer.push(
      { name: `${base}_quantized`, dataType: type, dims: [k, cols], rawData: q.codes },
      {
        name: `${base}_scale`,
        dataType: DataType.FLOAT,
        dims: perChannel ? [cols] : [],
        rawData: new Uint8Array(q.scales.buffer),
      },
      {
        name: `${base}_zero_point`,
        dataType: type,
        dims: perChannel ? [cols] : [],
        rawData: new Uint8Array(perChannel ? cols : 1).fill(q.zp),
      },
    );
    nodes.push(
      node(
        'MatMulInteger',
        [xq, `${base}_quantized`, xzp, `${base}_zero_point`],
        [`${out}_output_quantized`],
      ),
      node(
        'Cast',
        [`${out}_output_quantized`],
        [`${out}_output_quantized_cast_output`],
        [{ name: 'to', type: AttrType.INT, i: DataType.FLOAT }],
      ),
      node('Mul', [xs, `${base}_scale`], [`${out}_scales_mul`]),
      node('Mul', [`${out}_output_quantized_cast_output`, `${out}_scales_mul`], [out]),
    );
    weights.set(out, { dequantized: q.dequantized, k, n: cols });
  }
  g.node = nodes;
  const used = new Set(g.node.flatMap((n) => n.input));
  g.initializer = g.initializer.filter((t) => used.has(t.name));
  return { model: m, quantized: weights.size, weights };
}

/**
 * QDQ-format weights, as onnxruntime's QDQ quantizer writes them: every MatMul with a 2-D float
 * initializer weight reads DequantizeLinear(W_q, scale, zero_point) instead (axis 1 per channel).
 */
export function toQdqWeights(m: ModelProto, variant: Q8Variant) {
  const g = m.graph;
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const weights = new Map<string, Q8Weight>();
  const nodes: NodeProto[] = [];
  for (const n of g.node) {
    const w = n.opType === 'MatMul' ? inits.get(n.input[1]!) : undefined;
    if (w && w.dims.length === 2 && w.dataType === DataType.FLOAT) {
      const [k, cols] = w.dims as [number, number];
      const q = quantizeQ8(floatsOf(w), k, cols, variant);
      const type = variant === 'uint8' ? DataType.UINT8 : DataType.INT8;
      const perChannel = q.scales.length > 1;
      const base = `${w.name}_${weights.size}`;
      const zpDims = perChannel ? [cols] : [];
      g.initializer.push(
        { name: `${base}_quantized`, dataType: type, dims: [k, cols], rawData: q.codes },
        {
          name: `${base}_scale`,
          dataType: DataType.FLOAT,
          dims: zpDims,
          rawData: new Uint8Array(q.scales.buffer),
        },
        {
          name: `${base}_zero_point`,
          dataType: type,
          dims: zpDims,
          rawData: new Uint8Array(perChannel ? cols : 1).fill(q.zp),
        },
      );
      const axis = perChannel ? [{ name: 'axis', type: AttrType.INT, i: 1 }] : [];
      nodes.push(
        node(
          'DequantizeLinear',
          [`${base}_quantized`, `${base}_scale`, `${base}_zero_point`],
          [`${base}_DequantizeLinear_Output`],
          axis,
        ),
      );
      n.input = [n.input[0]!, `${base}_DequantizeLinear_Output`];
      weights.set(n.output[0]!, { dequantized: q.dequantized, k, n: cols });
    }
    nodes.push(n);
  }
  g.node = nodes;
  const used = new Set(g.node.flatMap((n) => n.input));
  g.initializer = g.initializer.filter((t) => used.has(t.name));
  return { model: m, quantized: weights.size, weights };
}

/** FLOAT values clipped to the half range, as onnxconverter-common does before converting. */
function halfTensor(t: TensorProto): TensorProto {
  const values = t.floatData?.length ? Float32Array.from(t.floatData) : floatsOf(t);
  for (let i = 0; i < values.length; i++) values[i] = Math.max(-65504, Math.min(65504, values[i]!));
  return {
    name: t.name,
    dataType: DataType.FLOAT16,
    dims: t.dims,
    rawData: new Uint8Array(toFloat16(values).buffer),
  };
}

/** convert_float_to_float16(keep_io_types=False): every float32 type and value becomes float16. */
export function toFp16(m: ModelProto): ModelProto {
  const g = m.graph;
  g.initializer = g.initializer.map((t) => (t.dataType === DataType.FLOAT ? halfTensor(t) : t));
  for (const v of [...g.input, ...g.output, ...g.valueInfo])
    if (v.elemType === DataType.FLOAT) v.elemType = DataType.FLOAT16;
  for (const n of g.node) {
    for (const a of n.attribute) {
      if (n.opType === 'Cast' && a.name === 'to' && a.i === DataType.FLOAT) a.i = DataType.FLOAT16;
      if (a.t && a.t.dataType === DataType.FLOAT) a.t = halfTensor(a.t);
    }
  }
  return m;
}

/** Writes `m` as a copy of fixture folder `src` (config, tokenizer and the rest) under `dir`. */
export function writeExport(src: string, dir: string, m: ModelProto): string {
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of readdirSync(src))
    if (statSync(join(src, f)).isFile() && f !== 'expected.json') copyFileSync(join(src, f), join(dir, f));
  writeFileSync(join(dir, 'onnx', 'model.onnx'), concat(encodeModel(m)));
  return dir;
}

export function readFixtureModel(src: string): ModelProto {
  return decodeModel(readFileSync(join(src, 'onnx', 'model.onnx')));
}
