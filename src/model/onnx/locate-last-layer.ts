// Locating the last layer of a decoder export by STRUCTURE: the logits output leads back to the
// unembedding matmul, that to the final norm (find-final-norm.ts), the norm to the last residual
// Add, and the Add to the last MLP's down projection (recognised by its weight's shape
// [d_mlp, d_model]).

import { IO } from '../types.ts';
import { GraphIndex, PASSTHROUGH_OPS, attrFloat, attrInt } from './graph-query.ts';
import type { GraphProto, NodeProto, TensorProto } from './proto.ts';
import { findFinalNorm } from './find-final-norm.ts';
import { GraphSurgeryError, type ExportAnatomy, type MatmulSite, type SurgeryHints } from './surgery-types.ts';

export function locateLastLayer(graph: GraphProto, hints: SurgeryHints): ExportAnatomy {
  const index = new GraphIndex(graph);
  const logits = graph.output.find((o) => o.name === IO.logits)?.name;
  if (!logits) throw new GraphSurgeryError(`the graph has no "${IO.logits}" output`);

  const { site: unembed, tail, bias } = findUnembedding(index, logits);
  const dModel = unembed.inFeatures;
  const vocab = unembed.outFeatures;
  const norm = findFinalNorm(index, unembed.node.input[0]!, dModel);
  const down = findDownProjection(index, norm.residualTerms, hints.dMlp, dModel);
  return {
    logits,
    unembed,
    unembedBias: bias,
    logitsTail: tail,
    norm,
    down,
    activation: down.node.input[0]!,
    dModel,
    dMlp: hints.dMlp,
    vocab,
  };
}

/** A MatMul/Gemm whose input 1 is a constant weight, described as [in, out]. */
function matmulSite(index: GraphIndex, node: NodeProto): MatmulSite | undefined {
  if (node.opType !== 'MatMul' && node.opType !== 'Gemm') return undefined;
  if (node.domain !== '' && node.domain !== 'ai.onnx') return undefined;
  if (node.opType === 'Gemm' && attrInt(node, 'transA', 0) !== 0) return undefined;
  const w = index.weight(node.input[1]!);
  if (!w || w.tensor.dims.length !== 2) return undefined;
  const transposed = w.transposed !== (node.opType === 'Gemm' && attrInt(node, 'transB', 0) === 1);
  const [rows, cols] = w.tensor.dims as [number, number];
  return {
    node,
    weight: w.tensor,
    weightTransposed: transposed,
    inFeatures: transposed ? cols : rows,
    outFeatures: transposed ? rows : cols,
    alpha: node.opType === 'Gemm' ? attrFloat(node, 'alpha', 1) : 1,
  };
}

/** Walks back from the logits through bias Adds and shape-only ops to the unembedding matmul. */
function findUnembedding(
  index: GraphIndex,
  logits: string,
): { site: MatmulSite; tail: NodeProto[]; bias: TensorProto | null } {
  const tail: NodeProto[] = [];
  let bias: TensorProto | null = null;
  let current = logits;
  for (let steps = 0; steps < 16; steps++) {
    const node = index.producer(current);
    if (!node) break;
    if (node.opType === 'MatMul' || node.opType === 'Gemm') {
      const site = matmulSite(index, node);
      if (!site)
        throw new GraphSurgeryError(`the logits come from a ${node.opType} without a constant 2-D weight`);
      if (node.opType === 'Gemm' && node.input[2]) bias = index.constant(node.input[2]) ?? null;
      return { site, tail, bias };
    }
    if (PASSTHROUGH_OPS.has(node.opType)) {
      tail.push(node);
      current = node.input[0]!;
      continue;
    }
    const constOperand = node.opType === 'Add' ? node.input.findIndex((i) => index.isConstant(i)) : -1;
    if (constOperand >= 0) {
      tail.push(node);
      bias = index.constant(node.input[constOperand]!)!;
      current = node.input[1 - constOperand]!;
      continue;
    }
    break;
  }
  throw new GraphSurgeryError(
    'no unembedding matmul (MatMul or Gemm with a weight) found behind the logits output',
  );
}

/**
 * The last MLP's down projection: searching back from the terms of the last residual sum,
 * through bias Adds and shape-only ops, for the nearest matmul with a [d_mlp, d_model] weight.
 * At most one more residual Add is crossed (parallel attention+MLP blocks add both into the
 * residual together); going further would reach the previous layer's MLP.
 */
function findDownProjection(index: GraphIndex, terms: string[], dMlp: number, dModel: number): MatmulSite {
  let frontier = terms.map((t) => ({ t, residualAdds: 0 }));
  const seen = new Set<string>(terms);
  for (let depth = 0; depth < 12 && frontier.length > 0; depth++) {
    const next: typeof frontier = [];
    for (const { t, residualAdds } of frontier) {
      const node = index.producer(t);
      if (!node || index.isConstant(t)) continue;
      const site = matmulSite(index, node);
      if (site) {
        if (site.inFeatures === dMlp && site.outFeatures === dModel) return site;
        continue;
      }
      let inputs: string[] = [];
      let crossed = residualAdds;
      if (node.opType === 'Add') {
        inputs = node.input.filter((i) => !index.isConstant(i));
        if (inputs.length === 2) crossed += 1;
      } else if (PASSTHROUGH_OPS.has(node.opType)) {
        inputs = [node.input[0]!];
      }
      if (crossed > 1) continue;
      for (const i of inputs) {
        if (!seen.has(i)) {
          seen.add(i);
          next.push({ t: i, residualAdds: crossed });
        }
      }
    }
    frontier = next;
  }
  throw new GraphSurgeryError(
    `no recognisable last-layer MLP down projection (a matmul with a [${dMlp}, ${dModel}] weight feeding the last residual Add)`,
  );
}
