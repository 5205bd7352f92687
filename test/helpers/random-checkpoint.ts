// Writes tiny random Hugging Face checkpoints (config.json + model.safetensors) for each
// supported architecture, with HF tensor names and layouts, so graphs can be checked against the
// float64 reference without downloading anything. Deterministic for a given seed.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';

export type RandomFlavour = 'gpt2' | 'llama' | 'qwen2' | 'mistral' | 'gpt_neox';

type Config = Record<string, unknown>;

/** Small configs that still exercise the interesting paths (GQA, head_dim != d/H, partial RoPE...). */
export const BASE_CONFIGS: Record<RandomFlavour, Config> = {
  gpt2: {
    model_type: 'gpt2',
    n_embd: 32,
    n_head: 4,
    n_layer: 2,
    n_positions: 64,
    n_inner: null,
    vocab_size: 97,
    activation_function: 'gelu_new',
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true,
    bos_token_id: 0,
    eos_token_id: 0,
  },
  llama: {
    model_type: 'llama',
    hidden_size: 32,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 12,
    intermediate_size: 56,
    num_hidden_layers: 2,
    vocab_size: 89,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 500,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  qwen2: {
    model_type: 'qwen2',
    hidden_size: 32,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    intermediate_size: 48,
    num_hidden_layers: 2,
    vocab_size: 91,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-6,
    rope_theta: 1000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    use_sliding_window: false,
    bos_token_id: 1,
    eos_token_id: [2, 3],
  },
  mistral: {
    model_type: 'mistral',
    hidden_size: 32,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 40,
    num_hidden_layers: 2,
    vocab_size: 79,
    max_position_embeddings: 64,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    sliding_window: 3,
  },
  gpt_neox: {
    model_type: 'gpt_neox',
    hidden_size: 32,
    num_attention_heads: 2,
    num_hidden_layers: 2,
    intermediate_size: 96,
    vocab_size: 83,
    max_position_embeddings: 64,
    rotary_pct: 0.25,
    rotary_emb_base: 10000,
    use_parallel_residual: true,
    layer_norm_eps: 1e-5,
    hidden_act: 'gelu',
    tie_word_embeddings: false,
  },
};

/** Creates a temp folder holding a random checkpoint of `flavour` (config overridable); returns it. */
export function writeRandomCheckpoint(flavour: RandomFlavour, overrides: Config = {}, seed = 1): string {
  const config = { ...BASE_CONFIGS[flavour], ...overrides };
  const dir = mkdtempSync(join(tmpdir(), `cs-random-${flavour}-`));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const rand = new RandomTensors(seed);
  const tensors =
    flavour === 'gpt2'
      ? gpt2Tensors(config, rand)
      : flavour === 'gpt_neox'
        ? neoxTensors(config, rand)
        : llamaTensors(config, rand);
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return dir;
}

class RandomTensors {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** mulberry32: a tiny, good-enough deterministic PRNG in [0, 1). */
  private next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform values with the given standard deviation (around `mean`). */
  tensor(shape: number[], std: number, mean = 0): TensorToWrite {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const half = std * Math.sqrt(3);
    for (let i = 0; i < n; i++) data[i] = mean + (2 * this.next() - 1) * half;
    return { shape, data };
  }
  /** A projection of fan-in `inF`, scaled so activations stay O(1). */
  proj(shape: number[], inF: number): TensorToWrite {
    return this.tensor(shape, 1.2 / Math.sqrt(inF));
  }
  gamma(d: number): TensorToWrite {
    return this.tensor([d], 0.15, 1);
  }
  small(shape: number[]): TensorToWrite {
    return this.tensor(shape, 0.1);
  }
}

function gpt2Tensors(c: Config, r: RandomTensors): Record<string, TensorToWrite> {
  const d = c.n_embd as number;
  const m = (c.n_inner as number | null) ?? 4 * d;
  const t: Record<string, TensorToWrite> = {
    'transformer.wte.weight': r.tensor([c.vocab_size as number, d], 1),
    'transformer.wpe.weight': r.tensor([c.n_positions as number, d], 0.3),
    'transformer.ln_f.weight': r.gamma(d),
    'transformer.ln_f.bias': r.small([d]),
  };
  for (let l = 0; l < (c.n_layer as number); l++) {
    const p = `transformer.h.${l}`;
    // Conv1D weights are [in, out].
    Object.assign(t, {
      [`${p}.ln_1.weight`]: r.gamma(d),
      [`${p}.ln_1.bias`]: r.small([d]),
      [`${p}.attn.c_attn.weight`]: r.proj([d, 3 * d], d),
      [`${p}.attn.c_attn.bias`]: r.small([3 * d]),
      [`${p}.attn.c_proj.weight`]: r.proj([d, d], d),
      [`${p}.attn.c_proj.bias`]: r.small([d]),
      [`${p}.ln_2.weight`]: r.gamma(d),
      [`${p}.ln_2.bias`]: r.small([d]),
      [`${p}.mlp.c_fc.weight`]: r.proj([d, m], d),
      [`${p}.mlp.c_fc.bias`]: r.small([m]),
      [`${p}.mlp.c_proj.weight`]: r.proj([m, d], m),
      [`${p}.mlp.c_proj.bias`]: r.small([d]),
    });
  }
  return t;
}

function llamaTensors(c: Config, r: RandomTensors): Record<string, TensorToWrite> {
  const d = c.hidden_size as number;
  const H = c.num_attention_heads as number;
  const Hkv = (c.num_key_value_heads as number) ?? H;
  const D = (c.head_dim as number) ?? d / H;
  const m = c.intermediate_size as number;
  const V = c.vocab_size as number;
  const qwen = c.model_type === 'qwen2';
  const qkvBias = qwen || c.attention_bias === true;
  const oBias = !qwen && c.attention_bias === true;
  const mlpBias = c.mlp_bias === true;
  // nn.Linear weights are [out, in].
  const t: Record<string, TensorToWrite> = {
    'model.embed_tokens.weight': r.tensor([V, d], 1),
    'model.norm.weight': r.gamma(d),
  };
  if (!c.tie_word_embeddings) t['lm_head.weight'] = r.proj([V, d], d);
  for (let l = 0; l < (c.num_hidden_layers as number); l++) {
    const p = `model.layers.${l}`;
    const lin = (name: string, outF: number, inF: number, bias: boolean) => {
      t[`${p}.${name}.weight`] = r.proj([outF, inF], inF);
      if (bias) t[`${p}.${name}.bias`] = r.small([outF]);
    };
    t[`${p}.input_layernorm.weight`] = r.gamma(d);
    t[`${p}.post_attention_layernorm.weight`] = r.gamma(d);
    lin('self_attn.q_proj', H * D, d, qkvBias);
    lin('self_attn.k_proj', Hkv * D, d, qkvBias);
    lin('self_attn.v_proj', Hkv * D, d, qkvBias);
    lin('self_attn.o_proj', d, H * D, oBias);
    lin('mlp.gate_proj', m, d, mlpBias);
    lin('mlp.up_proj', m, d, mlpBias);
    lin('mlp.down_proj', d, m, mlpBias);
  }
  return t;
}

function neoxTensors(c: Config, r: RandomTensors): Record<string, TensorToWrite> {
  const d = c.hidden_size as number;
  const m = c.intermediate_size as number;
  const V = c.vocab_size as number;
  const t: Record<string, TensorToWrite> = {
    'gpt_neox.embed_in.weight': r.tensor([V, d], 1),
    'gpt_neox.final_layer_norm.weight': r.gamma(d),
    'gpt_neox.final_layer_norm.bias': r.small([d]),
    'embed_out.weight': r.proj([V, d], d),
  };
  for (let l = 0; l < (c.num_hidden_layers as number); l++) {
    const p = `gpt_neox.layers.${l}`;
    Object.assign(t, {
      [`${p}.input_layernorm.weight`]: r.gamma(d),
      [`${p}.input_layernorm.bias`]: r.small([d]),
      [`${p}.post_attention_layernorm.weight`]: r.gamma(d),
      [`${p}.post_attention_layernorm.bias`]: r.small([d]),
      // Rows per head: [q (head_dim), k (head_dim), v (head_dim)].
      [`${p}.attention.query_key_value.weight`]: r.proj([3 * d, d], d),
      [`${p}.attention.query_key_value.bias`]: r.small([3 * d]),
      [`${p}.attention.dense.weight`]: r.proj([d, d], d),
      [`${p}.attention.dense.bias`]: r.small([d]),
      [`${p}.mlp.dense_h_to_4h.weight`]: r.proj([m, d], d),
      [`${p}.mlp.dense_h_to_4h.bias`]: r.small([m]),
      [`${p}.mlp.dense_4h_to_h.weight`]: r.proj([d, m], m),
      [`${p}.mlp.dense_4h_to_h.bias`]: r.small([d]),
    });
  }
  return t;
}
