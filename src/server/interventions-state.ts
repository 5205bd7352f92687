// `--state-dir DIR`: interventions created through the API survive a restart. Every change is
// written to DIR/interventions.json atomically (a temporary file in the same directory, fsynced,
// then renamed over the old one, so a crash leaves the old or the new file, never half of one) and
// the file is read back at start, dropping the ones that expired meanwhile. Only API-made global
// interventions are kept: request-scoped ones die with their request, file ones come from the
// file, CLI ones from the flags. Restore and shutdown leave audit lines.

import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import type { InterventionRegistry, StoredIntervention } from '../monitor/interventions.ts';
import { InterventionsFile } from './interventions-file.ts';
import { auditIntervention } from './routes/audit.ts';

export const STATE_FILE = 'interventions.json';
const STATE_VERSION = 1;

interface StateFile {
  version: number;
  saved_at: string;
  interventions: StoredIntervention[];
}

const persistent = (iv: StoredIntervention) => iv.source === 'api' && iv.requestId === null;

export class InterventionState {
  readonly file: string;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  private readonly onChange = (iv: StoredIntervention) => {
    if (persistent(iv)) this.save();
  };

  constructor(
    readonly dir: string,
    private readonly registry: InterventionRegistry,
    private readonly log: FastifyBaseLogger,
  ) {
    this.file = join(dir, STATE_FILE);
  }

  /** Restores the saved interventions, then saves on every change. */
  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    let saved: StoredIntervention[] = [];
    try {
      const data = JSON.parse(await readFile(this.file, 'utf8')) as StateFile;
      if (data.version !== STATE_VERSION || !Array.isArray(data.interventions))
        throw new Error(`unknown state format (version ${String(data.version)})`);
      saved = data.interventions;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.error({ err, file: this.file }, 'interventions state unreadable; starting without it (it is overwritten at the next change)');
    }
    const { restored, skipped } = this.registry.restore(saved.filter(persistent));
    for (const iv of restored) auditIntervention(this.log, 'restore', iv, 'state', null);
    for (const s of skipped) this.log.info({ audit: true, action: 'drop', source: 'state', id: s.id, reason: s.why }, 'intervention not restored');
    this.log.info({ file: this.file, restored: restored.length, dropped: skipped.length }, 'interventions state restored');
    this.registry.on('created', this.onChange).on('removed', this.onChange).on('expired', this.onChange);
    if (skipped.length > 0) this.save();
  }

  /** Queues a write of the current set; writes never overlap and the last one wins. */
  save(): Promise<void> {
    this.dirty = true;
    this.writing = this.writing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      try {
        await this.write(this.registry.list().filter(persistent));
      } catch (err) {
        this.log.error({ err, file: this.file }, 'interventions state: write failed; the API change holds in memory only');
      }
    });
    return this.writing;
  }

  private async write(list: StoredIntervention[]): Promise<void> {
    const body: StateFile = { version: STATE_VERSION, saved_at: new Date().toISOString(), interventions: list };
    const tmp = `${this.file}.tmp-${process.pid}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(body, null, 1) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.file);
  }

  /** Final save; one audit line per intervention kept for the next start. */
  async close(): Promise<void> {
    this.registry.off('created', this.onChange).off('removed', this.onChange).off('expired', this.onChange);
    const kept = this.registry.list().filter(persistent);
    await this.save();
    for (const iv of kept) auditIntervention(this.log, 'persist', iv, 'state', null);
    this.log.info({ file: this.file, saved: kept.length }, 'interventions state saved');
  }
}

export interface InterventionSourcesOptions {
  /** --interventions FILE */
  interventionsFile?: string | null;
  /** --state-dir DIR */
  stateDir?: string | null;
  /** Poll interval of the file's fallback watch (ms). */
  pollMs?: number;
}

/** Restores the state directory, applies the interventions file and keeps both up; close() saves. */
export async function startInterventionSources(
  registry: InterventionRegistry,
  log: FastifyBaseLogger,
  opts: InterventionSourcesOptions,
): Promise<{ close(): Promise<void> }> {
  let state: InterventionState | null = null;
  if (opts.stateDir) {
    state = new InterventionState(opts.stateDir, registry, log);
    await state.start();
  } else {
    log.info('interventions created through the API are kept in memory only and lost at restart; pass --state-dir DIR to keep them');
  }
  let file: InterventionsFile | null = null;
  if (opts.interventionsFile) {
    file = new InterventionsFile({ path: opts.interventionsFile, registry, log, ...(opts.pollMs ? { pollMs: opts.pollMs } : {}) });
    await file.start();
  }
  return {
    async close() {
      await file?.close();
      await state?.close();
    },
  };
}
