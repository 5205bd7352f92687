// Declarative interventions: `--interventions FILE` (YAML, or JSON, which is YAML too). The file is
// the whole truth about its interventions: applied at start, re-applied whenever it changes, and
// its entries cannot be deleted through the API. One schema with the API's request body:
//
//   interventions:                # or the list itself at the top level
//     - neuron: "11.584"          # quote addresses: YAML reads 11.50 as the number 11.5
//       mode: clamp               # clamp | scale | add | mean_ablate | target_entropy
//       value: 5
//     - mode: target_entropy      # neurons: [...] optional (default: the leading entropy neurons)
//       value: 2.5
//
// Changes are noticed by watching the file's directory, because a Kubernetes ConfigMap mount
// swaps a symlink (..data) rather than writing the file, so a watch on the file itself goes
// stale; a poll compares the content as a fallback (network filesystems, missed events). A file
// that does not parse or validate is rejected with one logged error naming its line, and the last
// good set stays live.

import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { InvalidInputError, UserError } from '../errors.ts';
import type { AddInterventionInput, InterventionRegistry } from '../monitor/interventions.ts';
import { auditIntervention } from './routes/audit.ts';

const FIELDS = new Set(['neuron', 'neurons', 'mode', 'value']);
/** Default poll interval of the fallback (ms). */
export const DEFAULT_POLL_MS = 2000;
/** Events of one swap come in bursts; read once they settle. */
const SETTLE_MS = 50;

/** A file that cannot be applied; `message` starts with `FILE:LINE:`. */
export class InterventionsFileError extends UserError {}

function lineOf(lc: LineCounter, node: Node | null | undefined): number | null {
  const at = node?.range?.[0];
  return at === undefined ? null : lc.linePos(at).line;
}

/** Parses and checks the shape; the registry checks the neurons against the model. */
export function parseInterventionsFile(text: string, path: string): { inputs: AddInterventionInput[]; lines: number[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const fail = (line: number | null, why: string) => new InterventionsFileError(`${path}:${line ?? 1}: ${why}`);
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw fail(e.linePos?.[0]?.line ?? null, e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''));
  }
  let list: Node | null = doc.contents as Node | null;
  if (list === null) return { inputs: [], lines: [] };
  if (isMap(list)) {
    for (const pair of list.items) {
      const k = (pair.key as { value?: unknown } | null)?.value;
      if (k !== 'interventions') throw fail(lineOf(lc, pair.key as Node), `unknown key "${String(k)}" (expected "interventions")`);
    }
    list = (list.get('interventions', true) as Node | undefined) ?? null;
    if (list === null) return { inputs: [], lines: [] };
  }
  if (!isSeq(list)) throw fail(lineOf(lc, list), 'expected a list of interventions');
  const inputs: AddInterventionInput[] = [];
  const lines: number[] = [];
  for (const item of list.items as Node[]) {
    const line = lineOf(lc, item) ?? 1;
    if (!isMap(item)) throw fail(line, 'each intervention is a mapping like {neuron: "11.584", mode: clamp, value: 5}');
    const entry: Record<string, unknown> = {};
    for (const pair of item.items) {
      const key = String((pair.key as { value?: unknown } | null)?.value);
      const keyLine = lineOf(lc, pair.key as Node) ?? line;
      if (!FIELDS.has(key))
        throw fail(keyLine, `unknown field "${key}" (an interventions file takes neuron, neurons, mode, value; ttl_s and request_id are the API's)`);
      entry[key] = (pair.value as Node | null)?.toJSON() ?? null;
    }
    for (const [key, v] of [['neuron', entry.neuron], ...((Array.isArray(entry.neurons) ? entry.neurons : []) as unknown[]).map((n) => ['neurons', n])] as [string, unknown][]) {
      if (typeof v === 'number')
        throw fail(line, `${key}: ${v} is a number to YAML; quote the address ("${String(v)}") so e.g. "11.50" is not read as 11.5`);
    }
    inputs.push({
      neuron: entry.neuron as string | undefined,
      neurons: entry.neurons as string[] | undefined,
      mode: entry.mode as string,
      value: entry.value as number | undefined,
    });
    lines.push(line);
  }
  return { inputs, lines };
}

export interface InterventionsFileOptions {
  path: string;
  registry: InterventionRegistry;
  log: FastifyBaseLogger;
  pollMs?: number;
}

/** Applies the file now and on every change until close(). */
export class InterventionsFile {
  readonly path: string;
  private lastDigest: string | null = null;
  private watcher: FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private settle: NodeJS.Timeout | null = null;
  private running: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly opts: InterventionsFileOptions) {
    this.path = resolve(opts.path);
  }

  /** Applies the file once, then watches it. Resolves after the first application (good or not). */
  async start(): Promise<void> {
    await this.reload();
    try {
      // The directory, not the file: a ConfigMap update replaces the ..data symlink the file points through.
      this.watcher = watch(dirname(this.path), { persistent: false }, () => this.schedule());
      this.watcher.on('error', (err) => this.opts.log.warn({ err, file: this.path }, 'interventions file: watch failed; polling only'));
    } catch (err) {
      this.opts.log.warn({ err, file: this.path }, 'interventions file: cannot watch its directory; polling only');
    }
    this.poll = setInterval(() => this.schedule(), this.opts.pollMs ?? DEFAULT_POLL_MS);
    this.poll.unref();
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.settle) clearTimeout(this.settle);
    this.settle = setTimeout(() => {
      this.settle = null;
      this.running = this.running
        .then(() => this.reload())
        .catch((err) => this.opts.log.error({ err, file: this.path }, 'interventions file: reload failed'));
    }, SETTLE_MS);
    this.settle.unref();
  }

  /** Reads and applies the file if its content changed; resolves when done (never rejects). */
  async reload(): Promise<void> {
    if (this.closed) return;
    const { log, registry } = this.opts;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const digest = `missing:${(err as NodeJS.ErrnoException).code}`;
      if (digest !== this.lastDigest) {
        this.lastDigest = digest;
        log.error({ file: this.path, err }, `interventions file ${this.path}: cannot read it; the last good set stays`);
      }
      return;
    }
    const digest = createHash('sha256').update(text).digest('hex');
    if (digest === this.lastDigest) return;
    this.lastDigest = digest;
    try {
      const { inputs, lines } = parseInterventionsFile(text, this.path);
      let result;
      try {
        result = registry.replaceFromFile(this.path, inputs);
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
        const i = Number(/^\[(\d+)\]/.exec(e.param ?? '')?.[1] ?? 0);
        throw new InterventionsFileError(`${this.path}:${lines[i] ?? 1}: ${e.message}`);
      }
      for (const iv of result.removed) auditIntervention(log, 'delete', iv, 'file', null);
      for (const iv of result.added) auditIntervention(log, 'create', iv, 'file', null);
      log.info({ file: this.path, interventions: inputs.length, added: result.added.length, removed: result.removed.length }, `interventions file ${basename(this.path)} applied`);
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      log.error({ file: this.path, error: e.message }, `interventions file rejected, the last good set stays: ${e.message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.settle) clearTimeout(this.settle);
    await this.running;
  }
}
