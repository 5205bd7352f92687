// Architecture registry: which adapter turns a checkpoint's tensors into the normalized decoder
// weights, and the one entry point that writes an ONNX graph for a checkpoint folder.

import { join } from 'node:path';
import { completeConfig, readConfigFields, type CheckpointConfig, type ConfigFields, type ParsedConfig } from '../config.ts';
import { GraphBuilder } from '../onnx/graph-builder.ts';
import { SafetensorsCheckpoint } from '../safetensors.ts';
import type { Architecture, ModelSpec } from '../types.ts';
import { buildDecoderGraph } from './decoder-graph.ts';
import { gpt2Weights, parseGpt2Config } from './gpt2.ts';
import { gptNeoxWeights, parseGptNeoxConfig } from './gpt_neox.ts';
import { llamaWeights, parseLlamaConfig } from './llama.ts';
import { TensorLoader, type DecoderWeights } from './weights.ts';
import { setWeightEmission, type WeightDtype } from './weight-emission.ts';

/**
 * Bumped whenever the graphs built from the same checkpoint change (layout, ops, IO), so that
 * cached graphs from older builders are not reused.
 */
export const GRAPH_BUILDER_VERSION = 4;

export const MODEL_FILE = 'model.onnx';
export const DATA_FILE = 'model.onnx.data';

type WeightsAdapter = (loader: TensorLoader, cfg: CheckpointConfig) => DecoderWeights;

/**
 * One adapter per architecture: its config parser (config.json -> ModelSpec + details) and its
 * tensor mapping (checkpoint names -> DecoderWeights). Adding an architecture is one file with
 * these two functions and one line here (see docs/ARCHITECTURE.md).
 */
interface ArchitectureAdapter {
  /** The config.json `model_type` values it reads. */
  modelTypes: readonly string[];
  parseConfig(cfg: ConfigFields, modelType: string): ParsedConfig;
  weights: WeightsAdapter;
}

const ADAPTERS: Record<Architecture, ArchitectureAdapter> = {
  gpt2: { modelTypes: ['gpt2'], parseConfig: parseGpt2Config, weights: gpt2Weights },
  llama: { modelTypes: ['llama', 'mistral', 'qwen2'], parseConfig: parseLlamaConfig, weights: llamaWeights },
  gpt_neox: { modelTypes: ['gpt_neox'], parseConfig: parseGptNeoxConfig, weights: gptNeoxWeights },
};

/** Reads a Hugging Face checkpoint's config.json (+ generation_config.json) with its adapter. */
export function readCheckpointConfig(dir: string): CheckpointConfig {
  const cfg = readConfigFields(dir);
  const modelType = cfg.string('model_type');
  const adapter = Object.values(ADAPTERS).find((a) => a.modelTypes.includes(modelType));
  if (!adapter) {
    const supported = Object.values(ADAPTERS).flatMap((a) => a.modelTypes);
    return cfg.fail(`unsupported model_type "${modelType}" (supported: ${supported.join(', ')})`);
  }
  return completeConfig(dir, cfg, modelType, adapter.parseConfig(cfg, modelType));
}

export function readModelSpec(dir: string): ModelSpec {
  return readCheckpointConfig(dir).spec;
}

export interface OpenedCheckpoint {
  config: CheckpointConfig;
  checkpoint: SafetensorsCheckpoint;
  /** Every tensor is already checked for presence and shape; reading happens on demand. */
  weights: DecoderWeights;
}

/** Reads config.json and the safetensors headers of `dir` and maps its tensors. */
export function openCheckpoint(dir: string): OpenedCheckpoint {
  const config = readCheckpointConfig(dir);
  const checkpoint = SafetensorsCheckpoint.openDir(dir);
  const weights = ADAPTERS[config.spec.architecture].weights(new TensorLoader(checkpoint, dir), config);
  return { config, checkpoint, weights };
}

export interface BuiltGraph {
  modelPath: string;
  spec: ModelSpec;
}

/**
 * Writes `model.onnx` and `model.onnx.data` for the checkpoint in `dir` into `outDir` (which
 * must exist). Synchronous and memory-light: one tensor is resident at a time.
 */
export interface BuildOptions {
  instrument: boolean;
  /** MatMul weight dtype (default fp32); see weight-emission.ts. */
  dtype?: WeightDtype;
  /** Quantize the last layer's MLP too (default: it stays float32 for the monitor). */
  quantizeLastLayer?: boolean;
}

export function buildCheckpointGraph(dir: string, outDir: string, opts: BuildOptions): BuiltGraph {
  const { config, weights } = openCheckpoint(dir);
  const modelPath = join(outDir, MODEL_FILE);
  const g = new GraphBuilder({ dataPath: join(outDir, DATA_FILE) });
  const dtype = opts.dtype ?? 'fp32';
  const quantizeLastLayer = opts.quantizeLastLayer ?? false;
  setWeightEmission(g, { dtype, quantizeLastLayer, lastLayer: config.spec.nLayers - 1 });
  try {
    buildDecoderGraph(g, config, weights, { instrument: opts.instrument });
  } catch (e) {
    g.abort();
    throw e;
  }
  const { spec } = config;
  g.save(modelPath, {
    'confidence_sidecar.builder_version': String(GRAPH_BUILDER_VERSION),
    'confidence_sidecar.architecture': spec.architecture,
    'confidence_sidecar.model_type': spec.modelType,
    'confidence_sidecar.instrumented': String(opts.instrument),
    'confidence_sidecar.last_layer': String(spec.nLayers - 1),
    'confidence_sidecar.dtype': dtype,
    'confidence_sidecar.quantize_last_layer': String(quantizeLastLayer),
  });
  return { modelPath, spec };
}
