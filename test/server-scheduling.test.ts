// Admission control and cancellation: the scheduler on its own (FIFO, bounded queue, leaving the
// queue on abort), then through the server: 429 when the queue is full, client disconnects that
// reach the engine as an aborted signal, and shutdown that ends generations in flight.
import { afterEach, describe, expect, it, vi } from 'vitest';
import OpenAI from 'openai';
import { QueueFullError, Scheduler } from '../src/server/scheduler.ts';
import { createTestEngine, readSse, slowed, startServer, type TestServer } from './helpers/server.ts';

describe('Scheduler', () => {
  it('runs up to maxConcurrency, queues FIFO up to maxQueue, refuses beyond', async () => {
    const counts: [number, number][] = [];
    const s = new Scheduler({ maxConcurrency: 2, maxQueue: 2, onChange: (r, w) => counts.push([r, w]) });
    const a = await s.acquire();
    const b = await s.acquire();
    const order: string[] = [];
    const c = s.acquire().then((release) => (order.push('c'), release));
    const d = s.acquire().then((release) => (order.push('d'), release));
    expect([s.running, s.waiting]).toEqual([2, 2]);
    await expect(s.acquire()).rejects.toBeInstanceOf(QueueFullError);
    b();
    b(); // a second release of the same slot changes nothing
    const releaseC = await c;
    expect(order).toEqual(['c']);
    expect([s.running, s.waiting]).toEqual([2, 1]);
    a();
    const releaseD = await d;
    expect(order).toEqual(['c', 'd']);
    releaseC();
    releaseD();
    expect([s.running, s.waiting]).toEqual([0, 0]);
    expect(counts.at(-1)).toEqual([0, 0]);
    expect(counts).toContainEqual([2, 2]);
  });

  it('a waiter whose signal aborts leaves the queue', async () => {
    const s = new Scheduler({ maxConcurrency: 1, maxQueue: 1 });
    const first = await s.acquire();
    const gone = new AbortController();
    const waiting = s.acquire(gone.signal);
    expect(s.waiting).toBe(1);
    gone.abort('client gone');
    await expect(waiting).rejects.toBe('client gone');
    expect(s.waiting).toBe(0);
    // The freed place in the queue is usable, and the slot goes to the new waiter.
    const next = s.acquire();
    first();
    const release = await next;
    expect(s.running).toBe(1);
    release();
    expect(s.running).toBe(0);
  });

  it('refuses bad limits', () => {
    expect(() => new Scheduler({ maxConcurrency: 0, maxQueue: 0 })).toThrow(RangeError);
    expect(() => new Scheduler({ maxConcurrency: 1, maxQueue: -1 })).toThrow(RangeError);
  });
});

