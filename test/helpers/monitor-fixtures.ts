// Builds LastLayerWeights straight from the fixture checkpoints, independently of the production
// loader (src/model/checkpoint.ts), so the monitor's tests do not depend on it.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsCheckpoint } from '../../src/model/safetensors.ts';
import type { LastLayerWeights } from '../../src/model/types.ts';
import { fixture } from './shared.ts';

/** [rows, cols] row-major -> [cols, rows] row-major. */
export function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

/** aidreams260K: LLaMA, RMSNorm, tied embeddings; W_U = embed_tokens^T; w_out_i = column i of down_proj. */
export function aidreamsWeights(): LastLayerWeights {
  const ckpt = SafetensorsCheckpoint.openDir(fixture('aidreams260K'));
  const [vocab, dModel] = ckpt.info('model.embed_tokens.weight').shape as [number, number];
  const [, dMlp] = ckpt.info('model.layers.3.mlp.down_proj.weight').shape as [number, number];
  return {
    layer: 3,
    normType: 'rmsnorm',
    normEps: 1e-5,
    unembed: transpose(ckpt.float32('model.embed_tokens.weight'), vocab, dModel),
    unembedBias: null,
    finalNormWeight: ckpt.float32('model.norm.weight'),
    finalNormBias: null,
    wOut: transpose(ckpt.float32('model.layers.3.mlp.down_proj.weight'), dModel, dMlp),
    dModel,
    dMlp,
    vocabSize: vocab,
  };
}

/** gpt2-tiny-random: LayerNorm, tied wte; c_proj is Conv1D [d_mlp, d_model], so rows are w_out already. */
export function gpt2TinyWeights(): LastLayerWeights {
  const ckpt = SafetensorsCheckpoint.openDir(fixture('gpt2-tiny-random'));
  const [vocab, dModel] = ckpt.info('wte.weight').shape as [number, number];
  const [dMlp] = ckpt.info('h.1.mlp.c_proj.weight').shape as [number, number];
  return {
    layer: 1,
    normType: 'layernorm',
    normEps: 1e-5,
    unembed: transpose(ckpt.float32('wte.weight'), vocab, dModel),
    unembedBias: null,
    finalNormWeight: ckpt.float32('ln_f.weight'),
    finalNormBias: ckpt.float32('ln_f.bias'),
    wOut: ckpt.float32('h.1.mlp.c_proj.weight'),
    dModel,
    dMlp,
    vocabSize: vocab,
  };
}

export interface AidreamsWeightMetrics {
  k: number;
  layer: number;
  norm: number[];
  rho: number[];
  logitvar: number[];
  note: string;
}

/** A fixture folder's expected.json (float64 truth from an independent implementation). */
export function fixtureExpected<T = Record<string, unknown>>(name: string): T {
  return JSON.parse(readFileSync(join(fixture(name), 'expected.json'), 'utf8')) as T;
}
