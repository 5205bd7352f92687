// Builds a checkpoint's ONNX graph once and reuses it: the cache key hashes everything the
// graph depends on (config.json, the weight files' bytes, the builder version, the instrument
// flag, the weight dtype), and builds land in a temp dir that is renamed into place, so
// concurrent processes and crashed builds never leave a half-written graph under a valid key.

import { createHash, type Hash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
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

export interface PrepareGraphOptions {
  instrument: boolean;
  /** MatMul weight dtype, part of the cache key (default fp32). */
  dtype?: WeightDtype;
  /** Quantize the last layer's MLP too (default false), part of the cache key. */
  quantizeLastLayer?: boolean;
  /** Default: $CONFIDENCE_SIDECAR_CACHE, else ~/.cache/confidence-sidecar. */
  cacheDir?: string;
}

export interface PreparedGraph {
  modelPath: string;
  spec: ModelSpec;
  cacheKey: string;
  dtype: WeightDtype;
}


export async function prepareCheckpointGraph(dir: string, opts: PrepareGraphOptions): Promise<PreparedGraph> {
  const modelDir = resolve(dir);
  if (!existsSync(modelDir) || !statSync(modelDir).isDirectory()) {
    throw new ModelLoadError(modelDir, 'model directory not found');
  }
  // Validates config.json, the safetensors headers and every tensor's name and shape before
  // spending time on hashing.
  const { config, checkpoint } = openCheckpoint(modelDir);
  const dtype = opts.dtype ?? 'fp32';
  const quantizeLastLayer = opts.quantizeLastLayer ?? false;
  const variant =
    `instrument=${opts.instrument}\ndtype=${dtype}\nquantize_last_layer=${quantizeLastLayer}\n` +
    (dtype === 'fp32' ? '' : `scheme=${QUANT_SCHEME}\n`);
  const cacheKey = await graphCacheKey(modelDir, checkpoint.files, variant);
  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir());
  const finalDir = join(cacheDir, cacheKey);
  const modelPath = join(finalDir, MODEL_FILE);
  if (existsSync(modelPath)) return { modelPath, spec: config.spec, cacheKey, dtype };

  mkdirSync(cacheDir, { recursive: true });
  const tempDir = mkdtempSync(join(cacheDir, `.build-${cacheKey.slice(0, 12)}-`));
  try {
    buildCheckpointGraph(modelDir, tempDir, { instrument: opts.instrument, dtype, quantizeLastLayer });
    writeFileSync(
      join(tempDir, 'build-info.json'),
      JSON.stringify(
        {
          source: modelDir,
          builderVersion: GRAPH_BUILDER_VERSION,
          instrument: opts.instrument,
          dtype,
          quantizeLastLayer,
          spec: config.spec,
        },
        null,
        2,
      ),
    );
    try {
      renameSync(tempDir, finalDir);
    } catch (e) {
      // Another process finished the same build first; its result is just as good.
      if (!existsSync(modelPath)) throw e;
    }
  } finally {
    rmSync(tempDir, { recursive: true, force: true });
  }
  return { modelPath, spec: config.spec, cacheKey, dtype };
}

/** sha256 over the builder version, the build variant (instrument, dtype), config.json and the weights' bytes. */
async function graphCacheKey(dir: string, weightFiles: string[], variant: string): Promise<string> {
  const hash = createHash('sha256');
  hash.update(`confidence-sidecar graph builder v${GRAPH_BUILDER_VERSION}\n${variant}`);
  const index = join(dir, 'model.safetensors.index.json');
  const files = [join(dir, 'config.json'), ...(existsSync(index) ? [index] : []), ...[...weightFiles].sort()];
  for (const file of files) {
    // Name and size first, so the concatenation of files is unambiguous.
    hash.update(`${basename(file)}\n${statSync(file).size}\n`);
    await hashFile(hash, file);
  }
  return hash.digest('hex');
}

async function hashFile(hash: Hash, file: string): Promise<void> {
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 }))
      hash.update(chunk as Buffer);
  } catch (e) {
    throw new ModelLoadError(file, `cannot be read (${(e as Error).message})`);
  }
}
