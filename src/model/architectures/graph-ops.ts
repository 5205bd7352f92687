// Building blocks shared by every decoder graph: norms, activations, RoPE and the attention
// mask, written with standard opset-17 ops in the shapes ONNX Runtime's optimizer recognizes
// (so LayerNorm / RMSNorm / GELU get fused kernels where it can).

import type { Activation } from '../config.ts';
import type { NormType } from '../types.ts';
import type { GraphBuilder } from '../onnx/graph-builder.ts';
import { DataType } from '../onnx/proto.ts';
import type { LinearWeights, NormWeights } from './weights.ts';
import { emitMatMul } from './weight-emission.ts';
import type { OpEmitter } from '../onnx/last-layer-hook.ts';

/** x @ W (+ b), W stored as one [in, out] weight in the dtype the builder's policy picks. */
export function linear(
  g: GraphBuilder,
  x: string,
  w: LinearWeights,
  name: string,
  inF: number,
  outF: number,
): string {
  const y = emitMatMul(g, x, name, inF, outF, w.weight);
  return w.bias ? g.node('Add', [y, g.weight(`${name}.bias`, [outF], w.bias)]) : y;
}

export function norm(
  g: GraphBuilder,
  x: string,
  w: NormWeights,
  type: NormType,
  eps: number,
  name: string,
): string {
  const width = w.weight.length;
  const gamma = g.weight(`${name}.weight`, [width], w.weight);
  if (type === 'layernorm') {
    const beta = g.weight(`${name}.bias`, [width], w.bias ?? new Float32Array(width));
    return g.node('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: { float: eps } });
  }
  // x / sqrt(mean(x^2) + eps) * gamma: the Pow/ReduceMean/Add/Sqrt/Div/Mul chain that ORT fuses
  // into its SimplifiedLayerNormalization kernel.
  const meanSquare = g.node('ReduceMean', [g.node('Pow', [x, g.float(2)])], { axes: [-1], keepdims: 1 });
  const rms = g.node('Sqrt', [g.node('Add', [meanSquare, g.float(eps)])]);
  return g.node('Mul', [g.node('Div', [x, rms]), gamma]);
}

/**
 * The GraphBuilder seen through the hook's OpEmitter (onnx/last-layer-hook.ts), so the builder
 * and the export surgery emit the same last-layer instrumentation. The builder writes opset 17,
 * where ReduceMean still takes its axes as an attribute.
 */
export function builderEmitter(g: GraphBuilder): OpEmitter {
  return {
    opset: 17,
    op: (opType, inputs, out, attrs) => g.node(opType, inputs, attrs ?? {}, out),
    opN: (opType, inputs, n, attrs, outs) => g.nodeN(opType, inputs, n, attrs ?? {}, outs),
    int64s: (values) => g.int64(values),
    float: (value) => g.float(value),
    reduceMeanLastAxis: (x, keepdims) => g.node('ReduceMean', [x], { axes: [-1], keepdims: keepdims ? 1 : 0 }),
    unsqueeze: (x, axes) => g.node('Unsqueeze', [x, g.int64(axes)]),
  };
}

export function activation(g: GraphBuilder, x: string, kind: Activation): string {
  switch (kind) {
    case 'relu':
      return g.node('Relu', [x]);
    case 'silu':
      return g.node('Mul', [x, g.node('Sigmoid', [x])]);
    case 'gelu': {
      // 0.5 x (1 + erf(x / sqrt 2)), in the order PyTorch exports it (ORT's GeluFusion pattern).
      const erf = g.node('Erf', [g.node('Div', [x, g.float(Math.SQRT2)])]);
      return g.node('Mul', [g.node('Mul', [x, g.node('Add', [erf, g.float(1)])]), g.float(0.5)]);
    }
    case 'gelu_tanh': {
      // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
      const cubic = g.node('Mul', [g.node('Pow', [x, g.float(3)]), g.float(0.044715)]);
      const inner = g.node('Mul', [g.node('Add', [x, cubic]), g.float(Math.sqrt(2 / Math.PI))]);
      const gate = g.node('Add', [g.node('Tanh', [inner]), g.float(1)]);
      return g.node('Mul', [g.node('Mul', [x, g.float(0.5)]), gate]);
    }
  }
}

export interface RopeTables {
  /** [batch, seq, 1, rotaryDim]: cos(pos * f) repeated for both halves. */
  cos: string;
  /** [batch, seq, 1, rotaryDim]: (-sin, +sin) halves, so rotate_half needs no Neg per layer. */
  sinSigned: string;
  rotaryDim: number;
}

export function ropeTables(g: GraphBuilder, positionIds: string, invFreq: Float64Array): RopeTables {
  const pos = g.node('Unsqueeze', [g.node('Cast', [positionIds], { to: DataType.FLOAT }), g.int64([2])]);
  // float32 product of float32 frequencies and positions, as HF computes it.
  const freqs = g.node('Mul', [pos, g.float(Array.from(Float32Array.from(invFreq)))]);
  const cos = g.node('Cos', [freqs]);
  const sin = g.node('Sin', [freqs]);
  const headAxis = g.int64([2]);
  return {
    cos: g.node('Unsqueeze', [g.node('Concat', [cos, cos], { axis: -1 }), headAxis]),
    sinSigned: g.node('Unsqueeze', [g.node('Concat', [g.node('Neg', [sin]), sin], { axis: -1 }), headAxis]),
    rotaryDim: invFreq.length * 2,
  };
}

/**
 * HF rotate_half RoPE on x [batch, seq, heads, headDim], rotating the first rotaryDim dims:
 * x*cos + rotate_half(x)*sin, where rotate_half(x1, x2) = (-x2, x1).
 */
export function applyRope(g: GraphBuilder, x: string, t: RopeTables, headDim: number): string {
  const half = t.rotaryDim / 2;
  const partial = t.rotaryDim < headDim;
  const [rot, pass] = partial
    ? g.nodeN('Split', [x, g.int64([t.rotaryDim, headDim - t.rotaryDim])], 2, { axis: -1 })
    : [x, ''];
  const [x1, x2] = g.nodeN('Split', [rot!, g.int64([half, half])], 2, { axis: -1 });
  const swapped = g.node('Concat', [x2!, x1!], { axis: -1 });
  const rotated = g.node('Add', [g.node('Mul', [rot!, t.cos]), g.node('Mul', [swapped, t.sinSigned])]);
  return partial ? g.node('Concat', [rotated, pass!], { axis: -1 }) : rotated;
}

/**
 * Additive attention bias [batch, 1, seq, past + seq]: 0 where query i (absolute position
 * past + i) may see key j (j <= past + i, attention_mask[j] = 1, and within the sliding window
 * if any), a large negative number elsewhere. Built once and shared by all layers.
 */
export function attentionBias(
  g: GraphBuilder,
  inputIds: string,
  attentionMask: string,
  slidingWindow: number | null,
): string {
  const seq = g.node('Shape', [inputIds], { start: 1, end: 2 });
  const total = g.node('Shape', [attentionMask], { start: 1, end: 2 });
  const scalar = (v: string) => g.node('Squeeze', [v, g.int64([0])]);
  const totalS = scalar(total);
  const pastS = scalar(g.node('Sub', [total, seq]));
  const keyPos = g.node('Range', [g.int64(0, []), totalS, g.int64(1, [])]);
  const queryPos = g.node('Unsqueeze', [g.node('Range', [pastS, totalS, g.int64(1, [])]), g.int64([1])]);
  let allowed = g.node('LessOrEqual', [keyPos, queryPos]); // [seq, total]
  if (slidingWindow !== null) {
    const distance = g.node('Sub', [queryPos, keyPos]);
    allowed = g.node('And', [allowed, g.node('Less', [distance, g.int64(slidingWindow, [])])]);
  }
  const notPadding = g.node('Unsqueeze', [
    g.node('Cast', [attentionMask], { to: DataType.BOOL }),
    g.int64([1, 2]),
  ]);
  allowed = g.node('And', [allowed, notPadding]); // [batch, 1, seq, total]
  // Finite rather than -inf: a fully masked row (a padding query) then softmaxes to uniform
  // instead of NaN, and exp() of it still underflows to exactly 0 next to any real score.
  return g.node('Where', [allowed, g.float(0), g.float(-1e30)]);
}
