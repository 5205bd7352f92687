// The last-layer instrumentation, written once and emitted into both graph sources: the graphs
// the builder writes from checkpoints (architectures/decoder-graph.ts) and exports rewritten by
// graph surgery (onnx/instrument.ts). Both reach these functions through the small OpEmitter
// interface, so the two sources cannot drift apart in what the hook computes.

import type { NormType } from '../types.ts';

/** INT / INTS node attributes. */
export type HookAttrs = Record<string, number | number[]>;

/** What the hook needs from a graph under construction: elementary ops and constants. */
export interface OpEmitter {
  /** The default-domain opset of the graph. */
  opset: number;
  /** Adds a single-output node; `out` fixes the output's name (graph outputs). */
  op(opType: string, inputs: string[], out?: string, attrs?: HookAttrs): string;
  opN(opType: string, inputs: string[], n: number, attrs?: HookAttrs, outs?: string[]): string[];
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

/** Top logprobs the graph reports per position (OpenAI's top_logprobs allows up to 20). */
export const SIGNAL_TOP_K = 20;

/** Names of the in-graph signal outputs (declared by each source; see IO in types.ts). */
export interface SignalNames {
  unigramLogProb: string;
  logSumExp: string;
  entropy: string;
  unigramKl: string;
  topLogprobs: string;
  topIds: string;
}

/** Reduction over the last axis, keeping it; axes moved from attribute to input (ReduceSum in 13, the rest in 18). */
function reduceLast(e: OpEmitter, op: 'ReduceSum' | 'ReduceMax', x: string, out?: string): string {
  const asInput = e.opset >= (op === 'ReduceSum' ? 13 : 18);
  return asInput
    ? e.op(op, [x, e.int64s([-1])], out, { keepdims: 1 })
    : e.op(op, [x], out, { axes: [-1], keepdims: 1 });
}

/**
 * The per-position signals that need the whole vocabulary, reduced natively next to the logits
 * (so a greedy row never reads its 50k-wide row in JavaScript), in float64 and with the formulas of
 * the reference (monitor/signals.ts): with z = l - max, e = exp z and S = sum e,
 *   logsumexp = max + log S,   entropy = log S - (sum e z) / S,
 *   unigram KL(P || Q) = -entropy - (sum e log q) / S,
 *   top-k log-probabilities = topk(z) - log S, with their ids (ties: lower id first, as TopK and the
 *   reference's argmax both order them).
 * Vocabulary-wide passes: Cast, Sub, Exp, two Mul, three sums and TopK; no log p or p row is formed.
 * `logits` is [batch, keep, vocab]; every output but the top-k is [batch, keep, 1].
 */
export function signalHead(e: OpEmitter, logits: string, vocab: number, n: SignalNames): void {
  const DOUBLE = 11;
  const x = e.op('Cast', [logits], undefined, { to: DOUBLE });
  const max = reduceLast(e, 'ReduceMax', x);
  const z = e.op('Sub', [x, max]);
  const ez = e.op('Exp', [z]);
  const sum = reduceLast(e, 'ReduceSum', ez);
  const logS = e.op('Log', [sum]);
  e.op('Add', [max, logS], n.logSumExp);
  const meanZ = e.op('Div', [reduceLast(e, 'ReduceSum', e.op('Mul', [ez, z])), sum]);
  const entropy = e.op('Sub', [logS, meanZ], n.entropy);
  const logQ = e.op('Cast', [n.unigramLogProb], undefined, { to: DOUBLE });
  const meanLogQ = e.op('Div', [reduceLast(e, 'ReduceSum', e.op('Mul', [ez, logQ])), sum]);
  e.op('Sub', [e.op('Neg', [entropy]), meanLogQ], n.unigramKl);
  const [topZ, topIds] = e.opN('TopK', [z, e.int64s([Math.min(SIGNAL_TOP_K, vocab)])], 2, {
    axis: -1,
    largest: 1,
    sorted: 1,
  });
  e.op('Identity', [topIds!], n.topIds);
  e.op('Sub', [topZ!, logS], n.topLogprobs);
}
