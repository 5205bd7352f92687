// Graph surgery that gives an existing decoder export the instrumented IO contract of
// src/model/types.ts (IO): the last MLP layer's activations become editable and observable,
// the final residual and the final norm's scale are exported, and only the last k positions
// go through the unembedding.
//
// Exports come from many tools (PyTorch's exporter, Optimum, ORT's optimizer), which name
// nodes however they like and fuse norms in several ways. Everything here is therefore found
// by STRUCTURE: the logits output leads back to the unembedding matmul, that to the final
// norm, the norm to the last residual Add, and the Add to the last MLP's down projection
// (recognised by its weight's shape [d_mlp, d_model]).

import type { NormType } from '../types.ts';
import { IO } from '../types.ts';
import {
  GraphIndex,
  PASSTHROUGH_OPS,
  attr,
  attrFloat,
  attrInt,
  elementCount,
  outerScopeReads,
  removeDeadNodes,
  scalarValue,
  topoSort,
} from './graph-query.ts';
import {
  AttrType,
  DataType,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.ts';

/** The export does not have the structure the surgery needs; the message says what is missing. */
export class GraphSurgeryError extends Error {}

/** A matmul-like node whose second operand is a weight: MatMul, or Gemm (with transB / bias C). */
export interface MatmulSite {
  node: NodeProto;
  /** The stored weight tensor (an initializer or Constant value). */
  weight: TensorProto;
  /** True when the product uses the stored tensor transposed (Gemm transB, a Transpose node, or both cancelling). */
  weightTransposed: boolean;
  /** The product's weight as [in, out]. */
  inFeatures: number;
  outFeatures: number;
  /** Gemm's alpha (1 for MatMul). */
  alpha: number;
}

export interface FinalNorm {
  type: NormType;
  /** Epsilon read from the graph (the norm's constant or attribute), or null when none was found. */
  eps: number | null;
  /** x: the last residual stream, the norm's input. */
  input: string;
  /** The normalized hidden state fed to the unembedding. */
  output: string;
  gamma: TensorProto | null;
  beta: TensorProto | null;
  /** The tensors added together into x (the residual Add's operands, or a fused Skip*Norm's input and skip). */
  residualTerms: string[];
  /** A fused Skip*LayerNormalization that computes x itself (exposed through its 4th output). */
  fusedSkip: NodeProto | null;
}

export interface ExportAnatomy {
  logits: string;
  unembed: MatmulSite;
  /** Bias added to the logits (Gemm C or an Add after the matmul), if any. */
  unembedBias: TensorProto | null;
  /** Nodes between the unembedding's output and the logits output (bias Add, Reshape, Cast ...). */
  logitsTail: NodeProto[];
  norm: FinalNorm;
  down: MatmulSite;
  /** The last layer's neuron activations: the down projection's data input. */
  activation: string;
  dModel: number;
  dMlp: number;
  vocab: number;
}

export interface SurgeryHints {
  /** d_mlp from config.json: the down projection is the matmul with a [d_mlp, d_model] weight. */
  dMlp: number;
}

// ------------------------------------------------------------------ locating

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

const FUSED_NORMS: Record<string, { type: NormType; skip: boolean }> = {
  LayerNormalization: { type: 'layernorm', skip: false },
  SimplifiedLayerNormalization: { type: 'rmsnorm', skip: false },
  RMSNormalization: { type: 'rmsnorm', skip: false },
  SkipLayerNormalization: { type: 'layernorm', skip: true },
  SkipSimplifiedLayerNormalization: { type: 'rmsnorm', skip: true },
};

/** The final norm between the last residual stream and the unembedding's input. */
function findFinalNorm(index: GraphIndex, unembedInput: string, dModel: number): FinalNorm {
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

function isActivationAdd(index: GraphIndex, node: NodeProto): boolean {
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

// ------------------------------------------------------------------ editing helpers

/** Adds nodes and constants under fresh names in the `instrument/` namespace. */
class GraphEditor {
  private readonly taken: Set<string>;
  private readonly nodeNames: Set<string>;

  constructor(
    readonly graph: GraphProto,
    readonly opset: number,
  ) {
    this.taken = new GraphIndex(graph).allNames();
    this.nodeNames = new Set(graph.node.map((n) => n.name));
  }

  isTaken(name: string): boolean {
    return this.taken.has(name);
  }

  fresh(base: string): string {
    let name = `instrument/${base}`;
    for (let i = 1; this.taken.has(name); i++) name = `instrument/${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** Appends a node (order is fixed by topoSort afterwards) and returns its output name. */
  op(
    opType: string,
    inputs: string[],
    base: string,
    attributes: AttributeProto[] = [],
    output?: string,
  ): string {
    const out = output ?? this.fresh(base);
    this.taken.add(out);
    let nodeName = `instrument/${base}_node`;
    for (let i = 1; this.nodeNames.has(nodeName); i++) nodeName = `instrument/${base}_node_${i}`;
    this.nodeNames.add(nodeName);
    this.graph.node.push({
      input: inputs,
      output: [out],
      name: nodeName,
      opType,
      domain: '',
      attribute: attributes,
    });
    return out;
  }

  int64s(base: string, values: (number | bigint)[]): string {
    const name = this.fresh(base);
    const raw = new BigInt64Array(values.map((v) => BigInt(v)));
    this.graph.initializer.push({
      name,
      dataType: DataType.INT64,
      dims: [values.length],
      rawData: new Uint8Array(raw.buffer),
    });
    return name;
  }

  float(base: string, value: number): string {
    const name = this.fresh(base);
    this.graph.initializer.push({
      name,
      dataType: DataType.FLOAT,
      dims: [],
      rawData: new Uint8Array(Float32Array.of(value).buffer),
    });
    return name;
  }

  /** Mean over the last axis; opset 18 moved ReduceMean's axes from an attribute to an input. */
  reduceMeanLastAxis(input: string, base: string, keepdims: boolean): string {
    const keep: AttributeProto = { name: 'keepdims', type: AttrType.INT, i: keepdims ? 1 : 0 };
    if (this.opset >= 18)
      return this.op('ReduceMean', [input, this.int64s(`${base}_axes`, [-1])], base, [keep]);
    return this.op('ReduceMean', [input], base, [{ name: 'axes', type: AttrType.INTS, ints: [-1] }, keep]);
  }
}

// A bigint: as a JS number 2^63 - 1 rounds up to 2^63, which wraps to INT64_MIN.
const INT64_MAX = 2n ** 63n - 1n;

// ------------------------------------------------------------------ surgery

/**
 * Rewrites `model` in place into the instrumented contract. `normEpsFallback` (config.json's)
 * is used only when the graph does not state the norm's epsilon itself.
 */
export function instrumentModel(
  model: ModelProto,
  hints: SurgeryHints & { normEpsFallback: number },
): ExportAnatomy {
  const graph = model.graph;
  inlineUseCacheBranch(graph);
  const anatomy = locateLastLayer(graph, hints);
  for (const w of [anatomy.down.weight, anatomy.unembed.weight]) {
    // The new inputs and outputs are float32; mixing them into a float16 graph would fail to load.
    if (w.dataType !== DataType.FLOAT) {
      throw new GraphSurgeryError(
        `only float32 graphs can be instrumented; this one stores weights as ONNX data type ${w.dataType}`,
      );
    }
  }
  const opset = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 0;
  // Slice and Reshape with tensor inputs need opset 10.
  if (opset < 10) throw new GraphSurgeryError(`opset ${opset} is too old (10 or newer needed)`);
  const ed = new GraphEditor(graph, opset);
  for (const name of [
    IO.mlpAct,
    IO.finalNormScale,
    IO.finalResidual,
    IO.logitsToKeep,
    IO.neuronScale,
    IO.neuronShift,
  ]) {
    if (ed.isTaken(name)) throw new GraphSurgeryError(`the graph already has a tensor named "${name}"`);
  }
  ensureStandardInputs(graph);
  if (!graph.input.some((v) => v.name === IO.inputIds))
    throw new GraphSurgeryError(`the graph has no "${IO.inputIds}" input`);

  const shapes = sequenceShapes(ed);
  exposeActivations(ed, anatomy, shapes);
  exposeResidualAndNormScale(ed, anatomy, shapes, anatomy.norm.eps ?? hints.normEpsFallback);
  keepLastPositions(ed, anatomy, shapes);
  declareIO(graph, anatomy);
  removeDeadNodes(graph);
  topoSort(graph);
  return anatomy;
}

interface SequenceShapes {
  /** [batch, seq] of input_ids. */
  batchSeq: string;
  /** [batch] */
  batch: string;
  /** [batch, seq, -1]: per-position outputs are reshaped to it, whether the export kept them 3-D or flattened them to 2-D. */
  perPosition: string;
}

function sequenceShapes(ed: GraphEditor): SequenceShapes {
  const batchSeq = ed.op('Shape', [IO.inputIds], 'batch_seq');
  const batch = ed.op('Gather', [batchSeq, ed.int64s('zero_index', [0])], 'batch');
  const perPosition = ed.op('Concat', [batchSeq, ed.int64s('minus_one', [-1])], 'batch_seq_rest', [
    intAttr('axis', 0),
  ]);
  return { batchSeq, batch, perPosition };
}

/** a' = a * neuron_scale + neuron_shift feeds the down projection instead of a, and is output as mlp_act. */
function exposeActivations(ed: GraphEditor, anatomy: ExportAnatomy, shapes: SequenceShapes): void {
  const scaled = ed.op('Mul', [anatomy.activation, IO.neuronScale], 'neuron_scaled');
  const intervened = ed.op('Add', [scaled, IO.neuronShift], 'neuron_intervened');
  anatomy.down.node.input[0] = intervened;
  ed.op('Reshape', [intervened, shapes.perPosition], 'mlp_act', [], IO.mlpAct);
}

/** Outputs x (final_residual) and the final norm's scale computed from it with new nodes. */
function exposeResidualAndNormScale(
  ed: GraphEditor,
  anatomy: ExportAnatomy,
  shapes: SequenceShapes,
  eps: number,
): void {
  let x = anatomy.norm.input;
  const fused = anatomy.norm.fusedSkip;
  if (fused) {
    // A fused Skip*Norm exposes its sum x only through its optional 4th output.
    if (!fused.output[3]) {
      while (fused.output.length < 4) fused.output.push('');
      fused.output[3] = ed.fresh('final_residual_sum');
    }
    x = fused.output[3]!;
    anatomy.norm.input = x;
  }
  ed.op('Reshape', [x, shapes.perPosition], 'final_residual', [], IO.finalResidual);

  // sqrt(var(x) + eps) for LayerNorm, sqrt(mean(x^2) + eps) for RMSNorm, over d_model.
  let centered = x;
  if (anatomy.norm.type === 'layernorm') {
    centered = ed.op('Sub', [x, ed.reduceMeanLastAxis(x, 'residual_mean', true)], 'residual_centered');
  }
  const squares = ed.op('Mul', [centered, centered], 'residual_squares');
  const meanSquare = ed.reduceMeanLastAxis(squares, 'residual_mean_square', false);
  const scale = ed.op(
    'Sqrt',
    [ed.op('Add', [meanSquare, ed.float('norm_eps', eps)], 'residual_var_eps')],
    'norm_scale',
  );
  ed.op('Reshape', [scale, shapes.batchSeq], 'final_norm_scale', [], IO.finalNormScale);
}

/**
 * Only the last logits_to_keep positions reach the unembedding (0 keeps all). The hidden state
 * is viewed as [batch, seq, d_model] and sliced along seq, so this works whether or not the
 * export flattened it to 2-D; reshapes after the unembedding, sized for the full sequence,
 * are given [batch, keep, vocab] instead.
 */
function keepLastPositions(ed: GraphEditor, anatomy: ExportAnatomy, shapes: SequenceShapes): void {
  const unembed = anatomy.unembed.node;
  const hidden3d = ed.op('Reshape', [unembed.input[0]!, shapes.perPosition], 'hidden_3d');
  const start = ed.op('Neg', [IO.logitsToKeep], 'keep_start');
  const kept = ed.op(
    'Slice',
    [hidden3d, start, ed.int64s('slice_end', [INT64_MAX]), ed.int64s('seq_axis', [1])],
    'hidden_kept',
  );
  // Gemm only takes 2-D operands; MatMul broadcasts over the leading axes.
  unembed.input[0] =
    unembed.opType === 'Gemm'
      ? ed.op('Reshape', [kept, ed.int64s('rows_by_dmodel', [-1, anatomy.dModel])], 'hidden_kept_2d')
      : kept;

  const logitsShape = ed.op(
    'Concat',
    [shapes.batch, ed.int64s('keep_vocab', [-1, anatomy.vocab])],
    'logits_shape',
    [intAttr('axis', 0)],
  );
  for (const node of anatomy.logitsTail) if (node.opType === 'Reshape') node.input[1] = logitsShape;
  const producer = anatomy.logitsTail[0] ?? unembed;
  const rawLogits = ed.fresh('logits_raw');
  producer.output[producer.output.indexOf(anatomy.logits)] = rawLogits;
  ed.op('Reshape', [rawLogits, logitsShape], 'logits', [], anatomy.logits);

  // Shape annotations of these tensors describe the full sequence; drop them.
  const resized = new Set([...anatomy.logitsTail, unembed].flatMap((n) => n.output));
  ed.graph.valueInfo = ed.graph.valueInfo.filter((v) => !resized.has(v.name) && v.name !== anatomy.logits);
}

function intAttr(name: string, i: number): AttributeProto {
  return { name, type: AttrType.INT, i };
}

/**
 * The runtime always feeds attention_mask and position_ids. Some exports compute positions
 * themselves and lack the input; an unused input keeps the contract identical for all graphs.
 */
function ensureStandardInputs(graph: GraphProto): void {
  const ids = graph.input.find((v) => v.name === IO.inputIds);
  const batchDim = ids?.shape?.[0] ?? { param: 'batch_size' };
  const seqDim = ids?.shape?.[1] ?? { param: 'sequence_length' };
  if (!graph.input.some((v) => v.name === IO.attentionMask)) {
    graph.input.push({
      name: IO.attentionMask,
      elemType: DataType.INT64,
      shape: [batchDim, { param: 'total_sequence_length' }],
    });
  }
  if (!graph.input.some((v) => v.name === IO.positionIds)) {
    graph.input.push({ name: IO.positionIds, elemType: DataType.INT64, shape: [batchDim, seqDim] });
  }
}

function declareIO(graph: GraphProto, anatomy: ExportAnatomy): void {
  const ids = graph.input.find((v) => v.name === IO.inputIds);
  const batchDim = ids?.shape?.[0] ?? { param: 'batch_size' };
  const seqDim = ids?.shape?.[1] ?? { param: 'sequence_length' };
  const newInputs: ValueInfoProto[] = [
    { name: IO.logitsToKeep, elemType: DataType.INT64, shape: [{ value: 1 }] },
    { name: IO.neuronScale, elemType: DataType.FLOAT, shape: [{ value: anatomy.dMlp }] },
    { name: IO.neuronShift, elemType: DataType.FLOAT, shape: [{ value: anatomy.dMlp }] },
  ];
  for (const v of newInputs) {
    if (graph.input.some((i) => i.name === v.name))
      throw new GraphSurgeryError(`the graph already has an input "${v.name}"`);
    graph.input.push(v);
  }
  const logits = graph.output.find((o) => o.name === anatomy.logits)!;
  logits.elemType = DataType.FLOAT;
  logits.shape = [batchDim, { param: 'kept_sequence_length' }, { value: anatomy.vocab }];
  graph.output.push(
    { name: IO.mlpAct, elemType: DataType.FLOAT, shape: [batchDim, seqDim, { value: anatomy.dMlp }] },
    { name: IO.finalNormScale, elemType: DataType.FLOAT, shape: [batchDim, seqDim] },
    {
      name: IO.finalResidual,
      elemType: DataType.FLOAT,
      shape: [batchDim, seqDim, { value: anatomy.dModel }],
    },
  );
}

// ------------------------------------------------------------------ merged decoders

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
