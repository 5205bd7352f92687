// The demo model's weights: a GPT-2 with seeded random weights, a planted unembedding geometry and
// planted confidence-regulation neurons in its last layer (planting.ts).
//
// Scales are chosen for behaviour, not realism of every number:
//  - logits spread over a few nats (not flat, as in a freshly initialised model), so that the
//    next-token entropy sits well inside (0, log V) and can move both ways;
//  - attention and MLP blocks write more into the residual stream than the token embedding does, so
//    the tied unembedding does not simply predict the current token again;
//  - the entropy neurons' output is about as large as the rest of the final residual, so the final
//    LayerNorm's sigma (and with it the confidence of every prediction) depends on them.

import type { TensorToWrite } from '../model/safetensors.ts';
import type { LastLayerWeights } from '../model/types.ts';
import { buildTiedEmbedding, planUnembedding, plantNeurons, type PlantedNeurons } from './planting.ts';
import { Rng } from './rng.ts';
import { DEMO_DIMS, LAYER_NORM_EPS, type DemoDims, type DemoSize } from './sizes.ts';
import { logFrequencyDirection, syntheticUnigramCounts } from './unigram.ts';

export interface DemoWeights {
  dims: DemoDims;
  tensors: Record<string, TensorToWrite>;
  planted: PlantedNeurons;
  counts: number[];
}

/** Token-embedding std times sqrt(d_model): sets how spread out the logits are. */
const EMBEDDING_SCALE = 4;
const POSITION_TO_TOKEN = 0.5;
/**
 * Per-coordinate std of all blocks' writes together, relative to the token embedding's, at d_model 64.
 * It grows with sqrt(d_model): the current token's logit through the tied embedding grows like d_model
 * while the others' spread grows like sqrt(d_model) times the residual's norm.
 */
const BLOCKS_TO_TOKEN_AT_64 = 2.5;
/** Entropy neurons' summed baseline output, relative to the norm of the rest of the final residual. */
const ENTROPY_SHARE = 1.3;
/** Unigram prior and frequency neurons' outputs, relative to the same norm. */
const PRIOR_SHARE = 0.25;
const FREQUENCY_NEURON_SHARE = 0.1;
/** Typical activations of the planted neurons (gelu_new of their always-on pre-activation). */
const ENTROPY_ACTIVATION = 3;
const FREQUENCY_ACTIVATION = 2;
/** E[gelu(z)^2] for z ~ N(0, 1): turns a c_proj std into the std of an MLP's output. */
const GELU_SECOND_MOMENT = 0.425;

