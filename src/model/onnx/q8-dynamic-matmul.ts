// The chain onnxruntime.quantization's quantize_dynamic writes for each MatMul it quantizes to
// 8 bits (transformers.js ships it as model_quantized.onnx / model_int8.onnx / model_uint8.onnx):
//
//   DynamicQuantizeLinear(x)               -> x_q, x_scale, x_zp
//   MatMulInteger(x_q, W_q, x_zp, W_zp)    -> int32 product      (W_q an int8/uint8 initializer)
//   Cast(to=FLOAT)                          -> float product
//   Mul(x_scale, W_scale)                   -> scale product
//   Mul(float product, scale product)       -> the original MatMul's output
//
// Folding rewrites the last Mul into MatMul(x, W) with W = (W_q - W_zp) * W_scale (per tensor,
// or per output column), writing the same output name, so nothing downstream changes. The rest
// of the chain is left for the surgery's dead-node pass (a DynamicQuantizeLinear other matmuls
// read stays).

import type { ExternalReader, GraphIndex } from './graph-query.ts';
import { attrInt } from './graph-query.ts';
import { DataType, type NodeProto } from './proto.ts';
import {
  addFloatInitializer,
  dequantizeMatrix,
  floatConstant,
  integerCodes,
  isDefaultDomain,
  UnsupportedQuantizationError,
  type IdiomMatcher,
} from './quantized-matmul.ts';

function producerOf(index: GraphIndex, name: string | undefined, opType: string): NodeProto | undefined {
  const node = name ? index.producer(name) : undefined;
  return node && node.opType === opType && isDefaultDomain(node) ? node : undefined;
}

/** Recognised at the chain's last Mul (where its product leaves); the layout is checked when folding. */
export const matchDynamicQ8: IdiomMatcher = (index, node, read) => {
  if (node.opType !== 'Mul' || !isDefaultDomain(node) || node.input.length !== 2) return undefined;
  for (const side of [0, 1]) {
    const cast = producerOf(index, node.input[side], 'Cast');
    const mmi = producerOf(index, cast?.input[0], 'MatMulInteger');
    if (!cast || !mmi || attrInt(cast, 'to', 0) !== DataType.FLOAT) continue;
    const scaleProduct = node.input[1 - side]!;
    const w = index.initializer(mmi.input[1] ?? '');
    return {
      node,
      k: w?.dims.length === 2 ? w.dims[0] : undefined,
      fold: () => foldChain(index, node, mmi, scaleProduct, read),
    };
  }
  return undefined;
};

function foldChain(
  index: GraphIndex,
  tail: NodeProto,
  mmi: NodeProto,
  scaleProduct: string,
  read?: ExternalReader,
): void {
  const where = `MatMulInteger "${mmi.name || mmi.output[0]}"`;
  const refuse = (why: string) => new UnsupportedQuantizationError(`${where}: ${why}`);
  const dql = producerOf(index, mmi.input[0], 'DynamicQuantizeLinear');
  if (!dql) throw refuse('its input is not quantized by a DynamicQuantizeLinear');
  if (mmi.input[2] && mmi.input[2] !== dql.output[2])
    throw refuse("its input zero point is not the DynamicQuantizeLinear's");
  const wq = index.initializer(mmi.input[1] ?? '');
  if (!wq) throw refuse(`its weight "${mmi.input[1]}" is not an initializer`);
  if (wq.dims.length !== 2)
    throw refuse(`its weight "${wq.name}" is ${wq.dims.length}-D, not a [K, N] matrix`);

  const mul = producerOf(index, scaleProduct, 'Mul');
  const scaleSide = mul ? mul.input.findIndex((i) => i !== dql.output[1]) : -1;
  if (!mul || mul.input.length !== 2 || !mul.input.includes(dql.output[1]!) || scaleSide < 0)
    throw refuse(`the output scale "${scaleProduct}" is not Mul(input scale, weight scale)`);
  const scale = floatConstant(index, mul.input[scaleSide]!, read, where);

  let zeroPoint: Int32Array | null = null;
  const zpName = mmi.input[3];
  if (zpName) {
    const zp = index.constant(zpName);
    if (!zp) throw refuse(`its weight zero point "${zpName}" is not a constant`);
    if (zp.dims.length > 1)
      throw refuse(
        `its weight zero point "${zpName}" is ${zp.dims.length}-D ([${zp.dims}]), not a scalar or [N]`,
      );
    if (zp.dataType !== wq.dataType)
      throw refuse(`its weight zero point "${zpName}" and weight differ in type`);
    zeroPoint = integerCodes(zp, read, where);
  }
  // MatMulInteger's per-channel zero points and the scale run along the output columns (axis 1).
  const w = dequantizeMatrix(integerCodes(wq, read, where), wq.dims, scale, zeroPoint, 1, where);
  const name = addFloatInitializer(index, `${wq.name}.dequantized`, [...wq.dims], w);
  tail.opType = 'MatMul';
  tail.domain = '';
  tail.input = [dql.input[0]!, name];
  tail.attribute = [];
}
