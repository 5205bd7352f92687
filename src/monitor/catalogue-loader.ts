// Which catalogue a run uses: the one given with --catalogue (checked against the model), or a
// weight-only catalogue computed at load and cached beside the built graph (the graph's cache
// folder is keyed by the weights' content hash, so the cached catalogue can never go stale).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../model/cache-entry.ts';
import { ModelLoadError } from '../errors.ts';
import type { ModelSource } from '../model/source.ts';
import { defaultUnigramFile } from '../model/source.ts';
import {
  buildCatalogue,
  identityMismatch,
  readCatalogue,
  type Catalogue,
} from './catalogue.ts';
import { computeWeightMetrics, defaultK, unembedStats } from './weight-metrics.ts';
import { processWeights } from './weight-processing.ts';
import { frequencyDirection, frequencyScores, readUnigramFile } from './frequency.ts';

/** Bumped when the weight-only catalogue's content changes (2: dark subspace with the exact null space, Pareto ranking). */
const WEIGHT_CATALOGUE_VERSION = 2;

export interface CatalogueOptions {
  catalogue?: string;
  unigram?: string;
  top?: number;
  onProgress?: (message: string) => void;
}

export async function loadCatalogueFor(source: ModelSource, opts: CatalogueOptions = {}): Promise<Catalogue> {
  if (opts.catalogue) {
    const c = readCatalogue(opts.catalogue);
    const layer = source.spec.nLayers - 1;
    if (c.layer !== layer || c.dMlp !== source.spec.dMlp) {
      throw new ModelLoadError(
        opts.catalogue,
        `describes layer ${c.layer} with ${c.dMlp} neurons; the model's last layer is ${layer} with ${source.spec.dMlp}`,
      );
    }
    const mismatch = identityMismatch(c, identityOf(source));
    if (mismatch) throw new ModelLoadError(opts.catalogue, `does not belong to this model: ${mismatch}`);
    return c;
  }
  const unigram = opts.unigram ?? defaultUnigramFile(source.dir);
  const cached = join(
    dirname(source.modelPath),
    `catalogue.weights.v${WEIGHT_CATALOGUE_VERSION}${unigram ? '.freq' : ''}.json`,
  );
  if (existsSync(cached) && !opts.unigram) return readCatalogue(cached);
  opts.onProgress?.('computing the weight-only neuron catalogue (cached for the next start)...');
  const c = weightCatalogue(source, { unigram, top: opts.top });
  if (!opts.unigram) {
    writeFileAtomic(cached, JSON.stringify(c) + '\n');
  }
  return c;
}

/** The model identity a catalogue records: the source's own (src/model/identity.ts). */
export function identityOf(source: ModelSource) {
  return source.identity;
}

/** Weight metrics for every last-layer neuron and the candidates they imply (no corpus). */
export function weightCatalogue(
  source: ModelSource,
  opts: { unigram?: string; top?: number; k?: number },
): Catalogue {
  const weights = source.lastLayerWeights();
  const processed = processWeights(weights);
  const stats = unembedStats(processed.unembed, weights.dModel, weights.vocabSize);
  const metrics = computeWeightMetrics(weights, { k: opts.k ?? defaultK(weights.dModel), processed, stats });
  const freqScores = opts.unigram
    ? frequencyScores(
        processed,
        frequencyDirection(readUnigramFile(opts.unigram, weights.vocabSize).counts).f,
        stats,
      )
    : null;
  return buildCatalogue({
    model: identityOf(source),
    layer: weights.layer,
    metrics,
    freqScores,
    top: opts.top ?? 10,
    corpus: null,
  });
}
