// The decoder graph shared by all architectures, built from normalized weights with exactly the
// IO contract of types.ts. Design choices for decode speed:
//  - one MatMul per projection ([in, out] initializers), q/k/v fused, gate/up fused;
//  - the attention scale folded into the q columns of the qkv weight;
//  - RoPE applied once to q and k together, the cos/sin tables and the mask built once;
//  - grouped-query attention without repeating K/V: the query heads sharing a KV head are
//    folded into the sequence axis of one batched MatMul;
//  - only the last `logits_to_keep` positions reach the final norm and the unembedding;
//  - tied embeddings stored once, as the [d_model, vocab] unembedding, and looked up with
//    Gather along axis 1.

import type { CheckpointConfig } from '../config.ts';
import type { GraphBuilder } from '../onnx/graph-builder.ts';
import { DataType } from '../onnx/proto.ts';
import { IO, type ModelSpec } from '../types.ts';
import {
  activation,
  applyRope,
  attentionBias,
  linear,
  builderEmitter,
  norm,
  ropeTables,
  type RopeTables,
} from './graph-ops.ts';
import { ropeInverseFrequencies } from './rope.ts';
import { finalNormScale, interveneRows, signalHead, SIGNAL_TOP_K } from '../onnx/last-layer-hook.ts';
import { transpose, type DecoderWeights, type LayerWeights } from './weights.ts';

export interface DecoderGraphOptions {
  /** Adds neuron_scale / neuron_shift inputs and mlp_act / final_norm_scale / final_residual outputs. */
  instrument: boolean;
}

const BATCH = 'batch';
const SEQ = 'sequence_length';
const PAST = 'past_sequence_length';
const TOTAL = 'total_sequence_length';

interface Shared {
  spec: ModelSpec;
  cfg: CheckpointConfig;
  bias: string;
  rope: RopeTables | null;
  /** Present on the instrumented graph: [scale, shift] for the last layer's activations. */
  intervention: [string, string] | null;
}

