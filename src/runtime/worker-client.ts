// Main-thread handle on the inference worker: request/reply over postMessage, with errors
// re-thrown on the caller's side (user errors stay user errors), fire-and-forget control
// messages, and the worker's streamed events (one `rows` event per batch step).

import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.ts';
import type {
  ControlMessage,
  Envelope,
  InitMessage,
  InitResult,
  Reply,
  Request,
  ScoreMessage,
  ScoreResult,
  StartMessage,
  WorkerEvent,
} from './protocol.ts';

function workerUrl(): URL {
  // Running from TypeScript sources (tsx, vitest), the worker must register the tsx loader itself.
  const fromSource = import.meta.url.endsWith('.ts');
  return new URL(fromSource ? './worker-from-source.mjs' : './worker.js', import.meta.url);
}

/** How long close() waits for the step in flight (a long prefill) before it terminates the thread. */
const SHUTDOWN_WAIT_MS = 30_000;

export class InferenceWorker {
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private dead: Error | null = null;
  /** Receives every streamed event; set by the engine. */
  onEvent: (e: WorkerEvent) => void = () => undefined;
  /** Called once if the worker dies. */
  onDeath: (e: Error) => void = () => undefined;

  constructor() {
    this.worker = new Worker(fileURLToPath(workerUrl()));
    this.worker.on('message', (r: Reply | WorkerEvent) => {
      if ('event' in r) {
        this.onEvent(r);
        return;
      }
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
      if (this.dead) return;
      this.dead = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
      this.onDeath(e);
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
  get failure(): Error | null {
    return this.dead;
  }
  /** Opens a sequence; rejects (before any token) when the worker refuses it. */
  start(m: Omit<StartMessage, 'type'>): Promise<void> {
    return this.call({ type: 'start', ...m });
  }
  /** Fire-and-forget: the sequence's stream reports what follows. */
  control(m: ControlMessage): void {
    if (this.dead) return;
    const env: Envelope = { id: 0, body: m };
    this.worker.postMessage(env);
  }
  score(m: Omit<ScoreMessage, 'type'>): Promise<ScoreResult> {
    return this.call({ type: 'score', ...m });
  }
  /** Stops the worker's loop and releases its session, then ends the thread. */
  async terminate(): Promise<void> {
    if (!this.dead) {
      const gave = await Promise.race([
        this.call({ type: 'shutdown' }).then(
          () => true,
          () => false,
        ),
        new Promise<boolean>((r) => setTimeout(() => r(false), SHUTDOWN_WAIT_MS).unref()),
      ]);
      if (!gave) process.emitWarning('the inference worker did not stop in time; terminating it');
    }
    await this.worker.terminate();
  }
}
