// Quantized and half exports: before the instrumentation surgery, the two MatMuls it must see
// as plain float32 products on float32 initializers are folded in place: the unembedding (the
// logits' matmul; the monitor reads W_U) and the last layer's down projection (its data input is
// the neuron activations, its rows are w_out). Every other layer stays quantized, so the replica
// keeps the export's speed and size. The idioms recognised:
//  - com.microsoft MatMulNBits (int4/int8 blocks: transformers.js q4, onnxruntime-genai), here;
//  - MatMul/Gemm on Cast(initializer) or DequantizeLinear(initializer) (quantized-matmul.ts);
//  - quantize_dynamic's DynamicQuantizeLinear + MatMulInteger chain (q8-dynamic-matmul.ts).

import { attrInt, GraphIndex, PASSTHROUGH_OPS, tensorToFloat32, type ExternalReader } from './graph-query.ts';
import { DataType, type GraphProto, type NodeProto, type TensorProto } from './proto.ts';
import { matchDynamicQ8 } from './q8-dynamic-matmul.ts';
import {
  addFloatInitializer,
  matchComputedWeight,
  UnsupportedQuantizationError,
  type IdiomMatcher,
  type QuantizedMatMul,
} from './quantized-matmul.ts';
import { dequantizeBlocks, type QuantBits } from './quantize.ts';

export { UnsupportedQuantizationError };

function isNBits(node: NodeProto): boolean {
  return node.opType === 'MatMulNBits' && node.domain === 'com.microsoft';
}

const matchNBits: IdiomMatcher = (index, node, read) =>
  isNBits(node)
    ? {
        node,
        k: attrInt(node, 'K', 0),
        fold() {
          const w = nbitsWeight(index, node, read);
          const name = addFloatInitializer(
            index,
            `${node.name || node.output[0]}.dequantized_weight`,
            [attrInt(node, 'K', 0), attrInt(node, 'N', 0)],
            w,
          );
          node.opType = 'MatMul';
          node.domain = '';
          node.input = [node.input[0]!, name];
          node.attribute = [];
        },
      }
    : undefined;

const IDIOMS: readonly IdiomMatcher[] = [matchNBits, matchComputedWeight, matchDynamicQ8];

function quantizedMatMul(
  index: GraphIndex,
  node: NodeProto,
  read?: ExternalReader,
): QuantizedMatMul | undefined {
  for (const match of IDIOMS) {
    const site = match(index, node, read);
    if (site) return site;
  }
  return undefined;
}

/** The quantized matmul that produces `logits`, walking back through shape-only ops and bias Adds. */
function logitsProducer(
  index: GraphIndex,
  logits: string,
  read?: ExternalReader,
): QuantizedMatMul | undefined {
  let current = logits;
  for (let steps = 0; steps < 16; steps++) {
    const node = index.producer(current);
    if (!node) return undefined;
    const site = quantizedMatMul(index, node, read);
    if (site) return site;
    if (PASSTHROUGH_OPS.has(node.opType)) current = node.input[0]!;
    else if (node.opType === 'Add') {
      const c = node.input.findIndex((i) => index.isConstant(i));
      if (c < 0) return undefined;
      current = node.input[1 - c]!;
    } else return undefined;
  }
  return undefined;
}

/** W as [K, N] float32 from a MatMulNBits' B / scales / zero_points initializers. */
export function nbitsWeight(index: GraphIndex, node: NodeProto, read?: ExternalReader): Float32Array {
  const k = attrInt(node, 'K', 0);
  const n = attrInt(node, 'N', 0);
  const bits = attrInt(node, 'bits', 4);
  const block = attrInt(node, 'block_size', 0);
  const tensor = (i: number): TensorProto | undefined =>
    node.input[i] ? index.initializer(node.input[i]!) : undefined;
  const [b, scales, zp] = [tensor(1), tensor(2), tensor(3)];
  if ((bits !== 4 && bits !== 8) || !b || !scales || k % block !== 0 || b.dataType !== DataType.UINT8)
    throw new UnsupportedQuantizationError(
      `MatMulNBits "${node.name}": bits ${bits}, K ${k}, block ${block} is not supported`,
    );
  if (node.input.length > 4 && node.input.slice(4).some(Boolean))
    throw new UnsupportedQuantizationError(`MatMulNBits "${node.name}" uses g_idx or bias inputs`);
  if (zp && zp.dataType !== DataType.UINT8)
    throw new UnsupportedQuantizationError(`MatMulNBits "${node.name}" has non-uint8 zero points`);
  const bytes = (t: TensorProto) => t.rawData ?? read?.(t) ?? new Uint8Array(0);
  const blocks = k / block;
  return dequantizeBlocks(
    {
      packed: bytes(b),
      scales: tensorToFloat32(scales, read),
      blocksPerColumn: blocks,
      blockBytes: (block * bits) / 8,
      zeroPoints: zp ? bytes(zp) : null,
    },
    k,
    n,
    bits as QuantBits,
    block,
  );
}

/**
 * Folds the unembedding and the last down projection (the last quantized matmul with K = d_mlp
 * in node order, which ONNX requires to be topological) into float32 MatMuls. Returns how many
 * were folded (0 for a float32 export).
 */
export function dequantizeMonitoredMatMuls(
  graph: GraphProto,
  opts: { dMlp: number; logits: string; read?: ExternalReader },
): number {
  const index = new GraphIndex(graph);
  const targets = new Map<NodeProto, QuantizedMatMul>();
  const unembed = logitsProducer(index, opts.logits, opts.read);
  if (unembed) targets.set(unembed.node, unembed);
  let down: QuantizedMatMul | undefined;
  for (const node of graph.node) {
    const site = quantizedMatMul(index, node, opts.read);
    if (site?.k === opts.dMlp) down = site;
  }
  if (down) targets.set(down.node, down);
  for (const site of targets.values()) site.fold();
  return targets.size;
}
