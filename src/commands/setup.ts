// What every model-using command does first: resolve the model folder (demo model by default),
// build or reuse the instrumented graph, load the neuron catalogue, start the engine, and make
// an intervention registry bound to the model's last layer and calibration.

import { InvalidInputError } from '../errors.ts';
import { openModelSource, type ModelSource } from '../model/source.ts';
import { createEngineFromSource, resolveModelDir } from '../runtime/index.ts';
import type { OnnxEngine } from '../runtime/engine.ts';
import { InterventionRegistry, parseInterventionSpec, targetOptions } from '../monitor/interventions.ts';
import { loadCatalogueFor } from '../monitor/catalogue-loader.ts';
import { calibrationMeanLookup, type Catalogue } from '../monitor/catalogue.ts';
import { deviceFlag, dtypeFlag, numberFlag } from './options.ts';
import { withStage } from './progress.ts';

export interface Setup {
  source: ModelSource;
  engine: OnnxEngine;
  /** Null when the caller builds its own (analyze). */
  catalogue: Catalogue | null;
  registry: InterventionRegistry;
}

export async function setupEngine(
  values: Record<string, unknown>,
  opts: { modelId?: string; withoutCatalogue?: boolean } = {},
): Promise<Setup> {
  const err = process.stderr;
  const dir = await withStage(err, 'preparing the model (demo model on first use)', () =>
    resolveModelDir(values.model as string | undefined),
  );
  const source = await withStage(err, 'hashing the weights and building the graph (cached after the first start)', () =>
    openModelSource(dir, { dtype: dtypeFlag(values), quantizeLastLayer: values['quantize-last-layer'] === true }),
  );
  const catalogue = opts.withoutCatalogue
    ? null
    : await withStage(err, 'loading the neuron catalogue', () =>
        loadCatalogueFor(source, {
          catalogue: values.catalogue as string | undefined,
          unigram: values.unigram as string | undefined,
          onProgress: (m) => err.write(`${err.isTTY ? '\r\x1b[K' : ''}${m}\n`),
        }),
      );
  const engine = await createEngineFromSource(source, {
    device: deviceFlag(values),
    watched: { entropy: catalogue?.entropy ?? [], frequency: catalogue?.frequency ?? [] },
    unigram: values.unigram as string | undefined,
    modelId: opts.modelId,
    onWarning: (m) => process.stderr.write(`warning: ${m}\n`),
    // Engine sizing (serve): absent flags take the documented defaults of src/runtime/index.ts.
    kvCacheMb: numberFlag(values, 'kv-cache-mb', { min: 1 }),
    maxBatch: numberFlag(values, 'max-concurrency', { min: 1, integer: true }),
    maxPrefillTokens: numberFlag(values, 'max-prefill-tokens', { min: 1, integer: true }),
    intraOpThreads: numberFlag(values, 'intra-op-threads', { min: 1, integer: true }),
  });
  if (source.kind === 'checkpoint' && source.dtype === 'fp16' && engine.provider === 'cpu') {
    // Measured (README "Choosing a dtype"): on CPU fp16 decodes no faster than fp32 and its
    // process is no smaller, so it only makes sense on CUDA.
    process.stderr.write('warning: --dtype fp16 is meant for --device cuda; on CPU it is no faster or smaller than fp32 (use int8)\n');
  }
  const calibrationMean = catalogue ? calibrationMeanLookup(catalogue) : () => undefined;
  const registry = new InterventionRegistry({
    lastLayer: source.spec.nLayers - 1,
    dMlp: source.spec.dMlp,
    calibrationMean,
    ...targetOptions(engine.catalogue, catalogue, values['max-interventions']),
  });
  return { source, engine, catalogue, registry };
}

/** Registers --intervene flags (validated before any generation starts). */
export function registerCliInterventions(registry: InterventionRegistry, specs: string[] | undefined): void {
  for (const text of specs ?? []) {
    const spec = parseInterventionSpec(text);
    try {
      registry.add({ ...spec, source: 'cli' });
    } catch (e) {
      if (e instanceof InvalidInputError) throw new InvalidInputError(`--intervene ${text}: ${e.message}`, 'intervene');
      throw e;
    }
  }
}
