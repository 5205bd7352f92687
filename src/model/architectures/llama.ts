// LLaMA and its same-math relatives (Mistral, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query
// attention. q/k/v are fused into one projection and gate/up into another.

import {
  activation,
  divide,
  ropeConfig,
  type CheckpointConfig,
  type ConfigFields,
  type ParsedConfig,
} from '../config.ts';
import type { Architecture } from '../types.ts';
import {
  unembeddingFromLmHead,
  type DecoderWeights,
  type LayerWeights,
  type TensorLoader,
} from './weights.ts';

export function llamaWeights(loader: TensorLoader, { spec, details }: CheckpointConfig): DecoderWeights {
  const d = spec.dModel;
  const qDim = spec.nHeads * spec.headDim;
  const kvDim = spec.nKvHeads * spec.headDim;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < spec.nLayers; l++) {
    const p = `model.layers.${l}`;
    const attn = `${p}.self_attn`;
    layers.push({
      inputNorm: loader.norm(`${p}.input_layernorm`, d, false),
      postAttentionNorm: loader.norm(`${p}.post_attention_layernorm`, d, false),
      qkv: loader.fusedLinear(
        [`${attn}.q_proj`, `${attn}.k_proj`, `${attn}.v_proj`],
        d,
        [qDim, kvDim, kvDim],
        details.qkvBias,
      ),
      attentionOut: loader.linear(`${attn}.o_proj`, qDim, d, details.attentionOutBias),
      mlpIn: loader.fusedLinear(
        [`${p}.mlp.gate_proj`, `${p}.mlp.up_proj`],
        d,
        [spec.dMlp, spec.dMlp],
        details.mlpBias,
      ),
      mlpOut: loader.linear(`${p}.mlp.down_proj`, spec.dMlp, d, details.mlpBias),
    });
  }
  const lmHead = spec.tiedEmbeddings ? null : loader.require('lm_head.weight', [spec.vocabSize, d]);
  return {
    tokenEmbedding: loader.require('model.embed_tokens.weight', [spec.vocabSize, d]),
    positionEmbedding: null,
    layers,
    finalNorm: loader.norm('model.norm', d, false),
    unembedding: lmHead ? unembeddingFromLmHead(lmHead, spec.vocabSize, d) : 'tied',
  };
}

/** config.json's fields for this architecture. */
export function parseLlamaConfig(cfg: ConfigFields, modelType: string): ParsedConfig {
  const dModel = cfg.int('hidden_size');
  const nHeads = cfg.int('num_attention_heads');
  const nKvHeads = cfg.optionalInt('num_key_value_heads') ?? nHeads;
  const nLayers = cfg.int('num_hidden_layers');
  if (nHeads % nKvHeads !== 0) {
    cfg.fail(`num_attention_heads (${nHeads}) is not a multiple of num_key_value_heads (${nKvHeads})`);
  }
  const headDim =
    cfg.optionalInt('head_dim') ?? divide(cfg, dModel, nHeads, 'hidden_size', 'num_attention_heads');
  const isQwen2 = modelType === 'qwen2';
  if (isQwen2 && cfg.optionalBool('use_sliding_window')) {
    cfg.fail('qwen2 with use_sliding_window=true (per-layer windows) is not supported');
  }
  const attentionBias = cfg.optionalBool('attention_bias') ?? false;
  const slidingWindow = modelType === 'mistral' ? cfg.optionalInt('sliding_window') : null;
  return {
    spec: {
      architecture: 'llama' as Architecture,
      nLayers,
      dModel,
      nHeads,
      nKvHeads,
      headDim,
      dMlp: cfg.int('intermediate_size'),
      vocabSize: cfg.int('vocab_size'),
      maxPositions: cfg.optionalInt('max_position_embeddings') ?? 2048,
      normType: 'rmsnorm' as const,
      normEps: cfg.optionalNumber('rms_norm_eps') ?? 1e-6,
      tiedEmbeddings: cfg.optionalBool('tie_word_embeddings') ?? false,
    },
    details: {
      activation: activation(cfg, 'hidden_act', 'silu'),
      gatedMlp: true,
      rope: ropeConfig(cfg, headDim, 1),
      parallelResidual: false,
      // Qwen2 always has q/k/v biases and no o_proj bias; LLaMA's attention_bias covers all four.
      qkvBias: isQwen2 || attentionBias,
      attentionOutBias: !isQwen2 && attentionBias,
      mlpBias: cfg.optionalBool('mlp_bias') ?? false,
      slidingWindow,
      attentionScales: new Array<number>(nLayers).fill(1 / Math.sqrt(headDim)),
    },
  };
}
