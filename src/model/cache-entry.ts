// Every cache entry (a built graph, an instrumented export, the demo model, a cached catalogue) is
// written the same way: into a private temporary sibling, then renamed into place. A reader never
// sees a half-written entry, a crashed build leaves no valid key behind, and of two processes racing
// on the same entry one rename wins and the other's identical copy is discarded.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

function tempSibling(path: string): string {
  return join(dirname(path), `.tmp-${basename(path)}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/**
 * Makes the folder `entryDir` by running `build` on an empty temporary folder and renaming it into
 * place. `complete` is the file whose presence marks a finished entry (another process's, after a lost race).
 */
export async function writeCacheDir(
  entryDir: string,
  complete: string,
  build: (tmpDir: string) => void | Promise<void>,
): Promise<void> {
  mkdirSync(dirname(entryDir), { recursive: true });
  const tmp = tempSibling(entryDir);
  mkdirSync(tmp);
  try {
    await build(tmp);
    try {
      renameSync(tmp, entryDir);
    } catch (e) {
      if (!existsSync(join(entryDir, complete))) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Writes one file atomically (temporary sibling, then rename). */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempSibling(path);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}
