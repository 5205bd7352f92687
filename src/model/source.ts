// Resolves `--model DIR` to a runnable instrumented graph: a Hugging Face checkpoint folder is
// built into ONNX by our architecture adapters; an existing ONNX export is instrumented by graph
// surgery. Both end in the same IO contract (src/model/types.ts), cached on disk.

import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ModelLoadError } from '../errors.ts';
import { lastLayerWeightsFromCheckpoint } from './checkpoint.ts';
import { prepareCheckpointGraph } from './graph-cache.ts';
import { isExportDir, lastLayerWeightsFromExport, prepareExportGraph } from './onnx/export-source.ts';
import type { LastLayerWeights, ModelSpec } from './types.ts';
import type { ModelIdentity } from './identity.ts';
import type { WeightDtype } from './architectures/weight-emission.ts';

export type SourceKind = 'checkpoint' | 'onnx-export';

export interface ModelSource {
  dir: string;
  kind: SourceKind;
  /** The instrumented graph. */
  modelPath: string;
  spec: ModelSpec;
  cacheKey: string;
  /** Content identity (config.json + weight bytes): keys the graph cache and the catalogue. */
  identity: ModelIdentity;
  /** The files holding the weights (an export's graph and its external data; checkpoint shards). */
  weightFiles: string[];
  /** The weight dtype the graph runs (a checkpoint's build dtype, or the export variant loaded). */
  dtype: WeightDtype;
  /** Whether the monitored weights (last MLP, unembedding) are quantized too; never for exports. */
  quantizeLastLayer: boolean;
  /** Reads the unembedding, final norm and last-layer w_out (for the monitor). */
  lastLayerWeights(): LastLayerWeights;
}

export function sourceKind(dir: string): SourceKind {
  return isExportDir(dir) ? 'onnx-export' : 'checkpoint';
}

export interface OpenSourceOptions {
  cacheDir?: string;
  /**
   * Checkpoints: the MatMul weight dtype the graph is built in (default fp32). Exports: which of
   * the folder's graph variants to load (model.onnx, model_fp16.onnx, model_quantized.onnx,
   * model_q4.onnx, ...); each keeps its own quantization (float16 ones run upcast to float32).
   */
  dtype?: WeightDtype;
  quantizeLastLayer?: boolean;
}

export async function openModelSource(dirArg: string, opts: OpenSourceOptions = {}): Promise<ModelSource> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new ModelLoadError(dir, 'model folder not found');
  if (!statSync(dir).isDirectory()) throw new ModelLoadError(dir, 'is not a folder (pass the model folder)');
  if (!existsSync(`${dir}/config.json`)) throw new ModelLoadError(`${dir}/config.json`, 'file not found');
  const kind = sourceKind(dir);
  if (kind === 'onnx-export') {
    // Refused rather than ignored: an export's monitored matmuls are always float32 (the surgery
    // folds them), so the flag could only mislead.
    if (opts.quantizeLastLayer)
      throw new ModelLoadError(dir, '--quantize-last-layer applies to checkpoints; an export keeps its own quantization');
    const p = await prepareExportGraph(dir, { cacheDir: opts.cacheDir, dtype: opts.dtype });
    return {
      dir,
      kind,
      modelPath: p.modelPath,
      spec: p.spec,
      cacheKey: p.cacheKey,
      identity: p.identity,
      weightFiles: p.weightFiles,
      dtype: opts.dtype ?? 'fp32',
      quantizeLastLayer: false,
      lastLayerWeights: () => lastLayerWeightsFromExport(dir, opts.dtype),
    };
  }
  const p = await prepareCheckpointGraph(dir, {
    instrument: true,
    cacheDir: opts.cacheDir,
    dtype: opts.dtype,
    quantizeLastLayer: opts.quantizeLastLayer,
  });
  return {
    dir,
    kind,
    modelPath: p.modelPath,
    spec: p.spec,
    cacheKey: p.cacheKey,
    identity: p.identity,
    weightFiles: p.weightFiles,
    dtype: p.dtype,
    quantizeLastLayer: p.quantizeLastLayer,
    lastLayerWeights: () => lastLayerWeightsFromCheckpoint(dir),
  };
}

export function defaultModelId(dir: string): string {
  return basename(resolve(dir));
}

/** The unigram file that belongs to a model folder, if any. */
export function defaultUnigramFile(dir: string): string | undefined {
  const f = join(dir, 'unigram.json');
  return existsSync(f) ? f : undefined;
}
