// An independent float64 forward pass over a Hugging Face checkpoint folder: reads config.json
// and the tensors under their HF names and layouts, runs one sequence (positions 0..n-1), and
// returns what the instrumented graph reports. It shares no code with src/model/architectures.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsCheckpoint } from '../../src/model/safetensors.ts';
import {
  add,
  causalAttention,
  conv1d,
  geluErf,
  geluTanh,
  layerNorm,
  linear,
  rmsNorm,
  rope,
  silu,
  unembed,
  type Vec,
} from './math.ts';

export interface ReferenceOutputs {
  /** Per position: next-token logits [vocab]. */
  logits: Vec[];
  /** Per position: last-layer MLP activations [d_mlp] (after the intervention, if any). */
  mlpAct: Vec[];
  /** Per position: the final norm's divisor. */
  normScale: number[];
  /** Per position: the final norm's input [d_model]. */
  finalResidual: Vec[];
}

/** a' = a * scale + shift on the last layer's activations, as the graph's neuron_scale/shift. */
export interface ReferenceIntervention {
  scale: ArrayLike<number>;
  shift: ArrayLike<number>;
}

type Config = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The checkpoint's tensors as float64, read once each. */
class Weights {
  private readonly ckpt: SafetensorsCheckpoint;
  private readonly cache = new Map<string, Vec>();
  constructor(dir: string) {
    this.ckpt = SafetensorsCheckpoint.openDir(dir);
  }
  get(name: string): Vec {
    let t = this.cache.get(name);
    if (!t) {
      t = Float64Array.from(this.ckpt.float32(name));
      this.cache.set(name, t);
    }
    return t;
  }
  maybe(name: string): Vec | null {
    return this.ckpt.has(name) ? this.get(name) : null;
  }
  has(name: string): boolean {
    return this.ckpt.has(name);
  }
}

export function referenceForward(
  dir: string,
  ids: number[],
  intervention?: ReferenceIntervention,
): ReferenceOutputs {
  const cfg: Config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const w = new Weights(dir);
  switch (cfg.model_type) {
    case 'gpt2':
      return gpt2(cfg, w, ids, intervention);
    case 'llama':
    case 'mistral':
    case 'qwen2':
      return llama(cfg, w, ids, intervention);
    case 'gpt_neox':
      return gptNeox(cfg, w, ids, intervention);
    default:
      throw new Error(`reference: no forward pass for model_type ${cfg.model_type}`);
  }
}

function intervene(a: Vec, iv: ReferenceIntervention | undefined): Vec {
  return iv ? a.map((v, i) => v * iv.scale[i]! + iv.shift[i]!) : a;
}

function embedRows(table: Vec, ids: number[], d: number): Vec[] {
  return ids.map((id) => table.slice(id * d, (id + 1) * d));
}

/** Splits per-position head vectors and rotates each head's leading rotaryDim dims. */
function rotateHeads(x: Vec[], nHeads: number, headDim: number, rotaryDim: number, theta: number): void {
  x.forEach((v, t) => {
    for (let h = 0; h < nHeads; h++) rope(v, h * headDim, t, rotaryDim, theta);
  });
}

