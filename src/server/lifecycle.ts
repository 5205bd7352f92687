// The life of a listening process, shared by `serve` and `proxy`: listen, wait for SIGINT/SIGTERM
// (or an abort signal, or a failure it must not outlive), then close the app and clean up.

import type { FastifyInstance } from 'fastify';

export interface LifecycleOptions {
  host: string;
  port: number;
  signal?: AbortSignal;
  onListening?: (url: string) => void;
  /** Rejects when the process cannot go on (the model failed to load): it then stops and throws. */
  failure?: Promise<void>;
  /** For the log line when it cannot run ("the server", "the proxy"). */
  what: string;
}

/** Resolves with what asked the process to stop; rejects with `failure`'s error. */
function stopRequest(signal?: AbortSignal, failure?: Promise<void>): { stopped: Promise<string>; dispose: () => void } {
  const offs: (() => void)[] = [];
  const stopped = new Promise<string>((resolve, reject) => {
    for (const name of ['SIGINT', 'SIGTERM'] as const) {
      const on = () => resolve(name);
      process.once(name, on);
      offs.push(() => process.off(name, on));
    }
    if (signal) {
      const on = () => resolve('abort');
      if (signal.aborted) on();
      signal.addEventListener('abort', on, { once: true });
      offs.push(() => signal.removeEventListener('abort', on));
    }
    failure?.catch(reject);
  });
  return { stopped, dispose: () => offs.forEach((off) => off()) };
}

/** Listens until asked to stop, then closes `app` and runs `cleanup`; rethrows what stopped it early. */
export async function runUntilStopped(
  app: FastifyInstance,
  opts: LifecycleOptions,
  cleanup: () => Promise<void>,
): Promise<void> {
  const stop = stopRequest(opts.signal, opts.failure);
  let failure: unknown = null;
  try {
    const url = await app.listen({ host: opts.host, port: opts.port });
    opts.onListening?.(url);
    const reason = await stop.stopped;
    app.log.info({ reason }, 'shutting down');
  } catch (e) {
    failure = e;
    app.log.error({ err: e }, `${opts.what} cannot run`);
  } finally {
    // From here a second Ctrl-C gets Node's default: exit now.
    stop.dispose();
    await app.close();
    await cleanup();
  }
  if (failure) throw failure;
}
