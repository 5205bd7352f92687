// createEngine: everything between `--model DIR` and a ready-to-generate Engine.

import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { Tokenizer } from '../model/tokenizer.ts';
import { openModelSource, defaultModelId, defaultUnigramFile, type ModelSource } from '../model/source.ts';
export { defaultUnigramFile } from '../model/source.ts';
import { OnnxEngine, type WatchedNeurons } from './engine.ts';
import { InferenceWorker } from './worker-client.ts';
import type { Device } from './protocol.ts';
import type { WeightDtype } from '../model/architectures/weight-emission.ts';
import { frequencyDirection, readUnigramFile } from '../monitor/frequency.ts';
import { watchedIndices } from '../monitor/neurons.ts';

export interface EngineOptions {
  /** Model folder; the built-in demo model (tiny) when absent. */
  model?: string;
  device?: Device;
  cacheDir?: string;
  /** MatMul weight dtype of a graph built from a checkpoint (default fp32; exports keep theirs). */
  dtype?: WeightDtype;
  quantizeLastLayer?: boolean;
  /** Neurons to report per token; normally from the catalogue (see src/monitor/catalogue-loader.ts). */
  watched?: WatchedNeurons;
  /** Unigram counts file; default: unigram.json in the model folder when present. */
  unigram?: string;
  modelId?: string;
  /** onnxruntime intra-op threads; default defaultIntraOpThreads(). */
  intraOpThreads?: number;
  /** KV cache budget (MiB) for admission: default DEFAULT_KV_CACHE_MB. */
  kvCacheMb?: number;
  /** Most sequences decoded in one batch step: default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Prompt tokens prefilled between two decode steps: default DEFAULT_MAX_PREFILL_TOKENS. */
  maxPrefillTokens?: number;
  onWarning?: (message: string) => void;
}

/** 1 GiB: at GPT-2-small size (72 KiB per token) about 14k tokens of context across all sequences. */
export const DEFAULT_KV_CACHE_MB = 1024;
export const DEFAULT_MAX_BATCH = 16;
/** One chunk of this size costs about as much as a few decode steps of a small model. */
export const DEFAULT_MAX_PREFILL_TOKENS = 256;

/**
 * onnxruntime intra-op threads when --intra-op-threads is not given: every core. Measured on the
 * 2-core development machine, quiet, GPT-2-small-size demo model (`npm run bench`): 2 threads
 * decoded a single stream at 31.8 tok/s and 16 streams through the server at 104.8 tok/s, against
 * 14.7 and 76.0 with 1 thread; the matmuls need both cores and the HTTP/sampling work fits between
 * steps. (On the tiny demo model, and with the machine loaded by other processes, 1 thread was
 * faster: 58-62 vs 30-31 tok/s single stream. Small models on busy hosts: pass --intra-op-threads 1.)
 */
export function defaultIntraOpThreads(): number {
  return Math.max(1, availableParallelism());
}

export async function resolveModelDir(model: string | undefined): Promise<string> {
  if (model) return model;
  // Loaded lazily: only commands run without --model need the demo generator.
  const { demoModelDir } = await import('../demo/index.ts');
  return demoModelDir('tiny');
}

export async function createEngineFromSource(source: ModelSource, opts: EngineOptions = {}): Promise<OnnxEngine> {
  const tokenizer = Tokenizer.load(source.dir);
  tokenizer.checkVocab(source.spec.vocabSize, join(source.dir, 'tokenizer.json'));
  const unigramPath = opts.unigram ?? defaultUnigramFile(source.dir);
  const logPFreq = unigramPath
    ? Float32Array.from(frequencyDirection(readUnigramFile(unigramPath, source.spec.vocabSize).counts).logP)
    : null;
  const watched = opts.watched ?? { entropy: [], frequency: [] };
  const layer = source.spec.nLayers - 1;
  for (const a of [...watched.entropy, ...watched.frequency]) {
    if (!a.startsWith(`${layer}.`)) throw new Error(`watched neuron ${a} is not in the last layer (${layer})`);
  }
  const worker = new InferenceWorker();
  try {
    const init = await worker.init({
      modelPath: source.modelPath,
      spec: source.spec,
      device: opts.device ?? 'cpu',
      watchNeurons: watchedIndices(watched),
      logPFreq,
      intraOpThreads: opts.intraOpThreads ?? defaultIntraOpThreads(),
      kvCacheBytes: (opts.kvCacheMb ?? DEFAULT_KV_CACHE_MB) * 2 ** 20,
      maxBatch: opts.maxBatch ?? DEFAULT_MAX_BATCH,
      maxPrefillTokens: opts.maxPrefillTokens ?? DEFAULT_MAX_PREFILL_TOKENS,
    });
    if (init.warning) opts.onWarning?.(init.warning);
    return new OnnxEngine({
      spec: source.spec,
      modelId: opts.modelId ?? defaultModelId(source.dir),
      source,
      tokenizer,
      worker,
      watched,
      init,
    });
  } catch (e) {
    await worker.terminate();
    throw e;
  }
}

export async function createEngine(opts: EngineOptions = {}): Promise<OnnxEngine> {
  const dir = await resolveModelDir(opts.model);
  const source = await openModelSource(dir, {
    cacheDir: opts.cacheDir,
    dtype: opts.dtype,
    quantizeLastLayer: opts.quantizeLastLayer,
  });
  return createEngineFromSource(source, opts);
}