export function buildDecoderGraph(
  g: GraphBuilder,
  cfg: CheckpointConfig,
  w: DecoderWeights,
  opts: DecoderGraphOptions,
): void {
  const { spec, details } = cfg;
  const { dModel: d, vocabSize: V, nKvHeads, headDim } = spec;

  const inputIds = g.input(IO.inputIds, DataType.INT64, [BATCH, SEQ]);
  const attentionMask = g.input(IO.attentionMask, DataType.INT64, [BATCH, TOTAL]);
  const positionIds = g.input(IO.positionIds, DataType.INT64, [BATCH, SEQ]);
  const past = Array.from({ length: spec.nLayers }, (_, l) => [
    g.input(IO.pastKey(l), DataType.FLOAT, [BATCH, nKvHeads, PAST, headDim]),
    g.input(IO.pastValue(l), DataType.FLOAT, [BATCH, nKvHeads, PAST, headDim]),
  ]);
  const logitsToKeep = g.input(IO.logitsToKeep, DataType.INT64, [1]);
  const intervention: [string, string] | null = opts.instrument
    ? [
        g.input(IO.neuronScale, DataType.FLOAT, [BATCH, spec.dMlp]),
        g.input(IO.neuronShift, DataType.FLOAT, [BATCH, spec.dMlp]),
      ]
    : null;
  if (opts.instrument) g.input(IO.unigramLogProb, DataType.FLOAT, [V]);

  // Embeddings.
  let unembedding: string;
  let x: string;
  if (w.unembedding === 'tied') {
    unembedding = g.weight('unembedding', [d, V], transpose(w.tokenEmbedding(), V, d));
    const columns = g.node('Gather', [unembedding, inputIds], { axis: 1 }); // [d, batch, seq]
    x = g.node('Transpose', [columns], { perm: [1, 2, 0] });
  } else {
    x = g.node('Gather', [g.weight('token_embedding', [V, d], w.tokenEmbedding()), inputIds], { axis: 0 });
    unembedding = g.weight('unembedding', [d, V], w.unembedding());
  }
  if (w.positionEmbedding) {
    const table = g.weight('position_embedding', [spec.maxPositions, d], w.positionEmbedding());
    x = g.node('Add', [x, g.node('Gather', [table, positionIds], { axis: 0 })]);
  }

  const shared: Shared = {
    spec,
    cfg,
    bias: attentionBias(g, inputIds, attentionMask, details.slidingWindow),
    rope: details.rope ? ropeTables(g, positionIds, ropeInverseFrequencies(details.rope)) : null,
    intervention,
  };
  const last = spec.nLayers - 1;
  for (let l = 0; l <= last; l++) {
    const residualOut = opts.instrument && l === last ? IO.finalResidual : undefined;
    x = decoderLayer(g, shared, l, w.layers[l]!, x, past[l]!, residualOut);
  }

  if (opts.instrument) finalNormScale(builderEmitter(g), x, spec.normType, spec.normEps, IO.finalNormScale);
  // Slice BEFORE the final norm and the [d, vocab] MatMul: during decoding only the last row
  // is needed, and the unembedding is the largest MatMul of small models. keep = 0 slices from
  // -0 = 0, i.e. keeps everything, which is also what logits_to_keep=0 means in transformers.
  const start = g.node('Neg', [logitsToKeep]);
  const kept = g.node('Slice', [x, start, g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  const normed = norm(g, kept, w.finalNorm(), spec.normType, spec.normEps, 'final_norm');
  g.node('MatMul', [normed, unembedding], {}, IO.logits);
  if (opts.instrument) signalHead(builderEmitter(g), IO.logits, V, IO);

  g.output(IO.logits, DataType.FLOAT, [BATCH, 'logits_to_keep', V]);
  for (let l = 0; l <= last; l++) {
    g.output(IO.presentKey(l), DataType.FLOAT, [BATCH, nKvHeads, TOTAL, headDim]);
    g.output(IO.presentValue(l), DataType.FLOAT, [BATCH, nKvHeads, TOTAL, headDim]);
  }
  if (opts.instrument) {
    g.output(IO.mlpAct, DataType.FLOAT, [BATCH, SEQ, spec.dMlp]);
    g.output(IO.finalNormScale, DataType.FLOAT, [BATCH, SEQ]);
    g.output(IO.finalResidual, DataType.FLOAT, [BATCH, SEQ, d]);
    for (const name of [IO.logSumExp, IO.entropy, IO.unigramKl]) g.output(name, DataType.DOUBLE, [BATCH, 'logits_to_keep', 1]);
    const k = Math.min(SIGNAL_TOP_K, V);
    g.output(IO.topLogprobs, DataType.DOUBLE, [BATCH, 'logits_to_keep', k]);
    g.output(IO.topIds, DataType.INT64, [BATCH, 'logits_to_keep', k]);
  }
}

function decoderLayer(
  g: GraphBuilder,
  s: Shared,
  l: number,
  w: LayerWeights,
  x: string,
  [pastKey, pastValue]: string[],
  residualOut: string | undefined,
): string {
  const { spec, cfg } = s;
  const name = `layers.${l}`;
  const attnIn = norm(g, x, w.inputNorm(), spec.normType, spec.normEps, `${name}.input_norm`);
  const attn = attention(g, s, l, w, attnIn, pastKey!, pastValue!);
  if (cfg.details.parallelResidual) {
    const mlpIn = norm(
      g,
      x,
      w.postAttentionNorm(),
      spec.normType,
      spec.normEps,
      `${name}.post_attention_norm`,
    );
    return g.node('Add', [g.node('Add', [x, attn]), mlp(g, s, l, w, mlpIn)], {}, residualOut);
  }
  const mid = g.node('Add', [x, attn]);
  const mlpIn = norm(
    g,
    mid,
    w.postAttentionNorm(),
    spec.normType,
    spec.normEps,
    `${name}.post_attention_norm`,
  );
  return g.node('Add', [mid, mlp(g, s, l, w, mlpIn)], {}, residualOut);
}

function attention(
  g: GraphBuilder,
  s: Shared,
  l: number,
  w: LayerWeights,
  h: string,
  pastKey: string,
  pastValue: string,
): string {
  const { dModel: d, nHeads: H, nKvHeads: Hkv, headDim: D } = s.spec;
  const name = `layers.${l}.attention`;
  const qkvWeights = w.qkv();
  scaleQueryColumns(
    qkvWeights.weight,
    qkvWeights.bias,
    d,
    (H + 2 * Hkv) * D,
    H * D,
    s.cfg.details.attentionScales[l]!,
  );
  const qkv = linear(g, h, qkvWeights, `${name}.qkv`, d, (H + 2 * Hkv) * D);

  let q: string, k: string, v: string;
  if (s.rope) {
    // Rotate q and k in one pass: [batch, seq, H + Hkv, D].
    const [qk, vFlat] = g.nodeN('Split', [qkv, g.int64([(H + Hkv) * D, Hkv * D])], 2, { axis: -1 });
    const qkHeads = applyRope(g, g.node('Reshape', [qk!, g.int64([0, 0, H + Hkv, D])]), s.rope, D);
    [q, k] = g.nodeN('Split', [qkHeads, g.int64([H, Hkv])], 2, { axis: 2 }) as [string, string];
    v = g.node('Reshape', [vFlat!, g.int64([0, 0, Hkv, D])]);
  } else {
    const [qFlat, kFlat, vFlat] = g.nodeN('Split', [qkv, g.int64([H * D, Hkv * D, Hkv * D])], 3, {
      axis: -1,
    });
    q = g.node('Reshape', [qFlat!, g.int64([0, 0, H, D])]);
    k = g.node('Reshape', [kFlat!, g.int64([0, 0, Hkv, D])]);
    v = g.node('Reshape', [vFlat!, g.int64([0, 0, Hkv, D])]);
  }
  const toHeadsFirst = { perm: [0, 2, 1, 3] };
  q = g.node('Transpose', [q], toHeadsFirst); // [batch, H, seq, D]
  const key = g.node(
    'Concat',
    [pastKey, g.node('Transpose', [k], toHeadsFirst)],
    { axis: 2 },
    IO.presentKey(l),
  );
  const value = g.node(
    'Concat',
    [pastValue, g.node('Transpose', [v], toHeadsFirst)],
    { axis: 2 },
    IO.presentValue(l),
  );

  // Query head h reads KV head floor(h / group). Viewing q as [batch, Hkv, group * seq, D]
  // lines each group up with its KV head, so K and V are never repeated.
  const group = H / Hkv;
  const grouped = group > 1;
  const qView = grouped ? g.node('Reshape', [q, g.int64([0, Hkv, -1, D])]) : q;
  let scores = g.node('MatMul', [qView, g.node('Transpose', [key], { perm: [0, 1, 3, 2] })]);
  if (grouped) scores = g.node('Reshape', [scores, g.int64([0, H, -1, 0])]); // [batch, H, seq, total]
  let probs = g.node('Softmax', [g.node('Add', [scores, s.bias])], { axis: -1 });
  if (grouped) probs = g.node('Reshape', [probs, g.int64([0, Hkv, -1, 0])]);
  let context = g.node('MatMul', [probs, value]);
  if (grouped) context = g.node('Reshape', [context, g.int64([0, H, -1, D])]);
  const merged = g.node('Reshape', [g.node('Transpose', [context], toHeadsFirst), g.int64([0, 0, H * D])]);
  return linear(g, merged, w.attentionOut(), `${name}.out`, H * D, d);
}

function mlp(g: GraphBuilder, s: Shared, l: number, w: LayerWeights, h: string): string {
  const { dModel: d, dMlp } = s.spec;
  const name = `layers.${l}.mlp`;
  const gated = s.cfg.details.gatedMlp;
  const hidden = linear(g, h, w.mlpIn(), `${name}.in`, d, gated ? 2 * dMlp : dMlp);
  let act: string;
  if (gated) {
    const [gate, up] = g.nodeN('Split', [hidden, g.int64([dMlp, dMlp])], 2, { axis: -1 });
    act = g.node('Mul', [activation(g, gate!, s.cfg.details.activation), up!]);
  } else {
    act = activation(g, hidden, s.cfg.details.activation);
  }
  if (s.intervention && l === s.spec.nLayers - 1) {
    const [scale, shift] = s.intervention;
    act = interveneRows(builderEmitter(g), act, scale, shift, IO.mlpAct);
  }
  return linear(g, act, w.mlpOut(), `${name}.out`, dMlp, d);
}

/** Folds the attention scale into q's columns (and bias): (s q) . k = s (q . k), RoPE being linear. */
function scaleQueryColumns(
  weight: Float32Array,
  bias: Float32Array | null,
  rows: number,
  cols: number,
  qCols: number,
  scale: number,
): void {
  if (scale === 1) return;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < qCols; c++) weight[base + c]! *= scale;
  }
  if (bias) for (let c = 0; c < qCols; c++) bias[c]! *= scale;
}
