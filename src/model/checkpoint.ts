// The last layer's weights that the monitor's weight metrics and causal analysis need, read
// straight from a Hugging Face checkpoint (no graph involved).

import type { LastLayerWeights } from './types.ts';
import { openCheckpoint } from './architectures/index.ts';
import { transpose } from './architectures/weights.ts';

export function lastLayerWeightsFromCheckpoint(dir: string): LastLayerWeights {
  const { config, weights } = openCheckpoint(dir);
  const { spec } = config;
  const last = spec.nLayers - 1;
  const finalNorm = weights.finalNorm();
  const unembed =
    weights.unembedding === 'tied'
      ? transpose(weights.tokenEmbedding(), spec.vocabSize, spec.dModel)
      : weights.unembedding();
  return {
    layer: last,
    normType: spec.normType,
    normEps: spec.normEps,
    unembed,
    unembedBias: null,
    finalNormWeight: finalNorm.weight,
    finalNormBias: finalNorm.bias,
    // The adapters already lay the down projection out as [d_mlp, d_model]: row i is w_out of i.
    wOut: weights.layers[last]!.mlpOut().weight,
    dModel: spec.dModel,
    dMlp: spec.dMlp,
    vocabSize: spec.vocabSize,
  };
}
