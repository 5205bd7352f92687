// float16 / bfloat16 exports (transformers.js model_fp16.onnx, onnxconverter-common's
// convert_float_to_float16) become float32 graphs before the instrumentation surgery. On CPU
// onnxruntime has few fast half kernels (our fp16 graphs measured about 3x slower than float32)
// and the runtime feeds float32 KV caches and interventions, so the replica runs in float32.
//
// The graph file is not doubled: each half weight matrix keeps its 2-byte storage under a new
// name and a Cast(to=FLOAT) node produces the original name. onnxruntime's constant folding
// turns those Casts into float32 weights once, when the session loads. Vector-like initializers
// (norm gammas, biases, scalars: at most one dimension above 1) are converted in place instead:
// they are a negligible share of the bytes, and the surgery reads them as constants (the final
// norm's gamma and beta, the logits' bias), which a Cast's output is not. Everything else that
// names a half type (graph inputs/outputs/value_info, Cast-like `to`/`dtype` attributes,
// Constant / ConstantOfShape tensor values) is switched to float32; If/Loop bodies likewise.

import { GraphIndex, tensorToFloat32, type ExternalReader } from './graph-query.ts';
import {
  AttrType,
  DataType,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.ts';

const HALF: ReadonlySet<number> = new Set([DataType.FLOAT16, DataType.BFLOAT16]);

const QUANTIZED_OPS: ReadonlySet<string> = new Set(['DequantizeLinear', 'QuantizeLinear', 'MatMulInteger']);
const isDefaultDomain = (n: NodeProto) => n.domain === '' || n.domain === 'ai.onnx';

/** Ops whose attribute names the element type of what they produce. */
const TYPE_ATTRS: Readonly<Record<string, string>> = {
  Cast: 'to',
  EyeLike: 'dtype',
  RandomNormal: 'dtype',
  RandomUniform: 'dtype',
  RandomNormalLike: 'dtype',
  RandomUniformLike: 'dtype',
  Bernoulli: 'dtype',
  Multinomial: 'dtype',
};

/**
 * Rewrites every half-precision type in `graph` (and its subgraphs) to float32, in place.
 * Returns how many initializers were wrapped in a Cast (0 for a float32 graph).
 */
export function upcastFloat16(graph: GraphProto, read?: ExternalReader): number {
  let wrapped = 0;
  const index = new GraphIndex(graph);
  const taken = index.allNames();
  const graphInputs = new Set(graph.input.map((v) => v.name));
  const casts: NodeProto[] = [];
  for (const t of graph.initializer) {
    if (!HALF.has(t.dataType)) continue;
    // Converted in place too: an initializer that is also a graph input (IR < 4), which a feed
    // may override; and the quantization parameters of quantized ops (MatMulNBits' scales in a
    // transformers.js q4f16 export, DequantizeLinear's), which those ops read as initializers.
    const quantParams = index
      .consumers(t.name)
      .some((n) => QUANTIZED_OPS.has(n.opType) || !isDefaultDomain(n));
    if (t.dims.filter((d) => d > 1).length < 2 || graphInputs.has(t.name) || quantParams) {
      toFloat32InPlace(t, read);
      continue;
    }
    const original = t.name;
    t.name = freshName(taken, `${original}.half`);
    casts.push({
      name: `${original}.upcast`,
      opType: 'Cast',
      domain: '',
      input: [t.name],
      output: [original],
      attribute: [{ name: 'to', type: AttrType.INT, i: DataType.FLOAT }],
    });
    wrapped++;
  }
  graph.node.unshift(...casts);
  for (const v of [...graph.input, ...graph.output, ...graph.valueInfo]) upcastValueInfo(v);
  for (const node of graph.node) wrapped += upcastNode(node, read);
  return wrapped;
}

function upcastNode(node: NodeProto, read?: ExternalReader): number {
  let wrapped = 0;
  const typeAttr = node.domain === '' || node.domain === 'ai.onnx' ? TYPE_ATTRS[node.opType] : undefined;
  for (const a of node.attribute) {
    if (typeAttr && a.name === typeAttr && a.i !== undefined && HALF.has(a.i)) a.i = DataType.FLOAT;
    // Constant `value`, ConstantOfShape `value`, and any other tensor-valued attribute.
    if (a.t && HALF.has(a.t.dataType)) toFloat32InPlace(a.t, read);
    if (a.g) wrapped += upcastFloat16(a.g, read);
  }
  return wrapped;
}

function upcastValueInfo(v: ValueInfoProto): void {
  if (v.elemType !== undefined && HALF.has(v.elemType)) v.elemType = DataType.FLOAT;
}

/** Replaces a half tensor's storage by its float32 values (same name and shape). */
function toFloat32InPlace(t: TensorProto, read?: ExternalReader): void {
  const values = tensorToFloat32(t, read);
  for (const field of ['int32Data', 'externalData', 'dataLocation'] as const) delete t[field];
  t.dataType = DataType.FLOAT;
  t.rawData = new Uint8Array(values.buffer);
}

function freshName(taken: Set<string>, base: string): string {
  let name = base;
  for (let i = 1; taken.has(name); i++) name = `${base}${i}`;
  taken.add(name);
  return name;
}
