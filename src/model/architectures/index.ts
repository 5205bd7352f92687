// Architecture registry: which adapter turns a checkpoint's tensors into the normalized decoder
// weights, and the one entry point that writes an ONNX graph for a checkpoint folder.

import { join } from 'node:path';
import { readCheckpointConfig, type CheckpointConfig } from '../config.ts';
import { GraphBuilder } from '../onnx/graph-builder.ts';
import { SafetensorsCheckpoint } from '../safetensors.ts';
import type { Architecture, ModelSpec } from '../types.ts';
import { buildDecoderGraph } from './decoder-graph.ts';
import { gpt2Weights } from './gpt2.ts';
import { gptNeoxWeights } from './gpt_neox.ts';
import { llamaWeights } from './llama.ts';
import { TensorLoader, type DecoderWeights } from './weights.ts';

/**
 * Bumped whenever the graphs built from the same checkpoint change (layout, ops, IO), so that
 * cached graphs from older builders are not reused.
 */
export const GRAPH_BUILDER_VERSION = 4;

export const MODEL_FILE = 'model.onnx';
export const DATA_FILE = 'model.onnx.data';

type WeightsAdapter = (loader: TensorLoader, cfg: CheckpointConfig) => DecoderWeights;

const ADAPTERS: Record<Architecture, WeightsAdapter> = {
  gpt2: gpt2Weights,
  llama: llamaWeights,
  gpt_neox: gptNeoxWeights,
};

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
  const weights = ADAPTERS[config.spec.architecture](new TensorLoader(checkpoint, dir), config);
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
export function buildCheckpointGraph(dir: string, outDir: string, opts: { instrument: boolean }): BuiltGraph {
  const { config, weights } = openCheckpoint(dir);
  const modelPath = join(outDir, MODEL_FILE);
  const g = new GraphBuilder({ dataPath: join(outDir, DATA_FILE) });
  try {
    buildDecoderGraph(g, config, weights, opts);
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
  });
  return { modelPath, spec };
}
