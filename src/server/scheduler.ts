// Admission control for generations: at most `maxConcurrency` run at once (each holds the CPU
// for its whole length, so more would only slow all of them down), up to `maxQueue` wait in
// arrival order, and anything beyond is refused at once so the client can retry elsewhere
// instead of timing out in a queue nobody can see.

export class QueueFullError extends Error {
  constructor(
    readonly running: number,
    readonly waiting: number,
  ) {
    super(`server busy: ${running} generation(s) running and ${waiting} waiting`);
    this.name = 'QueueFullError';
  }
}

/** Gives a slot back. Calling it more than once is harmless. */
export type Release = () => void;

export interface SchedulerOptions {
  maxConcurrency: number;
  maxQueue: number;
  /** Called after every change of the counts (for the running/waiting gauges). */
  onChange?: (running: number, waiting: number) => void;
}

interface Waiter {
  grant: (release: Release) => void;
}

export class Scheduler {
  private active = 0;
  private readonly queue: Waiter[] = [];

  constructor(private readonly opts: SchedulerOptions) {
    if (!Number.isInteger(opts.maxConcurrency) || opts.maxConcurrency < 1) {
      throw new RangeError(`maxConcurrency must be an integer >= 1, got ${opts.maxConcurrency}`);
    }
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) {
      throw new RangeError(`maxQueue must be an integer >= 0, got ${opts.maxQueue}`);
    }
  }

  get running(): number {
    return this.active;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Resolves with a release function once a slot is free. Rejects with QueueFullError when the
   * queue is full, and with the signal's reason when it aborts while waiting (the waiter leaves
   * the queue, so a client that hung up does not hold a place).
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.active < this.opts.maxConcurrency) {
      this.active++;
      this.changed();
      return Promise.resolve(this.releaser());
    }
    if (this.queue.length >= this.opts.maxQueue) {
      return Promise.reject(new QueueFullError(this.active, this.queue.length));
    }
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = () => {
        const at = this.queue.indexOf(waiter);
        if (at >= 0) this.queue.splice(at, 1);
        this.changed();
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
      this.changed();
    });
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      // The slot passes straight to the next waiter, so `active` stays the same.
      if (next) next.grant(this.releaser());
      else this.active--;
      this.changed();
    };
  }

  private changed(): void {
    this.opts.onChange?.(this.active, this.queue.length);
  }
}