describe('server admission and cancellation', () => {
  let s: TestServer | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  async function slowServer(opts: { maxConcurrency: number; maxQueue: number; shutdownGraceMs?: number }) {
    const engine = slowed(await createTestEngine(), 40);
    s = await startServer({ engine, ...opts });
    // A completion long enough to stay in flight while the test acts, within the context.
    const long = engine.spec.maxPositions - 32;
    return { s, engine, long };
  }

  async function firstChunk(stream: AsyncIterable<unknown>) {
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    return it;
  }

  it('answers 429 rate_limit_exceeded with Retry-After when the queue is full, and serves again after', async () => {
    const { s, engine, long } = await slowServer({ maxConcurrency: 1, maxQueue: 0 });
    const model = engine.modelId;
    const abort = new AbortController();
    const busy = await s.client.completions.create(
      { model, prompt: 'The moon', max_tokens: long, stream: true },
      { signal: abort.signal },
    );
    const it = await firstChunk(busy);
    expect(s.telemetry.queue.at(-1)).toEqual([1, 0]);

    const refused = await s.client.completions.create({ model, prompt: 'hi', max_tokens: 1 }).catch((e) => e);
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.error).toMatchObject({
      type: 'rate_limit_error',
      code: 'rate_limit_exceeded',
      param: null,
    });
    expect(s.telemetry.rejected).toContainEqual(['completions', 'rejected_queue_full']);

    abort.abort();
    await it.return?.();
    // The slot comes back once the aborted generation has ended.
    await vi.waitFor(() => expect(s.telemetry.queue.at(-1)).toEqual([0, 0]));
    const ok = await s.client.completions.create({ model, prompt: 'hi', max_tokens: 1 });
    expect(ok.choices).toHaveLength(1);
  });

  it('queues up to maxQueue and runs the waiting request when the slot frees', async () => {
    const { s, engine } = await slowServer({ maxConcurrency: 1, maxQueue: 1 });
    const model = engine.modelId;
    const first = s.client.completions.create({ model, prompt: 'The moon', max_tokens: 5 });
    await vi.waitFor(() => expect(engine.requests).toHaveLength(1));
    const second = s.client.completions.create({ model, prompt: 'The sea', max_tokens: 2 });
    await vi.waitFor(() => expect(s.telemetry.queue).toContainEqual([1, 1]));
    // Only the first has reached the engine while the second waits.
    expect(engine.requests).toHaveLength(1);
    const [a, b] = await Promise.all([first, second]);
    expect(a.usage!.completion_tokens).toBe(5);
    expect(b.usage!.completion_tokens).toBe(2);
    expect(engine.requests).toHaveLength(2);
  });

  it('a client that disconnects mid-stream aborts the generation (the engine sees the signal)', async () => {
    const { s, engine, long } = await slowServer({ maxConcurrency: 1, maxQueue: 0 });
    const abort = new AbortController();
    const stream = await s.client.chat.completions.create(
      { model: engine.modelId, messages: [{ role: 'user', content: 'hi' }], max_tokens: long, stream: true },
      { headers: { 'x-request-id': 'gone-1' }, signal: abort.signal },
    );
    await firstChunk(stream);
    const seen = engine.requests[0]!;
    expect(seen.signal!.aborted).toBe(false);
    abort.abort();
    await vi.waitFor(() => expect(seen.signal!.aborted).toBe(true));
    await vi.waitFor(() => expect(s.telemetry.ended.get('gone-1')?.outcome).toBe('aborted'));
    const ended = s.telemetry.ended.get('gone-1')!;
    expect(ended.summary.finishReason).toBe('abort');
    expect(ended.summary.completionTokens).toBeLessThan(long);
    // The slot was released: with maxQueue 0 a new request would otherwise be refused.
    await vi.waitFor(() => expect(s.telemetry.queue.at(-1)).toEqual([0, 0]));
    const ok = await s.client.completions.create({ model: engine.modelId, prompt: 'hi', max_tokens: 1 });
    expect(ok.choices).toHaveLength(1);
  });

  it('a client that disconnects from a non-streamed request aborts it too', async () => {
    const { s, engine, long } = await slowServer({ maxConcurrency: 1, maxQueue: 0 });
    const abort = new AbortController();
    const pending = fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'gone-2' },
      body: JSON.stringify({ model: engine.modelId, prompt: 'The moon', max_tokens: long }),
      signal: abort.signal,
    }).catch((e) => e);
    await vi.waitFor(() => expect(s.telemetry.tokens.get('gone-2')?.length ?? 0).toBeGreaterThan(0));
    abort.abort();
    expect(await pending).toBeInstanceOf(Error);
    await vi.waitFor(() => expect(engine.requests[0]!.signal!.aborted).toBe(true));
    await vi.waitFor(() => expect(s.telemetry.ended.get('gone-2')?.outcome).toBe('aborted'));
  });

  it('refuses a second generation with the X-Request-Id of one still running', async () => {
    const { s, engine, long } = await slowServer({ maxConcurrency: 2, maxQueue: 0 });
    const abort = new AbortController();
    const busy = await s.client.completions.create(
      { model: engine.modelId, prompt: 'The moon', max_tokens: long, stream: true },
      { headers: { 'x-request-id': 'same-id' }, signal: abort.signal },
    );
    const it = await firstChunk(busy);
    const dup = await s.client.completions
      .create(
        { model: engine.modelId, prompt: 'hi', max_tokens: 1 },
        { headers: { 'x-request-id': 'same-id' } },
      )
      .catch((e) => e);
    expect(dup.status).toBe(400);
    expect(dup.error.code).toBe('request_id_in_use');
    abort.abort();
    await it.return?.();
  });

  it('on close, generations in flight get the grace period, then end with server_shutting_down', async () => {
    const { s, engine, long } = await slowServer({ maxConcurrency: 1, maxQueue: 0, shutdownGraceMs: 100 });
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'shutdown-1' },
      body: JSON.stringify({ model: engine.modelId, prompt: 'The moon', max_tokens: long, stream: true }),
    });
    expect(res.status).toBe(200);
    const events = readSse(res);
    await vi.waitFor(() => expect(s.telemetry.tokens.get('shutdown-1')?.length ?? 0).toBeGreaterThan(0));
    await s.close();
    const all = await events;
    const last = all.at(-1) as { error?: { code: string; type: string } };
    expect(last.error).toMatchObject({ code: 'server_shutting_down', type: 'server_error' });
    expect(s.telemetry.ended.get('shutdown-1')?.outcome).toBe('aborted');
  });
});
