// The normalized weight layout every architecture adapter produces, and the helpers they use to
// get there. All matrices are float32 row-major in [in, out] order, so each projection is one
// MatMul in the graph and the monitor can read w_out rows directly. Tensors are loaded lazily
// (thunks) so the graph builder holds one at a time; names and shapes are checked up front.

import { join } from 'node:path';
import { ModelLoadError } from '../../errors.ts';
import type { SafetensorsCheckpoint } from '../safetensors.ts';

export type Lazy<T> = () => T;

export interface LinearWeights {
  /** [in, out] */
  weight: Float32Array;
  bias: Float32Array | null;
}

export interface NormWeights {
  weight: Float32Array;
  /** null for RMSNorm */
  bias: Float32Array | null;
}

export interface LayerWeights {
  inputNorm: Lazy<NormWeights>;
  /** Norm in front of the MLP (GPT-NeoX parallel residual applies it to the layer input). */
  postAttentionNorm: Lazy<NormWeights>;
  /** [d_model, (n_heads + 2 n_kv_heads) * head_dim]: columns q | k | v, each head-major. Unscaled. */
  qkv: Lazy<LinearWeights>;
  /** [n_heads * head_dim, d_model] */
  attentionOut: Lazy<LinearWeights>;
  /** [d_model, d_mlp], or [d_model, 2 d_mlp] with columns gate | up for gated MLPs. */
  mlpIn: Lazy<LinearWeights>;
  /** [d_mlp, d_model]: row i is neuron i's w_out. */
  mlpOut: Lazy<LinearWeights>;
}

export interface DecoderWeights {
  /** [vocab, d_model] */
  tokenEmbedding: Lazy<Float32Array>;
  /** [max_positions, d_model] for learned absolute positions, else null. */
  positionEmbedding: Lazy<Float32Array> | null;
  layers: LayerWeights[];
  finalNorm: Lazy<NormWeights>;
  /** [d_model, vocab], or 'tied' when the unembedding is the token embedding transposed. */
  unembedding: Lazy<Float32Array> | 'tied';
}

/** Checked, lazy access to a checkpoint's tensors by name. */
export class TensorLoader {
  constructor(
    readonly ckpt: SafetensorsCheckpoint,
    readonly dir: string,
  ) {}

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  /** Checks that `name` exists with `shape` now; reads it when the thunk is called. */
  require(name: string, shape: number[]): Lazy<Float32Array> {
    const info = this.ckpt.tensors.get(name);
    if (!info) throw new ModelLoadError(this.weightsFile(), `missing tensor "${name}"`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ModelLoadError(
        info.file,
        `tensor "${name}" has shape [${info.shape}], config.json implies [${shape}]`,
      );
    }
    return () => this.ckpt.float32(name);
  }

  /** HF nn.Linear `name` (weight [out, in], optional bias [out]) as [in, out]. */
  linear(name: string, inFeatures: number, outFeatures: number, withBias: boolean): Lazy<LinearWeights> {
    const weight = this.require(`${name}.weight`, [outFeatures, inFeatures]);
    const bias = withBias ? this.require(`${name}.bias`, [outFeatures]) : null;
    return () => ({ weight: transpose(weight(), outFeatures, inFeatures), bias: bias?.() ?? null });
  }

  /** Several HF nn.Linear layers reading the same input, fused into one [in, sum(out)] matrix. */
  fusedLinear(
    names: string[],
    inFeatures: number,
    outFeatures: number[],
    withBias: boolean,
  ): Lazy<LinearWeights> {
    const weights = names.map((n, i) => this.require(`${n}.weight`, [outFeatures[i]!, inFeatures]));
    const biases = withBias ? names.map((n, i) => this.require(`${n}.bias`, [outFeatures[i]!])) : null;
    const totalOut = outFeatures.reduce((a, b) => a + b, 0);
    // Stacking [out_i, in] row blocks and transposing once equals transposing each and
    // placing them side by side.
    return () => ({
      weight: transpose(concatVectors(weights.map((w) => w())), totalOut, inFeatures),
      bias: biases ? concatVectors(biases.map((b) => b())) : null,
    });
  }

  /** LayerNorm (weight + bias) or RMSNorm (weight only) of width `width`. */
  norm(name: string, width: number, withBias: boolean): Lazy<NormWeights> {
    const weight = this.require(`${name}.weight`, [width]);
    const bias = withBias ? this.require(`${name}.bias`, [width]) : null;
    return () => ({ weight: weight(), bias: bias?.() ?? null });
  }

  /** Like require(), but null when the tensor is absent. */
  optional(name: string, shape: number[]): Lazy<Float32Array> | null {
    return this.has(name) ? this.require(name, shape) : null;
  }

  /** The file a missing tensor should have been in: the single file, or the shard index. */
  private weightsFile(): string {
    return this.ckpt.files.length === 1
      ? this.ckpt.files[0]!
      : join(this.dir, 'model.safetensors.index.json');
  }
}

/** [rows, cols] -> [cols, rows] */
export function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  // Blocked so both reads and writes stay within cache lines on big matrices.
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const rowBase = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = data[rowBase + c]!;
      }
    }
  }
  return out;
}

export function concatVectors(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** The unembedding [d_model, vocab] from an HF lm_head-style weight [vocab, d_model]. */
export function unembeddingFromLmHead(
  lmHead: Lazy<Float32Array>,
  vocab: number,
  dModel: number,
): Lazy<Float32Array> {
  return () => transpose(lmHead(), vocab, dModel);
}