function gpt2(cfg: Config, w: Weights, ids: number[], iv?: ReferenceIntervention): ReferenceOutputs {
  const d: number = cfg.n_embd;
  const H: number = cfg.n_head;
  const D = d / H;
  const dMlp: number = cfg.n_inner ?? 4 * d;
  const eps: number = cfg.layer_norm_epsilon;
  const p = w.has('transformer.wte.weight') ? 'transformer.' : '';
  const wte = w.get(`${p}wte.weight`);
  const wpe = w.get(`${p}wpe.weight`);
  let x = embedRows(wte, ids, d).map((e, t) => add(e, wpe.slice(t * d, (t + 1) * d)));
  let mlpAct: Vec[] = [];
  for (let l = 0; l < cfg.n_layer; l++) {
    const g = (n: string) => w.get(`${p}h.${l}.${n}`);
    const h = x.map((v) => layerNorm(v, g('ln_1.weight'), g('ln_1.bias'), eps).y);
    const qkv = h.map((v) => conv1d(v, g('attn.c_attn.weight'), g('attn.c_attn.bias'), 3 * d));
    const ctx = causalAttention(
      qkv.map((v) => v.slice(0, d)),
      qkv.map((v) => v.slice(d, 2 * d)),
      qkv.map((v) => v.slice(2 * d)),
      H,
      H,
      D,
    );
    x = x.map((v, t) => add(v, conv1d(ctx[t]!, g('attn.c_proj.weight'), g('attn.c_proj.bias'), d)));
    const acts = x.map((v) => {
      const h2 = layerNorm(v, g('ln_2.weight'), g('ln_2.bias'), eps).y;
      const a = conv1d(h2, g('mlp.c_fc.weight'), g('mlp.c_fc.bias'), dMlp).map(geluTanh);
      return l === cfg.n_layer - 1 ? intervene(a, iv) : a;
    });
    x = x.map((v, t) => add(v, conv1d(acts[t]!, g('mlp.c_proj.weight'), g('mlp.c_proj.bias'), d)));
    mlpAct = acts;
  }
  const lmHead = cfg.tie_word_embeddings === false ? (w.maybe('lm_head.weight') ?? wte) : wte;
  const finals = x.map((v) => layerNorm(v, w.get(`${p}ln_f.weight`), w.get(`${p}ln_f.bias`), eps));
  return {
    logits: finals.map((f) => unembed(f.y, lmHead, cfg.vocab_size)),
    mlpAct,
    normScale: finals.map((f) => f.scale),
    finalResidual: x,
  };
}

function llama(cfg: Config, w: Weights, ids: number[], iv?: ReferenceIntervention): ReferenceOutputs {
  const d: number = cfg.hidden_size;
  const H: number = cfg.num_attention_heads;
  const Hkv: number = cfg.num_key_value_heads ?? H;
  const D: number = cfg.head_dim ?? d / H;
  const dMlp: number = cfg.intermediate_size;
  const eps: number = cfg.rms_norm_eps;
  const theta: number = cfg.rope_theta ?? 10000;
  const qwen = cfg.model_type === 'qwen2';
  const qkvBias = qwen || cfg.attention_bias === true;
  const oBias = !qwen && cfg.attention_bias === true;
  const mlpBias = cfg.mlp_bias === true;
  const window: number | null = cfg.model_type === 'mistral' ? (cfg.sliding_window ?? null) : null;
  const embed = w.get('model.embed_tokens.weight');
  let x = embedRows(embed, ids, d);
  let mlpAct: Vec[] = [];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const g = (n: string) => w.get(`model.layers.${l}.${n}`);
    const b = (n: string, on: boolean) => (on ? g(n) : null);
    const h = x.map((v) => rmsNorm(v, g('input_layernorm.weight'), eps).y);
    const q = h.map((v) =>
      linear(v, g('self_attn.q_proj.weight'), b('self_attn.q_proj.bias', qkvBias), H * D),
    );
    const k = h.map((v) =>
      linear(v, g('self_attn.k_proj.weight'), b('self_attn.k_proj.bias', qkvBias), Hkv * D),
    );
    const v = h.map((u) =>
      linear(u, g('self_attn.v_proj.weight'), b('self_attn.v_proj.bias', qkvBias), Hkv * D),
    );
    rotateHeads(q, H, D, D, theta);
    rotateHeads(k, Hkv, D, D, theta);
    const ctx = causalAttention(q, k, v, H, Hkv, D, window);
    x = x.map((u, t) =>
      add(u, linear(ctx[t]!, g('self_attn.o_proj.weight'), b('self_attn.o_proj.bias', oBias), d)),
    );
    const acts = x.map((u) => {
      const h2 = rmsNorm(u, g('post_attention_layernorm.weight'), eps).y;
      const gate = linear(h2, g('mlp.gate_proj.weight'), b('mlp.gate_proj.bias', mlpBias), dMlp);
      const up = linear(h2, g('mlp.up_proj.weight'), b('mlp.up_proj.bias', mlpBias), dMlp);
      const a = gate.map((z, i) => silu(z) * up[i]!);
      return l === cfg.num_hidden_layers - 1 ? intervene(a, iv) : a;
    });
    x = x.map((u, t) =>
      add(u, linear(acts[t]!, g('mlp.down_proj.weight'), b('mlp.down_proj.bias', mlpBias), d)),
    );
    mlpAct = acts;
  }
  const lmHead = cfg.tie_word_embeddings ? embed : w.get('lm_head.weight');
  const finals = x.map((u) => rmsNorm(u, w.get('model.norm.weight'), eps));
  return {
    logits: finals.map((f) => unembed(f.y, lmHead, cfg.vocab_size)),
    mlpAct,
    normScale: finals.map((f) => f.scale),
    finalResidual: x,
  };
}

