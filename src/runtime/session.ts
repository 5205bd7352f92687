// Creating the onnxruntime session on the requested device.
//
// onnxruntime-node ships the CPU provider; the CUDA provider's libraries are downloaded by the
// package's install script only when asked (ONNXRUNTIME_NODE_INSTALL=cuda12). `cuda` therefore
// fails with instructions when they are missing, and `auto` falls back to CPU with a warning.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ModelLoadError, UserError } from '../errors.ts';
import type { Device } from './protocol.ts';

export const CUDA_INSTALL_HINT =
  'the CUDA execution provider is not installed. On a host with an NVIDIA GPU, CUDA 12 and cuDNN 9, run ' +
  '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install` (or reinstall with ' +
  '`ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci` after allowing the package\'s install script), then retry; ' +
  'or use --device cpu';

/** Where onnxruntime-node keeps its native libraries for this platform. */
function nativeDir(): string {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
  return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
}

export function cudaProviderInstalled(): boolean {
  return existsSync(join(nativeDir(), 'libonnxruntime_providers_cuda.so'));
}

export async function createSession(
  modelPath: string,
  device: Device,
  intraOpThreads?: number,
): Promise<{ session: ort.InferenceSession; provider: 'cpu' | 'cuda'; warning?: string }> {
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    ...(intraOpThreads ? { intraOpNumThreads: intraOpThreads } : {}),
  };
  let warning: string | undefined;
  if (device === 'cuda' || device === 'auto') {
    if (!cudaProviderInstalled()) {
      if (device === 'cuda') throw new UserError(`--device cuda: ${CUDA_INSTALL_HINT}`);
      warning = `--device auto: using CPU because ${CUDA_INSTALL_HINT}`;
    } else {
      try {
        const session = await ort.InferenceSession.create(modelPath, {
          ...base,
          executionProviders: ['cuda', 'cpu'],
        });
        return { session, provider: 'cuda' };
      } catch (e) {
        if (device === 'cuda') throw new UserError(`--device cuda: ${(e as Error).message}`);
        warning = `--device auto: CUDA provider failed (${(e as Error).message}); using CPU`;
      }
    }
  }
  try {
    const session = await ort.InferenceSession.create(modelPath, { ...base, executionProviders: ['cpu'] });
    return { session, provider: 'cpu', warning };
  } catch (e) {
    throw new ModelLoadError(modelPath, `onnxruntime could not load the graph: ${(e as Error).message}`);
  }
}
