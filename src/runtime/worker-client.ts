// Main-thread handle on the inference worker: request/reply over postMessage, with errors
// re-thrown on the caller's side (user errors stay user errors).

import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.ts';
import type {
  Envelope,
  InitMessage,
  InitResult,
  OpenMessage,
  Reply,
  Request,
  ScoreMessage,
  ScoreResult,
  StepMessage,
  StepResult,
} from './protocol.ts';

function workerUrl(): URL {
  // Running from TypeScript sources (tsx, vitest), the worker must register the tsx loader itself.
  const fromSource = import.meta.url.endsWith('.ts');
  return new URL(fromSource ? './worker-from-source.mjs' : './worker.js', import.meta.url);
}

export class InferenceWorker {
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;

  constructor() {
    this.worker = new Worker(fileURLToPath(workerUrl()));
    this.worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (r.ok) p.resolve(r.result);
      else {
        const err = r.error!.userError ? new UserError(r.error!.message) : new Error(r.error!.message);
        if (!r.error!.userError && r.error!.stack) err.stack = r.error!.stack;
        p.reject(err);
      }
    });
    const fail = (e: Error) => {
      this.dead = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => {
      if (code !== 0) fail(new Error(`inference worker exited with code ${code}`));
    });
  }

  private call<T>(body: Request, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      const env: Envelope = { id, body };
      this.worker.postMessage(env, transfer);
    });
  }

  init(m: Omit<InitMessage, 'type'>): Promise<InitResult> {
    return this.call({ type: 'init', ...m });
  }
  open(m: Omit<OpenMessage, 'type'>): Promise<void> {
    return this.call({ type: 'open', ...m });
  }
  step(m: Omit<StepMessage, 'type'>): Promise<StepResult> {
    return this.call({ type: 'step', ...m });
  }
  score(m: Omit<ScoreMessage, 'type'>): Promise<ScoreResult> {
    return this.call({ type: 'score', ...m });
  }
  close(seqId: number): Promise<void> {
    return this.call({ type: 'close', seqId });
  }
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }
}
