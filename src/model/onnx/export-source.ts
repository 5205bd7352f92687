// Existing ONNX exports (Optimum / transformers.js folders) as a model source: finds the graph
// file, instruments it by graph surgery (instrument.ts) into the same IO contract as the graphs
// we build from checkpoints, and caches the result so the surgery runs once per model.

import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ModelLoadError } from '../../errors.ts';
import { readModelSpec } from '../architectures/index.ts';
import { DTYPES, type WeightDtype } from '../architectures/weight-emission.ts';
import type { LastLayerWeights, ModelSpec } from '../types.ts';
import { externalDataFiles, externalReader, placeExternalDataFiles } from './external-data.ts';
import { tensorToFloat32 } from './graph-query.ts';
import {
  GraphSurgeryError,
  inlineUseCacheBranch,
  instrumentModel,
  locateLastLayer,
  type ExportAnatomy,
  type MatmulSite,
} from './instrument.ts';
import { decodeModel, encodeModel, type ModelProto } from './proto.ts';
import { dequantizeMonitoredMatMuls, UnsupportedQuantizationError } from './dequantize-export.ts';
import { upcastFloat16 } from './upcast-float16.ts';
import { IO } from '../types.ts';
import { defaultCacheDir } from '../cache-dir.ts';
import { writeCacheDir } from '../cache-entry.ts';
import { contentKey, modelIdentity, type ModelIdentity } from '../identity.ts';

/** Bump when the surgery's output changes, so cached graphs from older code are not reused. */
export const SURGERY_VERSION = 5;

/**
 * Where Optimum and transformers.js put the decoder graph, per dtype (`--dtype` picks among the
 * variants a transformers.js folder ships side by side), in order of preference; each name is
 * looked for under onnx/ first, then at the folder's top.
 */
const GRAPH_FILES: Readonly<Record<WeightDtype, readonly string[]>> = {
  fp32: ['model.onnx', 'decoder_model_merged.onnx'],
  fp16: ['model_fp16.onnx', 'decoder_model_merged_fp16.onnx'],
  int8: [
    'model_quantized.onnx',
    'model_int8.onnx',
    'model_uint8.onnx',
    'decoder_model_merged_quantized.onnx',
    'decoder_model_merged_int8.onnx',
    'decoder_model_merged_uint8.onnx',
  ],
  int4: ['model_q4.onnx', 'model_q4f16.onnx', 'decoder_model_merged_q4.onnx', 'decoder_model_merged_q4f16.onnx'],
};

function candidates(dtype: WeightDtype): string[] {
  return GRAPH_FILES[dtype].flatMap((f) => [`onnx/${f}`, f]);
}

export interface PreparedExport {
  /** The instrumented graph, in the cache. */
  modelPath: string;
  /** The export's own graph file, untouched. */
  plainModelPath: string;
  spec: ModelSpec;
  cacheKey: string;
  identity: ModelIdentity;
  /** The graph file and every external-data file it references, sorted after the graph. */
  weightFiles: string[];
}


function findModelFile(dir: string, dtype: WeightDtype): string | undefined {
  return candidates(dtype)
    .map((f) => join(dir, f))
    .find((f) => existsSync(f));
}

/** A folder with config.json and an ONNX decoder graph (of any dtype) in one of the usual places. */
export function isExportDir(dir: string): boolean {
  return existsSync(join(dir, 'config.json')) && DTYPES.some((d) => findModelFile(dir, d) !== undefined);
}

function requireModelFile(dir: string, dtype: WeightDtype): string {
  const file = findModelFile(dir, dtype);
  if (file) return file;
  const others = DTYPES.flatMap((d) => {
    const f = d === dtype ? undefined : findModelFile(dir, d);
    return f ? [`${f.slice(dir.length + 1)} (--dtype ${d})`] : [];
  });
  const wanted = `no ${dtype} ONNX graph found (looked for ${candidates(dtype).join(', ')})`;
  throw new ModelLoadError(dir, others.length ? `${wanted}; this export has ${others.join(', ')}` : wanted);
}

