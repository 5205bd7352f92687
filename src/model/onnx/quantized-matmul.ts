// What the export surgery needs to know about a quantized (or half) matmul idiom, and the idiom
// whose weight is a float matmul operand computed from a stored tensor: MatMul/Gemm(x, W) with W
// = Cast(initializer) (float16 exports after upcast-float16.ts) or DequantizeLinear(initializer,
// scale, zero_point) (QDQ-format exports), possibly through a Transpose (tied embeddings).
// dequantize-export.ts walks the graph for the two monitored sites and folds only those.

import {
  attrInt,
  attrInts,
  elementCount,
  tensorToFloat32,
  type ExternalReader,
  type GraphIndex,
} from './graph-query.ts';
import { DataType, type NodeProto, type TensorProto } from './proto.ts';

/** Thrown when a quantized matmul this code must dequantize uses a layout it does not read. */
export class UnsupportedQuantizationError extends Error {}

/** One matmul in a quantized (or half) idiom, found at the node that writes its product. */
export interface QuantizedMatMul {
  /** The node whose output is the product (the matmul, or the last node of its chain). */
  node: NodeProto;
  /** Input features (K), when the layout shows them; the down projection has K = d_mlp. */
  k: number | undefined;
  /** Rewrites the product as a float32 MatMul/Gemm on a float32 initializer, same output name. */
  fold(): void;
}

export type IdiomMatcher = (
  index: GraphIndex,
  node: NodeProto,
  read?: ExternalReader,
) => QuantizedMatMul | undefined;

export const isDefaultDomain = (n: NodeProto): boolean => n.domain === '' || n.domain === 'ai.onnx';

/** Adds a float32 initializer under a name not yet in use; returns the name. */
export function addFloatInitializer(
  index: GraphIndex,
  base: string,
  dims: number[],
  values: Float32Array,
): string {
  // The index is a snapshot: initializers added by earlier folds are only in the graph.
  const taken = new Set([...index.allNames(), ...index.graph.initializer.map((t) => t.name)]);
  let name = base;
  for (let i = 1; taken.has(name); i++) name = `${base}${i}`;
  index.graph.initializer.push({
    name,
    dataType: DataType.FLOAT,
    dims,
    rawData: new Uint8Array(values.buffer),
  });
  return name;
}

/** The codes of an INT8 / UINT8 tensor (raw_data, or int32_data when stored that way). */
export function integerCodes(t: TensorProto, read: ExternalReader | undefined, where: string): Int32Array {
  if (t.dataType !== DataType.INT8 && t.dataType !== DataType.UINT8)
    throw new UnsupportedQuantizationError(
      `${where}: "${t.name}" has ONNX data type ${t.dataType}, not int8 or uint8`,
    );
  const n = elementCount(t);
  if (t.int32Data?.length === n) return Int32Array.from(t.int32Data);
  const bytes = t.dataLocation === 1 || t.externalData?.length ? read?.(t) : t.rawData;
  if (!bytes || bytes.length !== n)
    throw new UnsupportedQuantizationError(
      `${where}: "${t.name}" holds ${bytes?.length ?? 0} bytes, its shape needs ${n}`,
    );
  if (t.dataType === DataType.UINT8) return Int32Array.from(bytes);
  return Int32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/**
 * (codes - zeroPoint) * scale for a [rows, cols] matrix, the scale and zero point either one
 * value or one per index along `axis` (0: per row, 1: per column).
 */
export function dequantizeMatrix(
  codes: Int32Array,
  dims: readonly number[],
  scale: Float32Array,
  zeroPoint: Int32Array | null,
  axis: number,
  where: string,
): Float32Array {
  const [rows, cols] = dims as [number, number];
  const along = axis === 0 ? rows : cols;
  const perAxis = (len: number | undefined) => len === undefined || len === 1 || len === along;
  if (
    dims.length !== 2 ||
    (axis !== 0 && axis !== 1) ||
    !perAxis(scale.length) ||
    !perAxis(zeroPoint?.length)
  )
    throw new UnsupportedQuantizationError(
      `${where}: scale [${scale.length}] / zero point [${zeroPoint?.length ?? 0}] along axis ${axis} of a [${dims}] weight is not a per-tensor or per-channel layout`,
    );
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const j = axis === 0 ? r : c;
      const s = scale.length === 1 ? scale[0]! : scale[j]!;
      const z = !zeroPoint ? 0 : zeroPoint.length === 1 ? zeroPoint[0]! : zeroPoint[j]!;
      out[r * cols + c] = (codes[r * cols + c]! - z) * s;
    }
  }
  return out;
}