function gptNeox(cfg: Config, w: Weights, ids: number[], iv?: ReferenceIntervention): ReferenceOutputs {
  const d: number = cfg.hidden_size;
  const H: number = cfg.num_attention_heads;
  const D = d / H;
  const dMlp: number = cfg.intermediate_size;
  const eps: number = cfg.layer_norm_eps;
  const rotaryDim = Math.trunc(D * (cfg.rotary_pct ?? 1));
  const theta: number = cfg.rotary_emb_base ?? 10000;
  const parallel = cfg.use_parallel_residual ?? true;
  let x = embedRows(w.get('gpt_neox.embed_in.weight'), ids, d);
  let mlpAct: Vec[] = [];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const g = (n: string) => w.get(`gpt_neox.layers.${l}.${n}`);
    const last = l === cfg.num_hidden_layers - 1;
    const mlp = (u: Vec): { a: Vec; out: Vec } => {
      const h2 = layerNorm(
        u,
        g('post_attention_layernorm.weight'),
        g('post_attention_layernorm.bias'),
        eps,
      ).y;
      const pre = linear(h2, g('mlp.dense_h_to_4h.weight'), g('mlp.dense_h_to_4h.bias'), dMlp);
      const a = last ? intervene(pre.map(geluErf), iv) : pre.map(geluErf);
      return { a, out: linear(a, g('mlp.dense_4h_to_h.weight'), g('mlp.dense_4h_to_h.bias'), d) };
    };
    const h = x.map((u) => layerNorm(u, g('input_layernorm.weight'), g('input_layernorm.bias'), eps).y);
    const fused = h.map((u) =>
      linear(u, g('attention.query_key_value.weight'), g('attention.query_key_value.bias'), 3 * d),
    );
    // Per head the fused output holds [q (D), k (D), v (D)].
    const part = (which: number) =>
      fused.map((f) => {
        const out = new Float64Array(d);
        for (let hd = 0; hd < H; hd++)
          out.set(f.subarray((hd * 3 + which) * D, (hd * 3 + which + 1) * D), hd * D);
        return out;
      });
    const q = part(0);
    const k = part(1);
    rotateHeads(q, H, D, rotaryDim, theta);
    rotateHeads(k, H, D, rotaryDim, theta);
    const ctx = causalAttention(q, k, part(2), H, H, D);
    const attn = ctx.map((c) => linear(c, g('attention.dense.weight'), g('attention.dense.bias'), d));
    if (parallel) {
      const m = x.map((u) => mlp(u));
      x = x.map((u, t) => add(add(u, attn[t]!), m[t]!.out));
      mlpAct = m.map((r) => r.a);
    } else {
      x = x.map((u, t) => add(u, attn[t]!));
      const m = x.map((u) => mlp(u));
      x = x.map((u, t) => add(u, m[t]!.out));
      mlpAct = m.map((r) => r.a);
    }
  }
  const finals = x.map((u) =>
    layerNorm(u, w.get('gpt_neox.final_layer_norm.weight'), w.get('gpt_neox.final_layer_norm.bias'), eps),
  );
  const embedOut = w.get('embed_out.weight');
  return {
    logits: finals.map((f) => unembed(f.y, embedOut, cfg.vocab_size)),
    mlpAct,
    normScale: finals.map((f) => f.scale),
    finalResidual: x,
  };
}