function decodeOrFail(file: string, bytes: Uint8Array): ModelProto {
  try {
    return decodeModel(bytes);
  } catch (e) {
    throw new ModelLoadError(file, `not a valid ONNX model, corrupt or truncated (${(e as Error).message})`);
  }
}

/** Runs `fn`, turning "the graph does not look like a decoder we understand" into a ModelLoadError naming the file. */
function surgeryOrFail<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof GraphSurgeryError) throw new ModelLoadError(file, e.message);
    throw e;
  }
}

/**
 * The instrumented graph for an export folder, from the cache when this exact model file and
 * config were instrumented before (by this surgery version), else made now and cached.
 */
export async function prepareExportGraph(
  dir: string,
  opts: { cacheDir?: string; dtype?: WeightDtype } = {},
): Promise<PreparedExport> {
  const plainModelPath = requireModelFile(dir, opts.dtype ?? 'fp32');
  const spec = readModelSpec(dir);
  checkTokenizerFits(dir, spec.vocabSize);

  const bytes = readFileSync(plainModelPath);
  // Decoding keeps large tensors as views of `bytes`: cheap, and it names the external-data files,
  // whose bytes are part of the model's identity as much as the graph's.
  const model = decodeOrFail(plainModelPath, bytes);
  const external = externalDataFiles(model, plainModelPath);
  const weightFiles = [plainModelPath, ...external.map((f) => join(dirname(plainModelPath), f)).sort()];
  const identity = await modelIdentity(basename(dir), join(dir, 'config.json'), weightFiles);
  const cacheKey = contentKey(identity, `confidence-sidecar export surgery v${SURGERY_VERSION}`);
  const entryDir = join(opts.cacheDir ?? defaultCacheDir(), 'onnx-exports', cacheKey);
  const modelPath = join(entryDir, 'model.onnx');
  const prepared = { modelPath, plainModelPath, spec, cacheKey, identity, weightFiles };
  if (existsSync(modelPath)) return prepared;

  surgeryOrFail(plainModelPath, () => {
    dequantizeForSurgery(model, spec, plainModelPath);
    const anatomy = instrumentModel(model, { dMlp: spec.dMlp, normEpsFallback: spec.normEps });
    checkVocab(plainModelPath, anatomy, spec);
  });
  await writeCacheDir(entryDir, 'model.onnx', (tmpDir) => {
    placeExternalDataFiles(plainModelPath, tmpDir, external);
    const encoded = encodeModel(model);
    const fd = openSync(join(tmpDir, 'model.onnx'), 'w');
    try {
      // Parts are written one by one: large tensors stay views of the source file's bytes.
      for (const part of encoded.parts) writeSync(fd, part);
    } finally {
      closeSync(fd);
    }
  });
  return prepared;
}

/**
 * Half and quantized exports, before the surgery: the merged decoder's cache branch is inlined,
 * float16 becomes float32 (upcast-float16.ts), and the unembedding and the last down projection
 * become float32 MatMuls on float32 initializers (dequantize-export.ts).
 */
function dequantizeForSurgery(model: ModelProto, spec: ModelSpec, file: string): void {
  inlineUseCacheBranch(model.graph);
  const read = externalReader(file);
  try {
    upcastFloat16(model.graph, read);
    dequantizeMonitoredMatMuls(model.graph, { dMlp: spec.dMlp, logits: IO.logits, read });
  } catch (e) {
    if (e instanceof UnsupportedQuantizationError) throw new GraphSurgeryError(e.message);
    throw e;
  }
}

function checkVocab(file: string, anatomy: ExportAnatomy, spec: ModelSpec): void {
  if (anatomy.vocab !== spec.vocabSize) {
    throw new ModelLoadError(
      file,
      `the logits are ${anatomy.vocab} wide but config.json says vocab_size ${spec.vocabSize}`,
    );
  }
}

