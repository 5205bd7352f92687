// Optimum's merged decoders (an If on use_cache_branch) reduced to their with-cache branch.

import { IO } from '../types.ts';
import { GraphIndex, attr, outerScopeReads, removeDeadNodes, topoSort } from './graph-query.ts';
import type { GraphProto, NodeProto } from './proto.ts';
import { GraphSurgeryError } from './surgery-types.ts';

const USE_CACHE_BRANCH = 'use_cache_branch';

/**
 * Optimum's decoder_model_merged.onnx wraps two copies of the decoder (with and without past
 * key/values) in an If on the `use_cache_branch` input. The with-cache branch also serves the
 * prefill (past length 0), so it alone is inlined into the main graph and the If disappears.
 * Returns whether there was anything to inline.
 */
export function inlineUseCacheBranch(graph: GraphProto): boolean {
  const index = new GraphIndex(graph);
  const ifNode = graph.node.find((n) => n.opType === 'If' && n.output.includes(IO.logits));
  if (!ifNode) return false;
  // The condition is use_cache_branch itself, or its negation (then the cache branch is else).
  let cond = index.skipPassthrough(ifNode.input[0]!);
  let cacheBranch = 'then_branch';
  const notNode = index.producer(cond);
  if (notNode?.opType === 'Not') {
    cond = index.skipPassthrough(notNode.input[0]!);
    cacheBranch = 'else_branch';
  }
  if (cond !== USE_CACHE_BRANCH) {
    throw new GraphSurgeryError(
      `the If producing the logits is not switched by the "${USE_CACHE_BRANCH}" input`,
    );
  }
  const branch = attr(ifNode, cacheBranch)?.g;
  if (!branch) throw new GraphSurgeryError(`the merged decoder's If has no ${cacheBranch}`);
  if (branch.output.length !== ifNode.output.length)
    throw new GraphSurgeryError('the If and its branch disagree on outputs');

  // Branch-local names that clash with main-graph names get a prefix; branch outputs take the
  // If's output names so everything downstream keeps reading the same tensors.
  const taken = index.allNames();
  const rename = new Map<string, string>();
  const local = new Set<string>([
    ...branch.initializer.map((t) => t.name),
    ...branch.node.flatMap((n) => n.output),
  ]);
  for (const name of local) {
    if (!name || !taken.has(name)) continue;
    let fresh = `${cacheBranch}/${name}`;
    for (let i = 1; taken.has(fresh) || local.has(fresh); i++) fresh = `${cacheBranch}/${name}_${i}`;
    rename.set(name, fresh);
  }
  const extraNodes: NodeProto[] = [];
  const mappedOutputs = new Set<string>();
  branch.output.forEach((out, i) => {
    const target = ifNode.output[i]!;
    if (!target) return;
    const producedInside = branch.node.some((n) => n.output.includes(out.name));
    if (producedInside && !mappedOutputs.has(out.name)) {
      mappedOutputs.add(out.name);
      rename.set(out.name, target);
      return;
    }
    // An outer value, a branch initializer or a repeated output: copy it through.
    const source = rename.get(out.name) ?? out.name;
    extraNodes.push({
      input: [source],
      output: [target],
      name: `${cacheBranch}/output_${i}`,
      opType: 'Identity',
      domain: '',
      attribute: [],
    });
  });
  const renameName = (n: string) => rename.get(n) ?? n;
  renameInGraphNodes(branch.node, renameName);
  for (const t of branch.initializer) t.name = renameName(t.name);

  const at = graph.node.indexOf(ifNode);
  graph.node.splice(at, 1, ...branch.node, ...extraNodes);
  graph.initializer.push(...branch.initializer);
  if (
    !graph.node.some(
      (n) => n.input.includes(USE_CACHE_BRANCH) || outerScopeReads(n).includes(USE_CACHE_BRANCH),
    )
  ) {
    graph.input = graph.input.filter((v) => v.name !== USE_CACHE_BRANCH);
  }
  removeDeadNodes(graph);
  topoSort(graph);
  return true;
}

/** Renames tensors in nodes and, recursively, in their subgraphs (which read outer names as-is). */
function renameInGraphNodes(nodes: NodeProto[], rename: (n: string) => string): void {
  for (const n of nodes) {
    n.input = n.input.map((i) => (i ? rename(i) : i));
    n.output = n.output.map((o) => (o ? rename(o) : o));
    for (const a of n.attribute) {
      if (!a.g) continue;
      renameInGraphNodes(a.g.node, rename);
      for (const o of a.g.output) o.name = rename(o.name);
    }
  }
}
