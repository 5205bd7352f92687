// LLaMA and its same-math relatives (Mistral, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query
// attention. q/k/v are fused into one projection and gate/up into another.

import type { CheckpointConfig } from '../config.ts';
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