/** tokenizer.json may not produce ids the model has no logits (and no embedding) for. */
function checkTokenizerFits(dir: string, vocabSize: number): void {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) return;
  let tok: { model?: { vocab?: unknown }; added_tokens?: { id?: unknown }[] };
  try {
    tok = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON (${(e as Error).message})`);
  }
  let maxId = -1;
  const vocab = tok.model?.vocab;
  if (Array.isArray(vocab))
    maxId = vocab.length - 1; // Unigram: [[piece, score], ...] indexed by id
  else if (vocab && typeof vocab === 'object') {
    for (const id of Object.values(vocab)) if (typeof id === 'number' && id > maxId) maxId = id;
  }
  for (const t of tok.added_tokens ?? []) if (typeof t.id === 'number' && t.id > maxId) maxId = t.id;
  if (maxId + 1 > vocabSize) {
    throw new ModelLoadError(
      file,
      `the tokenizer has ${maxId + 1} tokens but the model's vocabulary has ${vocabSize}`,
    );
  }
}


// ------------------------------------------------------------------ weights

/**
 * The last layer's weights as the monitor needs them, read from the export's initializers:
 * W_U from the unembedding matmul's weight (or the tied embedding table it transposes), the
 * final norm's gamma/beta, and w_out as rows of the down projection.
 */
export function lastLayerWeightsFromExport(dir: string, dtype: WeightDtype = 'fp32'): LastLayerWeights {
  const file = requireModelFile(dir, dtype);
  const spec = readModelSpec(dir);
  const model = decodeOrFail(file, readFileSync(file));
  const anatomy = surgeryOrFail(file, () => {
    dequantizeForSurgery(model, spec, file);
    return locateLastLayer(model.graph, { dMlp: spec.dMlp });
  });
  checkVocab(file, anatomy, spec);
  const read = externalReader(file);
  const { dModel, dMlp, vocab, norm } = anatomy;
  const vector = (t: typeof norm.gamma, what: string): Float32Array | null => {
    if (!t) return null;
    const v = tensorToFloat32(t, read);
    if (v.length !== dModel)
      throw new ModelLoadError(file, `the final norm's ${what} has ${v.length} values, expected ${dModel}`);
    return v;
  };
  let unembedBias: Float32Array | null = null;
  if (anatomy.unembedBias) {
    unembedBias = tensorToFloat32(anatomy.unembedBias, read);
    if (unembedBias.length === 1) unembedBias = new Float32Array(vocab).fill(unembedBias[0]!);
    if (unembedBias.length !== vocab)
      throw new ModelLoadError(file, `the logits bias has ${unembedBias.length} values, expected ${vocab}`);
  }
  return {
    layer: spec.nLayers - 1,
    normType: norm.type,
    normEps: norm.eps ?? spec.normEps,
    unembed: matrixInOut(anatomy.unembed, read),
    unembedBias,
    // A norm without gamma (folded away by an optimizer) scales by one.
    finalNormWeight: vector(norm.gamma, 'weight') ?? new Float32Array(dModel).fill(1),
    finalNormBias: norm.type === 'rmsnorm' ? null : (vector(norm.beta, 'bias') ?? new Float32Array(dModel)),
    wOut: matrixInOut(anatomy.down, read),
    dModel,
    dMlp,
    vocabSize: vocab,
  };
}

/** A matmul's weight as the product uses it, [in, out] row-major (Gemm's alpha folded in). */
function matrixInOut(site: MatmulSite, read: ReturnType<typeof externalReader>): Float32Array {
  const stored = tensorToFloat32(site.weight, read);
  const out = site.weightTransposed ? transpose(stored, site.outFeatures, site.inFeatures) : stored;
  if (site.alpha !== 1) for (let i = 0; i < out.length; i++) out[i] *= site.alpha;
  return out;
}

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}
