// GPT-2: learned positions, LayerNorm, Conv1D projections. Conv1D stores weights as [in, out]
// already, and c_attn's columns are q | k | v, so no weight needs reshuffling.

import {
  activation,
  divide,
  type CheckpointConfig,
  type ConfigFields,
  type ParsedConfig,
} from '../config.ts';
import type { Architecture } from '../types.ts';
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

/** config.json's fields for this architecture. */
export function parseGpt2Config(cfg: ConfigFields): ParsedConfig {
  const dModel = cfg.int('n_embd');
  const nHeads = cfg.int('n_head');
  const nLayers = cfg.int('n_layer');
  const headDim = divide(cfg, dModel, nHeads, 'n_embd', 'n_head');
  const scaleWeights = cfg.optionalBool('scale_attn_weights') ?? true;
  const byInverseLayer = cfg.optionalBool('scale_attn_by_inverse_layer_idx') ?? false;
  const attentionScales = Array.from(
    { length: nLayers },
    (_, l) => (scaleWeights ? 1 / Math.sqrt(headDim) : 1) * (byInverseLayer ? 1 / (l + 1) : 1),
  );
  return {
    spec: {
      architecture: 'gpt2' as Architecture,
      nLayers,
      dModel,
      nHeads,
      nKvHeads: nHeads,
      headDim,
      dMlp: cfg.optionalInt('n_inner') ?? 4 * dModel,
      vocabSize: cfg.int('vocab_size'),
      maxPositions: cfg.int('n_positions'),
      normType: 'layernorm' as const,
      normEps: cfg.optionalNumber('layer_norm_epsilon') ?? 1e-5,
      tiedEmbeddings: cfg.optionalBool('tie_word_embeddings') ?? true,
    },
    details: {
      activation: activation(cfg, 'activation_function', 'gelu_new'),
      gatedMlp: false,
      rope: null,
      parallelResidual: false,
      qkvBias: true,
      attentionOutBias: true,
      mlpBias: true,
      slidingWindow: null,
      attentionScales,
    },
  };
}
