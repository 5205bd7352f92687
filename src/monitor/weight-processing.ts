// Weight processing applied before any weight-based metric (REFERENCE.md "Weight processing").
// It mirrors TransformerLens' defaults, which the paper's numbers were computed with:
//  1. fold the final norm's gamma into the unembedding: W_U <- diag(gamma) W_U, so the norm is a pure
//     scale and W_U alone says what a residual direction does to the logits;
//  2. LayerNorm models only: LayerNorm subtracts the residual's mean, so the all-ones direction of the
//     residual is invisible to the logits: remove it from every column of W_U and from every w_out;
//  3. logits are shift-invariant (softmax), so remove each W_U row's mean over the vocabulary.
// Inputs are never modified; sums are accumulated in float64.

import type { LastLayerWeights } from '../model/types.ts';

export interface ProcessedWeights {
  /** Processed W_U, [d_model, vocab] row-major. */
  unembed: Float32Array;
  /** Processed w_out of every last-layer neuron, [d_mlp, d_model] row-major. */
  wOut: Float32Array;
}

export function processWeights(w: LastLayerWeights): ProcessedWeights {
  const { dModel, vocabSize: vocab, dMlp } = w;
  if (w.unembed.length !== dModel * vocab) {
    throw new Error(`processWeights: unembed has ${w.unembed.length} values, expected ${dModel}x${vocab}`);
  }
  if (w.wOut.length !== dMlp * dModel) {
    throw new Error(`processWeights: wOut has ${w.wOut.length} values, expected ${dMlp}x${dModel}`);
  }
  if (w.finalNormWeight.length !== dModel) {
    throw new Error(
      `processWeights: final norm weight has ${w.finalNormWeight.length} values, expected ${dModel}`,
    );
  }

  // Work in float64 and round once at the end, so the three steps do not compound float32 error.
  const u = new Float64Array(dModel * vocab);
  for (let r = 0; r < dModel; r++) {
    const gamma = w.finalNormWeight[r];
    const base = r * vocab;
    for (let v = 0; v < vocab; v++) u[base + v] = gamma * w.unembed[base + v];
  }

  const wOut = new Float64Array(dMlp * dModel);
  for (let i = 0; i < wOut.length; i++) wOut[i] = w.wOut[i];

  if (w.normType === 'layernorm') {
    // Column means over d_model, accumulated row by row so the inner loop runs along memory.
    const colMean = new Float64Array(vocab);
    for (let r = 0; r < dModel; r++) {
      const base = r * vocab;
      for (let v = 0; v < vocab; v++) colMean[v] += u[base + v];
    }
    for (let v = 0; v < vocab; v++) colMean[v] /= dModel;
    for (let r = 0; r < dModel; r++) {
      const base = r * vocab;
      for (let v = 0; v < vocab; v++) u[base + v] -= colMean[v];
    }
    for (let i = 0; i < dMlp; i++) {
      const base = i * dModel;
      let s = 0;
      for (let r = 0; r < dModel; r++) s += wOut[base + r];
      const mean = s / dModel;
      for (let r = 0; r < dModel; r++) wOut[base + r] -= mean;
    }
  }

  for (let r = 0; r < dModel; r++) {
    const base = r * vocab;
    let s = 0;
    for (let v = 0; v < vocab; v++) s += u[base + v];
    const mean = s / vocab;
    for (let v = 0; v < vocab; v++) u[base + v] -= mean;
  }

  return { unembed: new Float32Array(u), wOut: new Float32Array(wOut) };
}
