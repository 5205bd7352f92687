// Main-thread side of one streamed sequence: the buffer the worker's results land in, the credit
// that bounds it (backpressure), and the interventions the sequence runs under.

import type { NeuronIntervention } from './types.ts';
import { compileInterventions } from '../monitor/interventions.ts';
import type { IvUpdate, StepResult } from './protocol.ts';

/**
 * Tokens the worker may run ahead of a generation's consumer. A consumer that stops pulling
 * holds at most this many results here; its row then pauses (its batch slot goes to others)
 * and resumes when pulled.
 */
export const CREDIT_WINDOW = 4;
/** Credit goes back in batches, so a token costs less than one control message. */
export const CREDIT_BATCH = 2;

export class SeqStream {
  private readonly buffer: StepResult[] = [];
  private waiter: (() => void) | null = null;
  private error: Error | null = null;

  /** Called with each result as it arrives (before anyone pulls it). */
  constructor(private readonly onArrive: () => void = () => undefined) {}

  push(r: StepResult): void {
    this.buffer.push(r);
    this.onArrive();
    this.notify();
  }

  fail(e: Error): void {
    this.error ??= e;
    this.notify();
  }

  private notify(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** The next result; null when `signal` aborts first. */
  async next(signal?: AbortSignal): Promise<StepResult | null> {
    for (;;) {
      const r = this.buffer.shift();
      if (r) return r;
      if (this.error) throw this.error;
      if (signal?.aborted) return null;
      const onAbort = () => this.notify();
      signal?.addEventListener('abort', onAbort, { once: true });
      await new Promise<void>((resolve) => (this.waiter = resolve));
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * Reads a sequence's interventions callback and turns changes into versioned updates for the
 * worker. Every result carries the version it was computed under, so a token's record names the
 * interventions that were actually applied to it.
 */
export class IvTracker {
  private version = 0;
  private key: string | null = null;
  private readonly ids = new Map<number, string[]>();

  constructor(
    private readonly read: (() => NeuronIntervention[]) | undefined,
    private readonly dMlp: number,
  ) {}

  /** A new update when the active set changed since the last poll (always on the first). */
  poll(): IvUpdate | null {
    const active = this.read?.() ?? [];
    const key = active.map((iv) => `${iv.id}:${iv.neuron}:${iv.mode}:${iv.value}`).join('|');
    if (key === this.key) return null;
    this.key = key;
    this.version++;
    this.ids.set(
      this.version,
      active.map((iv) => iv.id),
    );
    if (active.length === 0) return { version: this.version, scale: null, shift: null };
    const { scale, shift } = compileInterventions(active, this.dMlp);
    return { version: this.version, scale, shift };
  }

  /** Ids of the interventions of `version`; older versions are forgotten once a newer one is used. */
  idsFor(version: number): string[] {
    for (const v of this.ids.keys()) if (v < version) this.ids.delete(v);
    return this.ids.get(version) ?? [];
  }
}
