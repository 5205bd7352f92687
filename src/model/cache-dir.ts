// One cache root for everything the sidecar derives from a model: built graphs, instrumented
// exports, weight-only catalogues and the generated demo model.

import { homedir } from 'node:os';
import { join } from 'node:path';

export function defaultCacheDir(): string {
  return process.env.CONFIDENCE_SIDECAR_CACHE || join(homedir(), '.cache', 'confidence-sidecar');
}
