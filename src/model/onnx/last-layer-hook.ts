// The last-layer instrumentation, written once and emitted into both graph sources: the graphs
// the builder writes from checkpoints (architectures/decoder-graph.ts) and exports rewritten by
// graph surgery (onnx/instrument.ts). Both reach these functions through the small OpEmitter
// interface, so the two sources cannot drift apart in what the hook computes.

import type { NormType } from '../types.ts';

/** What the hook needs from a graph under construction: elementary ops and constants. */
export interface OpEmitter {
  /** Adds a single-output node; `out` fixes the output's name (graph outputs). */
  op(opType: string, inputs: string[], out?: string): string;
  int64s(values: number[]): string;
  float(value: number): string;
  /** Mean over the last axis (the attribute/input form depends on the opset). */
  reduceMeanLastAxis(x: string, keepdims: boolean): string;
  /** Unsqueeze (axes became an input in opset 13). */
  unsqueeze(x: string, axes: number[]): string;
}

/**
 * a' = a * scale + shift with per-row interventions: `act` is [batch, seq, d_mlp], `scale` and
 * `shift` are [batch, d_mlp] (each sequence of a batch carries its own; identity is a row of ones
 * and a row of zeros). Returns a' (named `out`), which feeds the down projection.
 */
export function interveneRows(e: OpEmitter, act: string, scale: string, shift: string, out: string): string {
  const scaleRows = e.unsqueeze(scale, [1]); // [batch, 1, d_mlp]
  const shiftRows = e.unsqueeze(shift, [1]);
  return e.op('Add', [e.op('Mul', [act, scaleRows]), shiftRows], out);
}

/**
 * The per-position scale the final norm divides by: sqrt(var(x) + eps) for LayerNorm,
 * sqrt(mean(x^2) + eps) for RMSNorm, over d_model; [batch, seq] for x [batch, seq, d_model].
 */
export function finalNormScale(e: OpEmitter, x: string, type: NormType, eps: number, out: string): string {
  let centered = x;
  if (type === 'layernorm') centered = e.op('Sub', [x, e.reduceMeanLastAxis(x, true)]);
  const meanSquare = e.reduceMeanLastAxis(e.op('Mul', [centered, centered]), false);
  return e.op('Sqrt', [e.op('Add', [meanSquare, e.float(eps)])], out);
}