/** A constant's values as float32, or an error naming `where`. */
export function floatConstant(
  index: GraphIndex,
  name: string,
  read: ExternalReader | undefined,
  where: string,
): Float32Array {
  const t = index.constant(name);
  if (!t) throw new UnsupportedQuantizationError(`${where}: "${name}" is not a constant`);
  return tensorToFloat32(t, read);
}

/** The Cast / DequantizeLinear that computes a weight from a stored tensor, and the operand it feeds. */
function weightSource(
  index: GraphIndex,
  operand: string,
): { node: NodeProto; transposed: boolean } | undefined {
  let name = operand;
  let transposed = false;
  const t = index.producer(name);
  if (t?.opType === 'Transpose' && isDefaultDomain(t)) {
    const perm = attrInts(t, 'perm');
    if (perm && !(perm[0] === 1 && perm[1] === 0)) return undefined;
    name = t.input[0]!;
    transposed = true;
  }
  const node = index.producer(name);
  if (!node || !isDefaultDomain(node) || !index.initializer(node.input[0] ?? '')) return undefined;
  if (node.opType === 'Cast' && attrInt(node, 'to', 0) === DataType.FLOAT) return { node, transposed };
  if (node.opType === 'DequantizeLinear') return { node, transposed };
  return undefined;
}

/** MatMul/Gemm(x, Cast(W)) or MatMul/Gemm(x, DequantizeLinear(W_q, scale, zp)), maybe through a Transpose. */
export const matchComputedWeight: IdiomMatcher = (index, node, read) => {
  if ((node.opType !== 'MatMul' && node.opType !== 'Gemm') || !isDefaultDomain(node)) return undefined;
  const src = weightSource(index, node.input[1] ?? '');
  if (!src) return undefined;
  const stored = index.initializer(src.node.input[0]!)!;
  const flipped = src.transposed !== (node.opType === 'Gemm' && attrInt(node, 'transB', 0) === 1);
  const k = stored.dims.length === 2 ? stored.dims[flipped ? 1 : 0] : undefined;
  return {
    node,
    k,
    fold() {
      const where = `${src.node.opType} "${src.node.name || src.node.output[0]}" (weight of ${node.opType} "${node.name}")`;
      if (stored.dims.length !== 2) throw new UnsupportedQuantizationError(`${where}: the weight is not 2-D`);
      const values =
        src.node.opType === 'Cast'
          ? castValues(stored, read, where)
          : dequantizeLinear(index, src.node, stored, read, where);
      // The operand the product sees, as its own initializer: only the monitored product reads
      // it, so anything else sharing the Cast or Transpose (a tied embedding's Gather) keeps it.
      const [rows, cols] = stored.dims as [number, number];
      const operand = src.transposed ? transpose(values, rows, cols) : values;
      const name = addFloatInitializer(
        index,
        `${stored.name}.float32`,
        src.transposed ? [cols, rows] : [rows, cols],
        operand,
      );
      node.input = node.input.map((i, j) => (j === 1 ? name : i));
    },
  };
};

function castValues(stored: TensorProto, read: ExternalReader | undefined, where: string): Float32Array {
  try {
    return tensorToFloat32(stored, read);
  } catch (e) {
    throw new UnsupportedQuantizationError(`${where}: ${(e as Error).message}`);
  }
}

function dequantizeLinear(
  index: GraphIndex,
  node: NodeProto,
  stored: TensorProto,
  read: ExternalReader | undefined,
  where: string,
): Float32Array {
  if (attrInt(node, 'block_size', 0) !== 0)
    throw new UnsupportedQuantizationError(`${where}: blocked DequantizeLinear is not supported`);
  const scale = floatConstant(index, node.input[1] ?? '', read, where);
  const zpName = node.input[2];
  let zeroPoint: Int32Array | null = null;
  if (zpName) {
    const zp = index.constant(zpName);
    if (!zp) throw new UnsupportedQuantizationError(`${where}: zero point "${zpName}" is not a constant`);
    if (zp.dims.length > 1)
      throw new UnsupportedQuantizationError(`${where}: zero point "${zpName}" is ${zp.dims.length}-D`);
    zeroPoint = integerCodes(zp, read, where);
  }
  const axis = attrInt(node, 'axis', 1);
  return dequantizeMatrix(
    integerCodes(stored, read, where),
    stored.dims,
    scale,
    zeroPoint,
    axis < 0 ? axis + 2 : axis,
    where,
  );
}

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}
