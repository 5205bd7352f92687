// Quantized exports (transformers.js q4 / onnxruntime-genai int4: com.microsoft MatMulNBits):
// before the instrumentation surgery, the two MatMuls it must see as plain float32 products are
// dequantized in place: the unembedding (the logits' matmul; the monitor reads W_U) and the last
// layer's down projection (its data input is the neuron activations, its rows are w_out). Every
// other layer stays quantized, so the replica keeps the export's speed and size.

import { attrInt, GraphIndex, PASSTHROUGH_OPS, tensorToFloat32, type ExternalReader } from './graph-query.ts';
import { DataType, type GraphProto, type NodeProto, type TensorProto } from './proto.ts';
import { dequantizeBlocks, type QuantBits } from './quantize.ts';

/** Thrown when a MatMulNBits this code must dequantize uses a layout it does not read. */
export class UnsupportedQuantizationError extends Error {}

function isNBits(node: NodeProto): boolean {
  return node.opType === 'MatMulNBits' && node.domain === 'com.microsoft';
}

/** The MatMulNBits that produces `logits`, walking back through shape-only ops and bias Adds. */
function logitsProducer(index: GraphIndex, logits: string): NodeProto | undefined {
  let current = logits;
  for (let steps = 0; steps < 16; steps++) {
    const node = index.producer(current);
    if (!node) return undefined;
    if (isNBits(node)) return node;
    if (PASSTHROUGH_OPS.has(node.opType)) current = node.input[0]!;
    else if (node.opType === 'Add') {
      const c = node.input.findIndex((i) => !!index.initializer(i));
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
  const tensor = (i: number): TensorProto | undefined => (node.input[i] ? index.initializer(node.input[i]!) : undefined);
  const [b, scales, zp] = [tensor(1), tensor(2), tensor(3)];
  if ((bits !== 4 && bits !== 8) || !b || !scales || k % block !== 0 || b.dataType !== DataType.UINT8)
    throw new UnsupportedQuantizationError(`MatMulNBits "${node.name}": bits ${bits}, K ${k}, block ${block} is not supported`);
  if (node.input.length > 4 && node.input.slice(4).some(Boolean))
    throw new UnsupportedQuantizationError(`MatMulNBits "${node.name}" uses g_idx or bias inputs`);
  if (zp && zp.dataType !== DataType.UINT8)
    throw new UnsupportedQuantizationError(`MatMulNBits "${node.name}" has non-uint8 zero points`);
  const bytes = (t: TensorProto) => (t.rawData ?? read?.(t) ?? new Uint8Array(0));
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
 * Rewrites the unembedding and the last down projection (the last MatMulNBits with K = d_mlp in
 * node order, which ONNX requires to be topological) into MatMul with float32 weights. Returns
 * how many nodes were rewritten (0 for a float export).
 */
export function dequantizeMonitoredMatMuls(
  graph: GraphProto,
  opts: { dMlp: number; logits: string; read?: ExternalReader },
): number {
  const index = new GraphIndex(graph);
  const targets = new Set<NodeProto>();
  const unembed = logitsProducer(index, opts.logits);
  if (unembed) targets.add(unembed);
  const downs = graph.node.filter((n) => isNBits(n) && attrInt(n, 'K', 0) === opts.dMlp);
  if (downs.length) targets.add(downs[downs.length - 1]!);
  for (const node of targets) {
    const w = nbitsWeight(index, node, opts.read);
    const name = `${node.name || node.output[0]}.dequantized_weight`;
    graph.initializer.push({
      name,
      dataType: DataType.FLOAT,
      dims: [attrInt(node, 'K', 0), attrInt(node, 'N', 0)],
      rawData: new Uint8Array(w.buffer),
    });
    node.opType = 'MatMul';
    node.domain = '';
    node.input = [node.input[0]!, name];
    node.attribute = [];
  }
  return targets.size;
}
