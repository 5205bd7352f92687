// The demo model's sizes and the Hugging Face GPT-2 config.json that describes each.

export type DemoSize = 'tiny' | 'small' | 'gpt2-small';

export const DEMO_SIZES: readonly DemoSize[] = ['tiny', 'small', 'gpt2-small'];

export interface DemoDims {
  nLayers: number;
  dModel: number;
  nHeads: number;
  dMlp: number;
  vocabSize: number;
  nPositions: number;
}

const GPT2_VOCAB = 50257;
const N_POSITIONS = 1024;

export const DEMO_DIMS: Record<DemoSize, DemoDims> = {
  tiny: { nLayers: 2, dModel: 64, nHeads: 4, dMlp: 256, vocabSize: GPT2_VOCAB, nPositions: N_POSITIONS },
  small: { nLayers: 4, dModel: 256, nHeads: 8, dMlp: 1024, vocabSize: GPT2_VOCAB, nPositions: N_POSITIONS },
  // GPT-2 small's shape, for benchmarks.
  'gpt2-small': {
    nLayers: 12,
    dModel: 768,
    nHeads: 12,
    dMlp: 3072,
    vocabSize: GPT2_VOCAB,
    nPositions: N_POSITIONS,
  },
};

export const LAYER_NORM_EPS = 1e-5;

export function isDemoSize(s: string): s is DemoSize {
  return (DEMO_SIZES as readonly string[]).includes(s);
}

/** config.json as transformers writes it for GPT2LMHeadModel (tied embeddings, gelu_new). */
export function gpt2ConfigJson(dims: DemoDims): Record<string, unknown> {
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    vocab_size: dims.vocabSize,
    n_positions: dims.nPositions,
    n_ctx: dims.nPositions,
    n_embd: dims.dModel,
    n_layer: dims.nLayers,
    n_head: dims.nHeads,
    n_inner: dims.dMlp,
    activation_function: 'gelu_new',
    layer_norm_epsilon: LAYER_NORM_EPS,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    bos_token_id: GPT2_VOCAB - 1,
    eos_token_id: GPT2_VOCAB - 1,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  };
}
