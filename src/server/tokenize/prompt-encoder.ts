// Prompt tokenization off the event loop. A 0.9 MB prompt takes seconds to tokenize; done on the
// main thread it stalls every other request, /healthz included (three of them stalled it for
// 12.5 s, long enough to fail a liveness probe). The server encodes prompts in worker threads
// that load the model folder's own tokenizer, so the main thread only passes strings and ids.
// Short prompts (the usual case) are encoded inline: their cost is bounded by INLINE_MAX_CHARS
// and a thread hop would only add latency. An engine whose tokenizer has no folder (a test
// double) is always encoded inline. The pool starts with the first long prompt.

import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { PromptSegment } from '../../model/tokenizer.ts';
import type { ServerEngine } from '../routes/context.ts';
import type { TokenizeReply, TokenizeRequest, TokenizeWorkerData } from './protocol.ts';

export interface EncodeOpts {
  addSpecialTokens: boolean;
}

export interface PromptEncoder {
  encode(text: string, opts: EncodeOpts): Promise<number[]>;
  /** Chat prompts: only the template's markup may produce special tokens. */
  encodeSegments(segments: PromptSegment[], opts: EncodeOpts): Promise<number[]>;
  close(): Promise<void>;
}

/** Prompts up to this many characters are tokenized on the main thread (well under 5 ms). */
export const INLINE_MAX_CHARS = 8 * 1024;

function workerUrl(): URL {
  const fromSource = import.meta.url.endsWith('.ts');
  return new URL(fromSource ? './worker-from-source.mjs' : './worker.js', import.meta.url);
}

type Pending = { resolve: (ids: number[]) => void; reject: (e: Error) => void };

/** One worker thread and the requests it has been given. */
class TokenizeWorker {
  readonly pending = new Map<number, Pending>();
  private readonly worker: Worker;
  dead = false;

  constructor(dir: string) {
    const data: TokenizeWorkerData = { dir };
    this.worker = new Worker(fileURLToPath(workerUrl()), { workerData: data });
    // An idle pool must not keep the process alive.
    this.worker.unref();
    this.worker.on('message', (r: TokenizeReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if ('error' in r) p.reject(new Error(r.error));
      else p.resolve(Array.from(r.ids));
    });
    const fail = (e: Error) => {
      this.dead = true;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`tokenizer worker exited with code ${code}`)));
  }

  send(req: TokenizeRequest): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject });
      this.worker.postMessage(req);
    });
  }

  async close(): Promise<void> {
    this.dead = true;
    await this.worker.terminate();
  }
}

class WorkerPool implements PromptEncoder {
  private readonly workers: TokenizeWorker[] = [];
  private nextId = 1;

  constructor(
    private readonly dir: string,
    private readonly size: number,
  ) {
    for (let i = 0; i < size; i++) this.workers.push(new TokenizeWorker(dir));
  }

  /** The least busy live worker; a dead one is replaced. */
  private pick(): TokenizeWorker {
    for (let i = 0; i < this.workers.length; i++) {
      if (this.workers[i]!.dead) this.workers[i] = new TokenizeWorker(this.dir);
    }
    return this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  }

  encode(text: string, opts: EncodeOpts): Promise<number[]> {
    return this.pick().send({ id: this.nextId++, kind: 'text', text, ...opts });
  }

  encodeSegments(segments: PromptSegment[], opts: EncodeOpts): Promise<number[]> {
    return this.pick().send({ id: this.nextId++, kind: 'segments', segments, ...opts });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

/** Inline encoding for engines without a tokenizer folder. */
function inlineEncoder(engine: ServerEngine): PromptEncoder {
  const tok = engine.tokenizer;
  return {
    encode: async (text, opts) => engine.encode(text, opts),
    encodeSegments: async (segments, opts) =>
      tok.encodeSegments
        ? tok.encodeSegments(segments, opts)
        : engine.encode(segments.map((s) => s.text).join(''), opts),
    close: async () => undefined,
  };
}

export function createPromptEncoder(engine: ServerEngine, workers = 1): PromptEncoder {
  const inline = inlineEncoder(engine);
  const dir = engine.tokenizer.dir;
  if (typeof dir !== 'string' || workers < 1) return inline;
  let pool: WorkerPool | null = null;
  const offload = () => (pool ??= new WorkerPool(dir, workers));
  return {
    encode: (text, opts) => (text.length <= INLINE_MAX_CHARS ? inline : offload()).encode(text, opts),
    encodeSegments: (segments, opts) => {
      const chars = segments.reduce((n, s) => n + s.text.length, 0);
      return (chars <= INLINE_MAX_CHARS ? inline : offload()).encodeSegments(segments, opts);
    },
    close: async () => pool?.close(),
  };
}
