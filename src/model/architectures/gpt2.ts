// GPT-2: learned positions, LayerNorm, Conv1D projections. Conv1D stores weights as [in, out]
// already, and c_attn's columns are q | k | v, so no weight needs reshuffling.

import type { CheckpointConfig } from '../config.ts';
import {
  unembeddingFromLmHead,
  type DecoderWeights,
  type LayerWeights,
  type Lazy,
  type LinearWeights,
  type TensorLoader,
} from './weights.ts';

export function gpt2Weights(loader: TensorLoader, { spec }: CheckpointConfig): DecoderWeights {
  // Checkpoints saved from GPT2LMHeadModel carry a `transformer.` prefix; GPT2Model ones do not.
  const p = loader.has('transformer.wte.weight') ? 'transformer.' : '';
  const d = spec.dModel;
  const conv1d = (name: string, inF: number, outF: number): Lazy<LinearWeights> => {
    const weight = loader.require(`${name}.weight`, [inF, outF]);
    const bias = loader.require(`${name}.bias`, [outF]);
    return () => ({ weight: weight(), bias: bias() });
  };
  const layers: LayerWeights[] = [];
  for (let l = 0; l < spec.nLayers; l++) {
    const h = `${p}h.${l}`;
    layers.push({
      inputNorm: loader.norm(`${h}.ln_1`, d, true),
      postAttentionNorm: loader.norm(`${h}.ln_2`, d, true),
      qkv: conv1d(`${h}.attn.c_attn`, d, 3 * d),
      attentionOut: conv1d(`${h}.attn.c_proj`, d, d),
      mlpIn: conv1d(`${h}.mlp.c_fc`, d, spec.dMlp),
      mlpOut: conv1d(`${h}.mlp.c_proj`, spec.dMlp, d),
    });
  }
  const lmHead = spec.tiedEmbeddings ? null : loader.optional('lm_head.weight', [spec.vocabSize, d]);
  return {
    tokenEmbedding: loader.require(`${p}wte.weight`, [spec.vocabSize, d]),
    positionEmbedding: loader.require(`${p}wpe.weight`, [spec.maxPositions, d]),
    layers,
    finalNorm: loader.norm(`${p}ln_f`, d, true),
    unembedding: lmHead ? unembeddingFromLmHead(lmHead, spec.vocabSize, d) : 'tied',
  };
}
