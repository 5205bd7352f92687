// One content identity per model source: sha256 of config.json and of every file holding weights
// (safetensors shards; an export's model.onnx and its external-data files). The graph cache, the
// export cache and the catalogue all key on it, so a change to any weight byte re-keys all three.
// Hashing streams the files (weights can be gigabytes) and never blocks the event loop.

import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import { ModelLoadError } from '../errors.ts';

export interface ModelIdentity {
  /** Model id as the user named it (folder or hub id). */
  id: string;
  /** sha256 of config.json's bytes. */
  configHash: string;
  /** sha256 over each weight file's name, size and sha256, in the order given (shards sorted). */
  weightsHash: string;
}

// A process hashes a file once: `serve` opens the source, the catalogue checks it, `analyze` again.
const memo = new Map<string, { size: number; mtimeMs: number; hash: Promise<string> }>();

/** sha256 (hex) of a file's bytes, streamed. */
export function fileSha256(path: string): Promise<string> {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelLoadError(path, code === 'ENOENT' ? 'not found' : `cannot be read (${code ?? (e as Error).message})`);
  }
  const hit = memo.get(path);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs) return hit.hash;
  const hash = (async () => {
    const h = createHash('sha256');
    try {
      for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
    } catch (e) {
      memo.delete(path);
      throw new ModelLoadError(path, `cannot be read (${(e as Error).message})`);
    }
    return h.digest('hex');
  })();
  memo.set(path, { size: st.size, mtimeMs: st.mtimeMs, hash });
  return hash;
}

export async function weightsHash(files: readonly string[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of files) {
    const sha = await fileSha256(f);
    h.update(`${basename(f)}\n${statSync(f).size}\n${sha}\n`);
  }
  return h.digest('hex');
}

export async function modelIdentity(id: string, configPath: string, weightFiles: readonly string[]): Promise<ModelIdentity> {
  return { id, configHash: await fileSha256(configPath), weightsHash: await weightsHash(weightFiles) };
}

/** A cache key: the identity's content plus what else the cached artefact depends on (versions, flags). */
export function contentKey(identity: ModelIdentity, dependsOn: string): string {
  return createHash('sha256')
    .update(`${dependsOn}\nconfig=${identity.configHash}\nweights=${identity.weightsHash}\n`)
    .digest('hex');
}
