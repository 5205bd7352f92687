// Finding the final norm between the last residual stream and the unembedding: fused norm ops
// (LayerNormalization, Skip*Norm, SimplifiedLayerNormalization) or one written out in
// elementary ops by older exporters.

import type { NormType } from '../types.ts';
import { GraphIndex, PASSTHROUGH_OPS, attr, attrInt, elementCount, scalarValue } from './graph-query.ts';
import type { NodeProto, TensorProto } from './proto.ts';
import { GraphSurgeryError, type FinalNorm } from './surgery-types.ts';

const FUSED_NORMS: Record<string, { type: NormType; skip: boolean }> = {
  LayerNormalization: { type: 'layernorm', skip: false },
  SimplifiedLayerNormalization: { type: 'rmsnorm', skip: false },
  RMSNormalization: { type: 'rmsnorm', skip: false },
  SkipLayerNormalization: { type: 'layernorm', skip: true },
  SkipSimplifiedLayerNormalization: { type: 'rmsnorm', skip: true },
};

/** The final norm between the last residual stream and the unembedding's input. */
export function findFinalNorm(index: GraphIndex, unembedInput: string, dModel: number): FinalNorm {
  const output = index.skipPassthrough(unembedInput);
  const node = index.producer(output);
  const fused = node && FUSED_NORMS[node.opType];
  if (node && fused) {
    const eps = attr(node, 'epsilon')?.f ?? 1e-5;
    if (fused.skip) {
      // Skip*LayerNormalization(input, skip, gamma, [beta], [bias]) computes x = input + skip (+ bias)
      // internally; its optional 4th output (input_skip_bias_sum) exposes x.
      const gammaIndex = 2;
      const betaIndex = fused.type === 'layernorm' ? 3 : -1;
      return {
        type: fused.type,
        eps,
        input: node.output[3] ?? '',
        output,
        gamma: index.constant(node.input[gammaIndex] ?? '') ?? null,
        beta: betaIndex >= 0 ? (index.constant(node.input[betaIndex] ?? '') ?? null) : null,
        residualTerms: [node.input[0]!, node.input[1]!],
        fusedSkip: node,
      };
    }
    if (fused.type === 'layernorm' && attrInt(node, 'axis', -1) !== -1) {
      throw new GraphSurgeryError('the final LayerNormalization does not normalize the last axis');
    }
    const x = node.input[0]!;
    return {
      type: fused.type,
      eps,
      input: x,
      output,
      gamma: index.constant(node.input[1] ?? '') ?? null,
      beta: fused.type === 'layernorm' ? (index.constant(node.input[2] ?? '') ?? null) : null,
      residualTerms: residualTermsOf(index, x),
      fusedSkip: null,
    };
  }
  return matchDecomposedNorm(index, output, dModel);
}

/** The operands of the residual Add producing x (looking through shape-only ops). */
function residualTermsOf(index: GraphIndex, x: string): string[] {
  const add = index.producer(index.skipPassthrough(x));
  if (add && isActivationAdd(index, add)) return [add.input[0]!, add.input[1]!];
  throw new GraphSurgeryError("the final norm's input is not a residual Add");
}

export function isActivationAdd(index: GraphIndex, node: NodeProto): boolean {
  return node.opType === 'Add' && node.input.length === 2 && !node.input.some((i) => index.isConstant(i));
}

/** Ops a norm written out in elementary operations is made of (a matmul, say, means we left the norm). */
const NORM_OPS: ReadonlySet<string> = new Set([
  ...PASSTHROUGH_OPS,
  ...['ReduceMean', 'Sub', 'Pow', 'Mul', 'Div', 'Add', 'Sqrt', 'Reciprocal'],
]);

/**
 * A norm written out in elementary ops (older exporters): LayerNorm as ReduceMean/Sub/Pow/
 * ReduceMean/Add(eps)/Sqrt/Div, RMSNorm as Pow/ReduceMean/Add(eps)/Sqrt/Div/Mul, each followed
 * by Mul(gamma) [and Add(beta)]. Rather than match one exporter's exact chain, collect the
 * region of nodes behind the norm's output back to the residual Add they all start from, then
 * read its parts: a Sub of a ReduceMean means mean-centering (LayerNorm); an Add of a scalar
 * constant to a ReduceMean is the epsilon; Mul/Add with a [d_model] constant are gamma/beta.
 */
function matchDecomposedNorm(index: GraphIndex, output: string, dModel: number): FinalNorm {
  const notANorm = (why: string) =>
    new GraphSurgeryError(`no recognisable final norm before the unembedding (${why})`);
  const last = index.producer(output);
  if (last && isActivationAdd(index, last)) throw notANorm('it reads the residual stream directly');
  const region: NodeProto[] = [];
  const seen = new Set<string>([output]);
  const queue = [output];
  let x: string | null = null;
  while (queue.length > 0) {
    const t = queue.shift()!;
    if (index.isConstant(t)) continue;
    const node = index.producer(t);
    if (!node) throw notANorm('reached a graph input');
    if (isActivationAdd(index, node)) {
      if (x !== null && x !== t) throw notANorm('two residual inputs');
      x = t;
      continue;
    }
    if (!NORM_OPS.has(node.opType))
      throw notANorm(`${node.opType} between the residual stream and the unembedding`);
    region.push(node);
    if (region.length > 40) throw notANorm('too many nodes');
    // Shape-only ops carry data through input 0; their other inputs are shapes, not the norm.
    const inputs = PASSTHROUGH_OPS.has(node.opType) ? [node.input[0]!] : node.input;
    for (const i of inputs) {
      if (i && !seen.has(i)) {
        seen.add(i);
        queue.push(i);
      }
    }
  }
  if (x === null || !region.some((n) => n.opType === 'ReduceMean'))
    throw notANorm('no ReduceMean over a residual Add');
  const producedByReduceMean = (name: string) =>
    index.producer(index.skipPassthrough(name))?.opType === 'ReduceMean';
  const centered = region.some((n) => n.opType === 'Sub' && producedByReduceMean(n.input[1]!));

  let eps: number | null = null;
  let gamma: TensorProto | null = null;
  let beta: TensorProto | null = null;
  for (const node of region) {
    const constIdx = node.input.findIndex((i) => index.isConstant(i));
    if (constIdx < 0 || node.input.length !== 2) continue;
    const constant = index.constant(node.input[constIdx]!)!;
    const other = node.input[1 - constIdx]!;
    if (node.opType === 'Add' && elementCount(constant) === 1 && producedByReduceMean(other))
      eps = scalarValue(constant) ?? null;
    // The region is collected from the output backwards, so the first match is the outermost.
    else if (node.opType === 'Mul' && elementCount(constant) === dModel) gamma ??= constant;
    else if (node.opType === 'Add' && elementCount(constant) === dModel) beta ??= constant;
  }
  return {
    type: centered ? 'layernorm' : 'rmsnorm',
    eps,
    input: x,
    output,
    gamma,
    beta,
    residualTerms: residualTermsOf(index, x),
    fusedSkip: null,
  };
}
