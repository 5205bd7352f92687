// The unigram-frequency direction in vocabulary space and token-frequency neuron scores
// (REFERENCE.md "Weight-based metrics"):
//   p_freq = (count + 1) / sum(count + 1)          add-one smoothing: no token has log p = -inf
//   f      = log p_freq - mean_v(log p_freq)       centred, like the processed logits
//   f_hat  = f / ||f||
//   score(neuron) = cos(W_U^T w_out, f)            processed W_U and w_out
// The score is computed without forming W_U^T w_out (V wide, per neuron):
//   (W_U^T w) . f = w . (W_U f)   and   ||W_U^T w||^2 = w^T G w   with G = W_U W_U^T.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { InvalidInputError, ModelLoadError } from '../errors.ts';
import { quadraticForms, unembedStats, type UnembedStats } from './weight-metrics.ts';
import type { ProcessedWeights } from './weight-processing.ts';

export interface FrequencyDirection {
  /** log p_freq [V]. */
  logP: Float64Array;
  /** log p_freq minus its mean [V]. */
  f: Float64Array;
  /** f / ||f|| [V] (all zeros when every count is equal: there is no frequency direction). */
  fHat: Float64Array;
}

export function frequencyDirection(counts: ArrayLike<number>): FrequencyDirection {
  const V = counts.length;
  if (V === 0) throw new InvalidInputError('unigram counts are empty', 'counts');
  let total = 0;
  for (let v = 0; v < V; v++) {
    const c = counts[v]!;
    if (!(c >= 0) || !Number.isFinite(c))
      throw new InvalidInputError(`unigram count ${v} is ${c}, expected >= 0`, 'counts');
    total += c + 1;
  }
  const logTotal = Math.log(total);
  const logP = new Float64Array(V);
  let mean = 0;
  for (let v = 0; v < V; v++) {
    logP[v] = Math.log(counts[v]! + 1) - logTotal;
    mean += logP[v]!;
  }
  mean /= V;
  const f = new Float64Array(V);
  let sq = 0;
  for (let v = 0; v < V; v++) {
    f[v] = logP[v]! - mean;
    sq += f[v]! * f[v]!;
  }
  const norm = Math.sqrt(sq);
  const fHat = new Float64Array(V);
  if (norm > 0) for (let v = 0; v < V; v++) fHat[v] = f[v]! / norm;
  return { logP, f, fHat };
}

/**
 * Token-frequency score cos(W_U^T w_out, f) of every last-layer neuron [d_mlp]. Pass the stats
 * already computed for the weight metrics to avoid a second pass over W_U.
 */
export function frequencyScores(
  processed: ProcessedWeights,
  f: ArrayLike<number>,
  stats?: UnembedStats,
): Float64Array {
  const V = f.length;
  const d = processed.unembed.length / V;
  if (!Number.isInteger(d) || d === 0) {
    throw new Error(
      `frequencyScores: W_U has ${processed.unembed.length} values, not a multiple of V = ${V}`,
    );
  }
  const dMlp = processed.wOut.length / d;
  const gram = (stats ?? unembedStats(processed.unembed, d, V)).gram;

  // g = W_U f [d]; rows of W_U are contiguous.
  const g = new Float64Array(d);
  for (let r = 0; r < d; r++) {
    let s = 0;
    const base = r * V;
    for (let v = 0; v < V; v++) s += processed.unembed[base + v]! * f[v]!;
    g[r] = s;
  }
  let fNormSq = 0;
  for (let v = 0; v < V; v++) fNormSq += f[v]! * f[v]!;
  const fNorm = Math.sqrt(fNormSq);

  const quad = quadraticForms(gram, processed.wOut, d);
  const scores = new Float64Array(dMlp);
  for (let i = 0; i < dMlp; i++) {
    let dot = 0;
    for (let r = 0; r < d; r++) dot += processed.wOut[i * d + r]! * g[r]!;
    const denom = Math.sqrt(Math.max(0, quad[i]!)) * fNorm;
    // A neuron with no effect on the logits (or a flat f) has no direction: score 0, not NaN.
    scores[i] = denom > 0 ? dot / denom : 0;
  }
  return scores;
}

/** Counts token ids into a [vocab] histogram. */
export function countUnigrams(ids: Iterable<number>, vocab: number, into?: Float64Array): Float64Array {
  const counts = into ?? new Float64Array(vocab);
  if (counts.length !== vocab)
    throw new Error(`countUnigrams: histogram has ${counts.length} bins, vocab is ${vocab}`);
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) {
      throw new InvalidInputError(`token id ${id} is outside the vocabulary (0..${vocab - 1})`, 'ids');
    }
    counts[id] += 1;
  }
  return counts;
}

/** The unigram file written by the demo model and by `count-unigrams`. */
export interface UnigramFile {
  counts: number[];
  tokenizer?: string;
  /** True for made-up counts (demo model): results say so. */
  synthetic?: boolean;
  description?: string;
  /** Number of tokens counted. */
  tokens?: number;
}

export interface UnigramCounts {
  counts: Float64Array;
  tokenizer: string | null;
  synthetic: boolean;
  description: string | null;
  tokens: number;
}

export function readUnigramFile(path: string, vocabSize: number): UnigramCounts {
  if (!existsSync(path)) throw new ModelLoadError(path, 'unigram counts file not found');
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(path, `not valid JSON (${(e as Error).message})`);
  }
  if (!data || typeof data !== 'object' || !Array.isArray((data as UnigramFile).counts)) {
    throw new ModelLoadError(path, 'expected an object with a "counts" array (one count per token id)');
  }
  const file = data as UnigramFile;
  if (file.counts.length !== vocabSize) {
    throw new ModelLoadError(
      path,
      `has ${file.counts.length} counts but the model's vocabulary has ${vocabSize} tokens (counted with another tokenizer?)`,
    );
  }
  const counts = new Float64Array(vocabSize);
  let total = 0;
  for (let v = 0; v < vocabSize; v++) {
    const c = file.counts[v];
    if (typeof c !== 'number' || !Number.isFinite(c) || c < 0) {
      throw new ModelLoadError(path, `counts[${v}] is ${JSON.stringify(c)}, expected a non-negative number`);
    }
    counts[v] = c;
    total += c;
  }
  for (const key of ['tokenizer', 'description'] as const) {
    if (file[key] !== undefined && typeof file[key] !== 'string')
      throw new ModelLoadError(path, `"${key}" must be a string`);
  }
  if (file.synthetic !== undefined && typeof file.synthetic !== 'boolean') {
    throw new ModelLoadError(path, '"synthetic" must be true or false');
  }
  if (file.tokens !== undefined && (typeof file.tokens !== 'number' || !(file.tokens >= 0))) {
    throw new ModelLoadError(path, '"tokens" must be a non-negative number');
  }
  return {
    counts,
    tokenizer: file.tokenizer ?? null,
    synthetic: file.synthetic ?? false,
    description: file.description ?? null,
    tokens: file.tokens ?? total,
  };
}

export function writeUnigramFile(path: string, file: UnigramFile): void {
  writeFileSync(path, JSON.stringify({ ...file, counts: Array.from(file.counts) }) + '\n');
}
