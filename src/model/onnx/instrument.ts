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

import { IO } from '../types.ts';
import { removeDeadNodes, topoSort } from './graph-query.ts';
import { AttrType, DataType, type AttributeProto, type GraphProto, type ModelProto, type ValueInfoProto } from './proto.ts';
import { GraphEditor } from './graph-editor.ts';
import { finalNormScale, interveneRows, signalHead, SIGNAL_TOP_K } from './last-layer-hook.ts';
import { locateLastLayer } from './locate-last-layer.ts';
import { inlineUseCacheBranch } from './merged-decoder.ts';
import { GraphSurgeryError, type ExportAnatomy, type SurgeryHints } from './surgery-types.ts';

export { GraphSurgeryError, locateLastLayer, inlineUseCacheBranch };
export type { ExportAnatomy, FinalNorm, MatmulSite, SurgeryHints } from './surgery-types.ts';

// ------------------------------------------------------------------ surgery

// A bigint: as a JS number 2^63 - 1 rounds up to 2^63, which wraps to INT64_MIN.
const INT64_MAX = 2n ** 63n - 1n;

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
    // export-source.ts upcasts half exports and folds quantized monitored matmuls first, so this
    // only fires for a layout that step did not recognise.
    if (w.dataType !== DataType.FLOAT) {
      throw new GraphSurgeryError(
        `the ${w === anatomy.down.weight ? 'last down projection' : 'unembedding'} stores its weight as ONNX data type ${w.dataType}; ` +
          'accepted: float32, float16/bfloat16 (upcast at load), int4/int8 MatMulNBits, int8/uint8 MatMulInteger (quantize_dynamic) and DequantizeLinear weights',
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
    IO.unigramLogProb,
    IO.logSumExp,
    IO.entropy,
    IO.unigramKl,
    IO.topLogprobs,
    IO.topIds,
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
  signalHead(ed.emitter('signals'), anatomy.logits, anatomy.vocab, IO);
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

/**
 * a' = a * neuron_scale + neuron_shift (per row: both are [batch, d_mlp]) feeds the down
 * projection instead of a, and is output as mlp_act. The activations are viewed as
 * [batch, seq, d_mlp] for the hook, whether the export kept them 3-D or flattened them, and
 * given back to the down projection in their original shape.
 */
function exposeActivations(ed: GraphEditor, anatomy: ExportAnatomy, shapes: SequenceShapes): void {
  const act = anatomy.activation;
  const act3d = ed.op('Reshape', [act, shapes.perPosition], 'neuron_act_3d');
  const intervened = interveneRows(ed.emitter('neuron'), act3d, IO.neuronScale, IO.neuronShift, IO.mlpAct);
  const originalShape = ed.op('Shape', [act], 'neuron_act_shape');
  anatomy.down.node.input[0] = ed.op('Reshape', [intervened, originalShape], 'neuron_intervened');
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
  const x3d = ed.op('Reshape', [x, shapes.perPosition], 'final_residual', [], IO.finalResidual);
  finalNormScale(ed.emitter('norm_scale'), x3d, anatomy.norm.type, eps, IO.finalNormScale);
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
    { name: IO.neuronScale, elemType: DataType.FLOAT, shape: [batchDim, { value: anatomy.dMlp }] },
    { name: IO.neuronShift, elemType: DataType.FLOAT, shape: [batchDim, { value: anatomy.dMlp }] },
    { name: IO.unigramLogProb, elemType: DataType.FLOAT, shape: [{ value: anatomy.vocab }] },
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
  const keep = { param: 'kept_sequence_length' };
  const k = { value: Math.min(SIGNAL_TOP_K, anatomy.vocab) };
  for (const name of [IO.logSumExp, IO.entropy, IO.unigramKl]) {
    graph.output.push({ name, elemType: DataType.DOUBLE, shape: [batchDim, keep, { value: 1 }] });
  }
  graph.output.push(
    { name: IO.topLogprobs, elemType: DataType.DOUBLE, shape: [batchDim, keep, k] },
    { name: IO.topIds, elemType: DataType.INT64, shape: [batchDim, keep, k] },
  );
}