export function buildDemoWeights(size: DemoSize): DemoWeights {
  const dims = DEMO_DIMS[size];
  const { nLayers: L, dModel: d, dMlp, vocabSize: V, nPositions } = dims;
  const rng = new Rng(`confidence-sidecar demo model ${size}`);
  const k = Math.max(1, Math.round(d / 64));

  const counts = syntheticUnigramCounts(V);
  const logFreq = logFrequencyDirection(counts);

  const tokenStd = EMBEDDING_SCALE / Math.sqrt(d);
  const blocksToToken = BLOCKS_TO_TOKEN_AT_64 * Math.sqrt(d / 64);
  const blockStd = (blocksToToken * tokenStd) / Math.sqrt(2 * L); // each of 2L attention/MLP writes
  const restNorm = tokenStd * Math.sqrt(d * (1 + POSITION_TO_TOKEN ** 2 + blocksToToken ** 2));

  const tensors: Record<string, TensorToWrite> = {};
  const put = (name: string, shape: number[], data: Float32Array) => {
    tensors[name] = { shape, data };
    return data;
  };
  const normal = (n: number, std: number, mean = 0) => rng.normalArray(n, std, mean);

  // The final norm first: the embedding is built around its gamma.
  const finalGamma = Float32Array.from(normal(d, 0.15), (z) => Math.exp(z));
  put('ln_f.weight', [d], finalGamma);
  // No final-norm bias: its logit contribution would not shrink with sigma, so changing an entropy
  // neuron would reorder tokens instead of only sharpening or flattening the distribution.
  put('ln_f.bias', [d], new Float32Array(d));

  const plan = planUnembedding(rng, d, k);
  const wte = put('wte.weight', [V, d], buildTiedEmbedding(rng, V, d, tokenStd, plan, logFreq, finalGamma));
  put('wpe.weight', [nPositions, d], normal(nPositions * d, POSITION_TO_TOKEN * tokenStd));

  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    put(`${p}ln_1.weight`, [d], normal(d, 0.05, 1));
    put(`${p}ln_1.bias`, [d], normal(d, 0.02));
    // Queries/keys ~ N(0, 1.5^2) per head dimension on a normalised input: attention is neither
    // uniform nor one-hot. Values ~ N(0, 1).
    const qkv = new Float32Array(d * 3 * d);
    for (let r = 0; r < d; r++) {
      rng.fillNormal(qkv, 1.5 / Math.sqrt(d), 0, r * 3 * d, 2 * d);
      rng.fillNormal(qkv, 1 / Math.sqrt(d), 0, r * 3 * d + 2 * d, d);
    }
    put(`${p}attn.c_attn.weight`, [d, 3 * d], qkv);
    put(`${p}attn.c_attn.bias`, [3 * d], new Float32Array(3 * d));
    put(`${p}attn.c_proj.weight`, [d, d], normal(d * d, blockStd / Math.sqrt(d)));
    put(`${p}attn.c_proj.bias`, [d], new Float32Array(d));
    put(`${p}ln_2.weight`, [d], normal(d, 0.05, 1));
    put(`${p}ln_2.bias`, [d], normal(d, 0.02));
    put(`${p}mlp.c_fc.weight`, [d, dMlp], normal(d * dMlp, 1 / Math.sqrt(d)));
    put(`${p}mlp.c_fc.bias`, [dMlp], normal(dMlp, 0.1));
    put(
      `${p}mlp.c_proj.weight`,
      [dMlp, d],
      normal(dMlp * d, blockStd / Math.sqrt(GELU_SECOND_MOMENT * dMlp)),
    );
    put(`${p}mlp.c_proj.bias`, [d], new Float32Array(d));
  }

  const last = L - 1;
  const entropyCount = Math.min(4, Math.max(2, k));
  const mlp = {
    layer: last,
    fcWeight: tensors[`h.${last}.mlp.c_fc.weight`]!.data,
    fcBias: tensors[`h.${last}.mlp.c_fc.bias`]!.data,
    projWeight: tensors[`h.${last}.mlp.c_proj.weight`]!.data,
    projBias: tensors[`h.${last}.mlp.c_proj.bias`]!.data,
  };
  const unembedding: LastLayerWeights = {
    layer: last,
    normType: 'layernorm',
    normEps: LAYER_NORM_EPS,
    unembed: transpose(wte, V, d),
    unembedBias: null,
    finalNormWeight: finalGamma,
    finalNormBias: tensors['ln_f.bias']!.data,
    wOut: mlp.projWeight,
    dModel: d,
    dMlp,
    vocabSize: V,
  };
  const planted = plantNeurons(
    rng,
    mlp,
    unembedding,
    plan,
    logFreq,
    {
      entropyNorm: (ENTROPY_SHARE * restNorm) / (ENTROPY_ACTIVATION * entropyCount),
      frequencyNorm: (FREQUENCY_NEURON_SHARE * restNorm) / FREQUENCY_ACTIVATION,
      frequencyPrior: PRIOR_SHARE * restNorm,
    },
    { entropy: entropyCount },
  );
  return { dims, tensors, planted, counts };
}

/** [rows, cols] row-major -> [cols, rows] row-major. */
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = m[base + c]!;
  }
  return out;
}
