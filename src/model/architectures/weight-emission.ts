// How a decoder MatMul weight is written into the graph: float32, float16 or int8 / int4
// weight-only quantized. One decision per MatMul, taken here so the decoder graph itself only
// says "x @ W"; everything else (norms, biases, embeddings, the residual stream, the KV cache)
// stays float32 whatever the dtype.
//
// Kernels, measured on this project's 2-core AVX2 build machine (onnxruntime-node 1.30, one
// token through 24 GPT-2-small MLP MatMuls, interleaved medians; see README "Choosing a dtype"):
//   float32 MatMul 36.7 ms | MatMulNBits 8-bit 16.1 ms | 4-bit 12.8 ms (accuracy_level 4)
//   DequantizeLinear(int8, per channel) + MatMul 172 ms | MatMulNBits accuracy_level 0: 4-bit 36 ms, 8-bit 259 ms
// so int8 and int4 both use com.microsoft MatMulNBits with accuracy_level 4 (activations are
// quantized to int8 per block inside the kernel, which is where the speed comes from).
// float16 casts the activations to half around each MatMul: the dtype for CUDA's tensor cores;
// on this CPU it measured 3x SLOWER than float32 (no AVX2 half kernels), so it is never a CPU default.

import type { GraphBuilder } from '../onnx/graph-builder.ts';
import { DataType } from '../onnx/proto.ts';
import { quantizable, quantizeBlocks, toFloat16, type QuantBits } from '../onnx/quantize.ts';

export const DTYPES = ['fp32', 'fp16', 'int8', 'int4'] as const;
export type WeightDtype = (typeof DTYPES)[number];

/**
 * Rows per quantization block (along K, the input dimension): MatMulNBits' block_size.
 *  - int8: 32.
 *  - int4: 32 (onnxruntime-genai's default; a sixth of float32's bytes with scales and zero
 *    points), but 16 for matrices narrower than 128 inputs. Measured: at GPT-2-small size
 *    block 32 runs one decode step's int4 MatMuls in 6.9 ms against 14.7 ms at block 16 (the
 *    MLAS int8-activation kernels are tuned for 32 and up), while on aidreams260K (d_model 64:
 *    two blocks per column at 32) block 32 gives 0.110 nats mean |d entropy|, over the 0.1
 *    target, against 0.095 at 16. Narrow matrices are cheap whatever their block, so they get
 *    the finer one. (Tried and dropped: a least-squares clipped-range search per block lowered
 *    weight error but not entropy error, 0.114 on aidreams at 32.)
 */
export function quantBlockSize(dtype: 'int8' | 'int4', k: number): number {
  if (dtype === 'int8') return 32;
  return k < 128 ? 16 : 32;
}

/**
 * Names the quantization scheme (layout, rounding, block sizes) in the graph cache key: bump it
 * when the codes written for the same weights change, so stale quantized graphs are not reused.
 */
export const QUANT_SCHEME = 'mnb-asym-int8b32-int4b32k128b16-v2';

/** MatMulNBits accuracy_level 4: int8 activations, the fast path of ORT's CPU kernels. */
const ACCURACY_LEVEL = 4;

export interface WeightEmission {
  dtype: WeightDtype;
  /** Default false: the last layer's MLP and the unembedding stay float32 (the monitor reads them). */
  quantizeLastLayer: boolean;
  lastLayer: number;
}

export const FP32_EMISSION: WeightEmission = { dtype: 'fp32', quantizeLastLayer: false, lastLayer: -1 };

const policies = new WeakMap<GraphBuilder, WeightEmission>();

/** Attaches a dtype policy to a builder; `linear` (graph-ops.ts) consults it for every weight. */
export function setWeightEmission(g: GraphBuilder, e: WeightEmission): void {
  policies.set(g, e);
}

export function weightEmission(g: GraphBuilder): WeightEmission {
  return policies.get(g) ?? FP32_EMISSION;
}

/** Whether `name` (a `layers.L.*` or `unembedding` MatMul) is one of the monitored weights. */
export function isMonitoredWeight(name: string, lastLayer: number): boolean {
  return name === 'unembedding' || name.startsWith(`layers.${lastLayer}.mlp.`);
}

/** The dtype a given [K, N] MatMul weight gets under the builder's policy. */
export function dtypeFor(g: GraphBuilder, name: string, k: number): WeightDtype {
  const e = weightEmission(g);
  if (e.dtype === 'fp32') return 'fp32';
  if (!e.quantizeLastLayer && isMonitoredWeight(name, e.lastLayer)) return 'fp32';
  // A matrix narrower than one block, or not a whole number of blocks (tiny test models),
  // stays float32 rather than being padded: it is small by definition.
  if ((e.dtype === 'int8' || e.dtype === 'int4') && !quantizable(k, quantBlockSize(e.dtype, k))) return 'fp32';
  return e.dtype;
}

/** x @ W for W given as [K, N] row-major float32, written in the dtype the policy picks. */
export function emitMatMul(
  g: GraphBuilder,
  x: string,
  name: string,
  k: number,
  n: number,
  w: Float32Array,
  out?: string,
): string {
  const dtype = dtypeFor(g, name, k);
  if (dtype === 'fp32') return g.node('MatMul', [x, g.weight(`${name}.weight`, [k, n], w)], {}, out);
  if (dtype === 'fp16') {
    const half = toFloat16(w);
    const wHalf = g.tensor(`${name}.weight_fp16`, DataType.FLOAT16, [k, n], new Uint8Array(half.buffer));
    const y = g.node('MatMul', [g.node('Cast', [x], { to: DataType.FLOAT16 }), wHalf]);
    return g.node('Cast', [y], { to: DataType.FLOAT }, out);
  }
  const bits: QuantBits = dtype === 'int8' ? 8 : 4;
  const block = quantBlockSize(dtype, k);
  const q = quantizeBlocks(w, k, n, bits, block);
  const b = g.tensor(`${name}.weight_q${bits}`, DataType.UINT8, [n, q.blocksPerColumn, q.blockBytes], q.packed);
  const scales = g.tensor(
    `${name}.weight_scales`,
    DataType.FLOAT,
    [n * q.blocksPerColumn],
    new Uint8Array(q.scales.buffer),
  );
  const attrs = { K: k, N: n, bits, block_size: block, accuracy_level: ACCURACY_LEVEL };
  const inputs = [x, b, scales];
  if (q.zeroPoints) inputs.push(g.tensor(`${name}.weight_zero_points`, DataType.UINT8, [q.zeroPoints.length], q.zeroPoints));
  const y = g.contribNode('MatMulNBits', inputs, attrs);
  return out ? g.node('Identity', [y], {}, out) : y;
}
