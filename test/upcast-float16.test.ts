// upcastFloat16 on a hand-built float16 graph that uses every place a half type can hide: IO,
// a weight matrix (wrapped in a Cast), a bias vector (converted in place), Cast `to`,
// ConstantOfShape's and Constant's tensor values, an EyeLike `dtype`, and an If whose branches
// hold their own half initializer and Constant. onnxruntime runs both graphs: the float32 one
// must compute what the float16 one does (to half precision), from float32 inputs.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, expect, it } from 'vitest';
import {
  AttrType,
  concat,
  DataType,
  encodeModel,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from '../src/model/onnx/proto.ts';
import { fromFloat16, toFloat16 } from '../src/model/onnx/quantize.ts';
import { upcastFloat16 } from '../src/model/onnx/upcast-float16.ts';

const scratch = mkdtempSync(join(tmpdir(), 'upcast-float16-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const H = DataType.FLOAT16;
const half = (name: string, dims: number[], values: number[]): TensorProto => ({
  name,
  dataType: H,
  dims,
  rawData: new Uint8Array(toFloat16(Float32Array.from(values)).buffer),
});
const node = (
  opType: string,
  input: string[],
  output: string[],
  attribute: NodeProto['attribute'] = [],
): NodeProto => ({
  name: output[0]!,
  opType,
  domain: '',
  input,
  output,
  attribute,
});
const branch = (name: string, nodes: NodeProto[], initializer: TensorProto[]): GraphProto => ({
  name,
  node: nodes,
  initializer,
  input: [],
  output: [{ name: `${name}_out`, elemType: H, shape: [{ value: 2 }, { value: 4 }] }],
  valueInfo: [],
});

function halfModel(): ModelProto {
  const W = Array.from({ length: 12 }, (_, i) => (i - 5) / 7);
  const graph: GraphProto = {
    name: 'g',
    input: [
      { name: 'x', elemType: H, shape: [{ value: 2 }, { value: 3 }] },
      { name: 'cond', elemType: DataType.BOOL, shape: [] },
    ],
    output: [
      { name: 'y', elemType: H, shape: [{ value: 2 }, { value: 4 }] },
      { name: 'eye', elemType: H, shape: [{ value: 2 }, { value: 4 }] },
    ],
    valueInfo: [{ name: 'z', elemType: H, shape: [{ value: 2 }, { value: 4 }] }],
    initializer: [
      half('w', [3, 4], W),
      half('b', [4], [0.25, -0.5, 1, 2]),
      { name: 'shape', dataType: DataType.INT64, dims: [2], int64Data: [2, 4] },
    ],
    node: [
      node('MatMul', ['x', 'w'], ['xw']),
      node('Add', ['xw', 'b'], ['z']),
      node(
        'ConstantOfShape',
        ['shape'],
        ['c'],
        [{ name: 'value', type: AttrType.TENSOR, t: half('v', [1], [0.125]) }],
      ),
      node('Add', ['z', 'c'], ['zc']),
      node('Cast', ['zc'], ['zh'], [{ name: 'to', type: AttrType.INT, i: H }]),
      node('EyeLike', ['zh'], ['eye'], [{ name: 'dtype', type: AttrType.INT, i: H }]),
      node(
        'If',
        ['cond'],
        ['y'],
        [
          {
            name: 'then_branch',
            type: AttrType.GRAPH,
            g: branch(
              'then',
              [node('Mul', ['zh', 'm'], ['then_out'])],
              [half('m', [2, 4], [1, 2, 3, 4, 5, 6, 7, 8])],
            ),
          },
          {
            name: 'else_branch',
            type: AttrType.GRAPH,
            g: branch(
              'else',
              [
                node(
                  'Constant',
                  [],
                  ['k'],
                  [{ name: 'value', type: AttrType.TENSOR, t: half('k', [], [-3]) }],
                ),
                node('Mul', ['zh', 'k'], ['else_out']),
              ],
              [],
            ),
          },
        ],
      ),
    ],
  };
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 14 }],
    producerName: 't',
    producerVersion: '',
    graph,
    metadataProps: [],
  };
}

