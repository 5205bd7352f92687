// Builds a checkpoint's ONNX graph once and reuses it: the cache key is the model's content identity
// (src/model/identity.ts: config.json and the weight files' bytes) plus the builder version and the
// build variant (instrument flag, weight dtype); builds are written as cache entries (src/model/cache-entry.ts), so concurrent
// processes and crashed builds never leave a half-written graph under a valid key.

import { existsSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ModelLoadError } from '../errors.ts';
import {
  buildCheckpointGraph,
  GRAPH_BUILDER_VERSION,
  MODEL_FILE,
  openCheckpoint,
} from './architectures/index.ts';
import { QUANT_SCHEME, type WeightDtype } from './architectures/weight-emission.ts';
import type { ModelSpec } from './types.ts';
import { defaultCacheDir } from './cache-dir.ts';
import { writeCacheDir } from './cache-entry.ts';
import { contentKey, modelIdentity, type ModelIdentity } from './identity.ts';

export interface PrepareGraphOptions {
  instrument: boolean;
  /** MatMul weight dtype, part of the cache key (default fp32). */
  dtype?: WeightDtype;
  /** Quantize the last layer's MLP and the unembedding too (default false), part of the cache key. */
  quantizeLastLayer?: boolean;
  /** Default: $CONFIDENCE_SIDECAR_CACHE, else ~/.cache/confidence-sidecar. */
  cacheDir?: string;
}

export interface PreparedGraph {
  modelPath: string;
  spec: ModelSpec;
  cacheKey: string;
  identity: ModelIdentity;
  /** The files holding the weights, sorted. */
  weightFiles: string[];
  dtype: WeightDtype;
  /** Whether the monitored weights are in `dtype` too (never for a float32 graph). */
  quantizeLastLayer: boolean;
}


export async function prepareCheckpointGraph(dir: string, opts: PrepareGraphOptions): Promise<PreparedGraph> {
  const modelDir = resolve(dir);
  if (!existsSync(modelDir) || !statSync(modelDir).isDirectory()) {
    throw new ModelLoadError(modelDir, 'model directory not found');
  }
  // Validates config.json, the safetensors headers and every tensor's name and shape before
  // spending time on hashing.
  const { config, checkpoint } = openCheckpoint(modelDir);
  const weightFiles = [...checkpoint.files].sort();
  const identity = await modelIdentity(basename(modelDir), join(modelDir, 'config.json'), weightFiles);
  const dtype = opts.dtype ?? 'fp32';
  // A float32 graph has nothing to quantize: the flag must not key a second, identical graph.
  const quantizeLastLayer = dtype !== 'fp32' && (opts.quantizeLastLayer ?? false);
  const variant =
    `instrument=${opts.instrument}\ndtype=${dtype}\nquantize_last_layer=${quantizeLastLayer}\n` +
    (dtype === 'fp32' ? '' : `scheme=${QUANT_SCHEME}\n`);
  const cacheKey = contentKey(identity, `confidence-sidecar graph builder v${GRAPH_BUILDER_VERSION}\n${variant}`);
  const finalDir = join(resolve(opts.cacheDir ?? defaultCacheDir()), cacheKey);
  const modelPath = join(finalDir, MODEL_FILE);
  const prepared = { modelPath, spec: config.spec, cacheKey, identity, weightFiles, dtype, quantizeLastLayer };
  if (existsSync(modelPath)) return prepared;
  await writeCacheDir(finalDir, MODEL_FILE, (tempDir) => {
    buildCheckpointGraph(modelDir, tempDir, { instrument: opts.instrument, dtype, quantizeLastLayer });
    const info = {
      source: modelDir,
      builderVersion: GRAPH_BUILDER_VERSION,
      instrument: opts.instrument,
      dtype,
      quantizeLastLayer,
      spec: config.spec,
    };
    writeFileSync(join(tempDir, 'build-info.json'), JSON.stringify(info, null, 2));
  });
  return prepared;
}
