// GPT-NeoX (Pythia): LayerNorm, partial RoPE, optional parallel residual, and a fused qkv
// projection whose output rows are laid out per head as [heads, 3 (q, k, v), head_dim].

import {
  activation,
  divide,
  ropeConfig,
  type CheckpointConfig,
  type ConfigFields,
  type ParsedConfig,
} from '../config.ts';
import type { Architecture } from '../types.ts';
import type { ModelSpec } from '../types.ts';
import {
  transpose,
  unembeddingFromLmHead,
  type DecoderWeights,
  type LayerWeights,
  type Lazy,
  type LinearWeights,
  type TensorLoader,
} from './weights.ts';

export function gptNeoxWeights(loader: TensorLoader, { spec, details }: CheckpointConfig): DecoderWeights {
  const d = spec.dModel;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < spec.nLayers; l++) {
    const p = `gpt_neox.layers.${l}`;
    layers.push({
      inputNorm: loader.norm(`${p}.input_layernorm`, d, true),
      postAttentionNorm: loader.norm(`${p}.post_attention_layernorm`, d, true),
      qkv: neoxQkv(loader, `${p}.attention.query_key_value`, spec, details.qkvBias),
      attentionOut: loader.linear(`${p}.attention.dense`, d, d, details.attentionOutBias),
      mlpIn: loader.linear(`${p}.mlp.dense_h_to_4h`, d, spec.dMlp, true),
      mlpOut: loader.linear(`${p}.mlp.dense_4h_to_h`, spec.dMlp, d, true),
    });
  }
  const embedOut = spec.tiedEmbeddings ? null : loader.require('embed_out.weight', [spec.vocabSize, d]);
  return {
    tokenEmbedding: loader.require('gpt_neox.embed_in.weight', [spec.vocabSize, d]),
    positionEmbedding: null,
    layers,
    finalNorm: loader.norm('gpt_neox.final_layer_norm', d, true),
    unembedding: embedOut ? unembeddingFromLmHead(embedOut, spec.vocabSize, d) : 'tied',
  };
}

/** Regroups the per-head interleaved rows into q | k | v blocks, then transposes to [in, out]. */
function neoxQkv(
  loader: TensorLoader,
  name: string,
  spec: ModelSpec,
  withBias: boolean,
): Lazy<LinearWeights> {
  const { nHeads: H, headDim: D, dModel: d } = spec;
  const weight = loader.require(`${name}.weight`, [3 * H * D, d]);
  const bias = withBias ? loader.require(`${name}.bias`, [3 * H * D]) : null;
  // Source row (h, part, j) -> destination row (part, h, j); `width` values per row.
  const regroup = (src: Float32Array, width: number): Float32Array => {
    const out = new Float32Array(src.length);
    for (let h = 0; h < H; h++) {
      for (let part = 0; part < 3; part++) {
        const from = (h * 3 + part) * D * width;
        const to = (part * H + h) * D * width;
        out.set(src.subarray(from, from + D * width), to);
      }
    }
    return out;
  };
  return () => ({
    weight: transpose(regroup(weight(), d), 3 * H * D, d),
    bias: bias ? regroup(bias(), 1) : null,
  });
}

/** config.json's fields for this architecture. */
export function parseGptNeoxConfig(cfg: ConfigFields): ParsedConfig {
  const dModel = cfg.int('hidden_size');
  const nHeads = cfg.int('num_attention_heads');
  const nLayers = cfg.int('num_hidden_layers');
  const headDim = divide(cfg, dModel, nHeads, 'hidden_size', 'num_attention_heads');
  const rotaryPct = cfg.optionalNumber('rotary_pct') ?? cfg.optionalNumber('partial_rotary_factor') ?? 1;
  return {
    spec: {
      architecture: 'gpt_neox' as Architecture,
      nLayers,
      dModel,
      nHeads,
      nKvHeads: nHeads,
      headDim,
      dMlp: cfg.optionalInt('intermediate_size') ?? 4 * dModel,
      vocabSize: cfg.int('vocab_size'),
      maxPositions: cfg.optionalInt('max_position_embeddings') ?? 2048,
      normType: 'layernorm' as const,
      normEps: cfg.optionalNumber('layer_norm_eps') ?? 1e-5,
      tiedEmbeddings: cfg.optionalBool('tie_word_embeddings') ?? false,
    },
    details: {
      activation: activation(cfg, 'hidden_act', 'gelu'),
      gatedMlp: false,
      rope: ropeConfig(cfg, headDim, rotaryPct),
      parallelResidual: cfg.optionalBool('use_parallel_residual') ?? true,
      qkvBias: cfg.optionalBool('attention_bias') ?? true,
      attentionOutBias: cfg.optionalBool('attention_bias') ?? true,
      mlpBias: true,
      slidingWindow: null,
      attentionScales: new Array<number>(nLayers).fill(1 / Math.sqrt(headDim)),
    },
  };
}