async function runModel(m: ModelProto, file: string, x: Float32Array, cond: boolean, asHalf: boolean) {
  writeFileSync(join(scratch, file), concat(encodeModel(m)));
  const session = await ort.InferenceSession.create(join(scratch, file));
  const feed = asHalf
    ? new ort.Tensor('float16', toFloat16(x), [2, 3])
    : new ort.Tensor('float32', x, [2, 3]);
  const out = await session.run({ x: feed, cond: new ort.Tensor('bool', [cond], []) });
  await session.release();
  const values = (name: string) => {
    const t = out[name] as ort.Tensor;
    expect(t.type).toBe(asHalf ? 'float16' : 'float32');
    return asHalf ? fromFloat16(t.data as Uint16Array) : (t.data as Float32Array);
  };
  return { y: Array.from(values('y')), eye: Array.from(values('eye')) };
}

it('rewrites every half type to float32 and computes what the float16 graph computes', async () => {
  const x = Float32Array.from([0.5, -1, 2, 1.5, 0.25, -0.75]);
  const m = halfModel();
  const wrapped = upcastFloat16(m.graph);

  // The matrices (w, and the then-branch's m) stay half behind a Cast; the bias is float32 in place.
  expect(wrapped).toBe(2);
  const types = (g: GraphProto) => g.initializer.map((t) => `${t.name}:${t.dataType}`);
  expect(types(m.graph)).toEqual(['w.half:10', 'b:1', 'shape:7']);
  expect(m.graph.node[0]).toMatchObject({ opType: 'Cast', input: ['w.half'], output: ['w'] });
  expect([...m.graph.input, ...m.graph.output, ...m.graph.valueInfo].map((v) => v.elemType)).toEqual([
    1,
    DataType.BOOL,
    1,
    1,
    1,
  ]);
  const byOp = (op: string) => m.graph.node.find((n) => n.opType === op)!;
  expect(byOp('ConstantOfShape').attribute[0]!.t!.dataType).toBe(DataType.FLOAT);
  expect(byOp('EyeLike').attribute[0]!.i).toBe(DataType.FLOAT);
  expect(m.graph.node.filter((n) => n.opType === 'Cast').map((n) => n.attribute[0]!.i)).toEqual([1, 1]);
  const [thenG, elseG] = byOp('If').attribute.map((a) => a.g!);
  expect(types(thenG!)).toEqual(['m.half:10']);
  expect(thenG!.output[0]!.elemType).toBe(DataType.FLOAT);
  expect(elseG!.node.find((n) => n.opType === 'Constant')!.attribute[0]!.t!.dataType).toBe(DataType.FLOAT);

  for (const cond of [true, false]) {
    const want = await runModel(halfModel(), `half-${cond}.onnx`, x, cond, true);
    const got = await runModel(m, `upcast-${cond}.onnx`, x, cond, false);
    expect(got.eye).toEqual(want.eye);
    // float32 arithmetic on the same (half) weights: equal to half precision (|y| < 40 here).
    got.y.forEach((v, i) => expect(Math.abs(v - want.y[i]!)).toBeLessThan(0.05));
  }
});

it('upcasts bfloat16 initializers too, with their values unchanged', () => {
  const bits = Uint16Array.from([0x3f80, 0xc040, 0x3e00, 0x4120]); // 1, -3, 0.125, 10
  const t: TensorProto = {
    name: 'w',
    dataType: DataType.BFLOAT16,
    dims: [2, 2],
    rawData: new Uint8Array(bits.buffer),
  };
  const v: TensorProto = {
    name: 'v',
    dataType: DataType.BFLOAT16,
    dims: [2],
    rawData: new Uint8Array(bits.slice(0, 2).buffer),
  };
  const g: GraphProto = { name: 'g', node: [], initializer: [t, v], input: [], output: [], valueInfo: [] };
  expect(upcastFloat16(g)).toBe(1);
  expect(g.node[0]).toMatchObject({ opType: 'Cast', input: ['w.half'], output: ['w'] });
  expect(Array.from(new Float32Array(v.rawData!.slice().buffer))).toEqual([1, -3]);
  expect(v.dataType).toBe(DataType.FLOAT);
});
