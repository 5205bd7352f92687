// Locates the shared fixtures folder (../shared next to the checkout, or $CONFIDENCE_SIDECAR_SHARED).
// Tests that need it fail loudly when it is missing: a silently skipped test proves nothing.

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function sharedDir(): string {
  const dir = process.env.CONFIDENCE_SIDECAR_SHARED ?? resolve(repoRoot, '../shared');
  if (!existsSync(dir)) {
    throw new Error(
      `shared fixtures not found at ${dir}; set CONFIDENCE_SIDECAR_SHARED to the folder holding models/`,
    );
  }
  return dir;
}

/** Absolute path of a fixture model folder, e.g. fixture('aidreams260K'). */
export function fixture(name: string): string {
  const dir = join(sharedDir(), 'models', name);
  if (!existsSync(dir)) throw new Error(`fixture ${name} not found at ${dir}`);
  return dir;
}
