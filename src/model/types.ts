// Shared contracts of the model layer. Every architecture adapter, the ONNX-export
// instrumenter, the runtime and the monitor agree on these shapes and names.

export type Architecture = 'gpt2' | 'llama' | 'gpt_neox';
export type NormType = 'layernorm' | 'rmsnorm';

/** Architecture-independent description of a decoder, normalized from config.json. */
export interface ModelSpec {
  architecture: Architecture;
  /** config.json's model_type as written (e.g. "mistral", "qwen2" map to architecture "llama"). */
  modelType: string;
  nLayers: number;
  dModel: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  dMlp: number;
  vocabSize: number;
  maxPositions: number;
  normType: NormType;
  normEps: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  tiedEmbeddings: boolean;
}

/**
 * Names of the instrumented graph's inputs and outputs. Graphs built from a checkpoint and
 * exports instrumented by graph surgery expose exactly these, so the runtime treats both alike.
 *
 * Inputs
 *  - input_ids            int64   [batch, seq]
 *  - attention_mask       int64   [batch, past + seq]
 *  - position_ids         int64   [batch, seq]
 *  - past_key_values.L.key / .value  float32 [batch, kv_heads, past, head_dim]
 *  - logits_to_keep       int64   [1]       only the last k positions go through the unembedding
 *  - neuron_scale         float32 [batch, d_mlp]   last-layer activation a' = a * scale + shift, per row
 *  - neuron_shift         float32 [batch, d_mlp]   (identity: scale 1, shift 0; clamp c: scale 0, shift c)
 *  - unigram_log_prob     float32 [vocab]          log p_freq for unigram_kl (any values when unknown)
 * Outputs
 *  - logits               float32 [batch, keep, vocab]
 *  - present.L.key / .value
 *  - mlp_act              float32 [batch, seq, d_mlp]   last-layer activations AFTER the intervention
 *  - final_norm_scale     float32 [batch, seq]          sqrt(var(x)+eps) or sqrt(mean(x^2)+eps)
 *  - final_residual       float32 [batch, seq, d_model] the final norm's input (for causal analysis)
 *  - logsumexp, entropy, unigram_kl   float64 [batch, keep, 1]   per-position signals of the logits
 *  - top_logprobs float64 / top_ids int64 [batch, keep, min(20, vocab)]  best first
 */
export const IO = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  logitsToKeep: 'logits_to_keep',
  neuronScale: 'neuron_scale',
  neuronShift: 'neuron_shift',
  logits: 'logits',
  mlpAct: 'mlp_act',
  finalNormScale: 'final_norm_scale',
  finalResidual: 'final_residual',
  unigramLogProb: 'unigram_log_prob',
  logSumExp: 'logsumexp',
  entropy: 'entropy',
  unigramKl: 'unigram_kl',
  topLogprobs: 'top_logprobs',
  topIds: 'top_ids',
  pastKey: (layer: number) => `past_key_values.${layer}.key`,
  pastValue: (layer: number) => `past_key_values.${layer}.value`,
  presentKey: (layer: number) => `present.${layer}.key`,
  presentValue: (layer: number) => `present.${layer}.value`,
} as const;

/**
 * The weights the monitor needs for weight-based metrics and causal analysis, as float32
 * row-major matrices. Extracted from safetensors (checkpoints) or from initializers (exports).
 */
export interface LastLayerWeights {
  layer: number;
  normType: NormType;
  normEps: number;
  /** Unembedding W_U as [d_model, vocab] row-major (lm_head.weight transposed, or wte transposed when tied). */
  unembed: Float32Array;
  /** Optional unembedding bias [vocab] (GPT-NeoX has none, GPT-2 has none; kept for completeness). */
  unembedBias: Float32Array | null;
  /** Final norm gamma [d_model] and beta [d_model] (beta null for RMSNorm). */
  finalNormWeight: Float32Array;
  finalNormBias: Float32Array | null;
  /** w_out of every last-layer neuron as [d_mlp, d_model] row-major (row i = neuron i's w_out). */
  wOut: Float32Array;
  dModel: number;
  dMlp: number;
  vocabSize: number;
}
