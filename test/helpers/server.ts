// Starts the real HTTP server on 127.0.0.1:0 for tests, with a real intervention registry, a
// recording telemetry and captured JSON log lines, and an `openai` SDK client pointed at it.
//
// createTestEngine() is the one place that chooses the engine: switch it to the real one with
//   return createFixtureEngine('gpt2-tiny-random-onnx');
// (the tests compare the server with the engine itself, so they hold for either; they pass on
// gpt2-tiny-random-onnx and aidreams260K-onnx as well as on the fake).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import type { GenerateRequest, GeneratedToken, GenerationSummary } from '../../src/runtime/types.ts';
import { InterventionRegistry, type StoredIntervention } from '../../src/monitor/interventions.ts';
import {
  buildServer,
  type BuildServerOptions,
  type ServerEngine,
  type ServerTelemetry,
} from '../../src/server/app.ts';
import type { RequestContext, RequestTelemetry } from '../../src/server/telemetry/index.ts';
import { createEngine } from '../../src/runtime/index.ts';
import { fixture } from './shared.ts';

/** The engine the server tests run on (options apply to the fake only). */
export async function createTestEngine(): Promise<ServerEngine> {
  // The real engine (worker thread, ONNX Runtime) on a shared fixture. The fake in
  // fake-engine.ts remains only for what no fixture has (a chat template).
  return createFixtureEngine('gpt2-tiny-random-onnx');
}

/** The real engine on a shared fixture, reporting three of its last-layer neurons as the catalogue. */
export async function createFixtureEngine(name: string): Promise<ServerEngine> {
  const dir = fixture(name);
  const layer = (JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as { last_layer: number })
    .last_layer;
  return createEngine({
    model: dir,
    watched: { entropy: [`${layer}.3`, `${layer}.7`], frequency: [`${layer}.11`] },
  });
}

/**
 * The same engine, but each token is held for `ms` before it is passed on, so a generation stays
 * in flight while a test acts; every generate() request is recorded (its abort signal included).
 */
export function slowed(engine: ServerEngine, ms: number): ServerEngine & { requests: GenerateRequest[] } {
  const requests: GenerateRequest[] = [];
  const slow = Object.create(engine) as ServerEngine & { requests: GenerateRequest[] };
  slow.requests = requests;
  slow.generate = async function* (req: GenerateRequest): AsyncGenerator<GeneratedToken, GenerationSummary> {
    requests.push(req);
    const inner = engine.generate(req);
    for (;;) {
      const step = await inner.next();
      if (step.done) return step.value;
      await new Promise((r) => setTimeout(r, ms));
      yield step.value;
    }
  };
  return slow;
}

/** TEST DOUBLE of Telemetry: records every call the server makes. */
export class RecordingTelemetry implements ServerTelemetry {
  readonly queue: [number, number][] = [];
  readonly rejected: [string, string][] = [];
  readonly started: RequestContext[] = [];
  readonly tokens = new Map<string, GeneratedToken[]>();
  readonly ended = new Map<string, { summary: GenerationSummary; outcome: string; error?: Error }>();
  readonly interventions: [string, StoredIntervention][] = [];

  setQueue(running: number, waiting: number): void {
    this.queue.push([running, waiting]);
  }
  requestRejected(endpoint: string, outcome: string): void {
    this.rejected.push([endpoint, outcome]);
  }
  requestStarted(ctx: RequestContext): RequestTelemetry {
    this.started.push(ctx);
    const tokens: GeneratedToken[] = [];
    this.tokens.set(ctx.requestId, tokens);
    return {
      traceId: `trace-${ctx.requestId}`,
      token: (t) => tokens.push(t),
      end: (summary, outcome, error) => this.ended.set(ctx.requestId, { summary, outcome, error }),
    };
  }
  interventionChanged(kind: 'created' | 'removed' | 'expired', iv: StoredIntervention): void {
    this.interventions.push([kind, iv]);
  }
}

export interface TestServer {
  url: string;
  app: FastifyInstance;
  engine: ServerEngine;
  registry: InterventionRegistry;
  telemetry: RecordingTelemetry;
  /** Parsed JSON log lines. */
  logs: Record<string, unknown>[];
  /** SDK client; retries off, so a 429 or 503 reaches the test. */
  client: OpenAI;
  close(): Promise<void>;
}

export interface TestServerOptions extends Partial<
  Omit<BuildServerOptions, 'engine' | 'registry' | 'telemetry'>
> {
  engine?: ServerEngine;
  /** Clock for the registry (TTL tests). */
  now?: () => number;
  /** The server's log level (default info). */
  logLevel?: string;
}

export async function startServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const engine = opts.engine ?? (await createTestEngine());
  const registry = new InterventionRegistry({
    lastLayer: engine.spec.nLayers - 1,
    dMlp: engine.spec.dMlp,
    ...(opts.now ? { now: opts.now } : {}),
  });
  const telemetry = new RecordingTelemetry();
  const logs: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) logs.push(JSON.parse(line));
      done();
    },
  });
  const app = buildServer({
    maxConcurrency: 2,
    maxQueue: 8,
    // Tests close with nothing worth waiting for: abort at once instead of after 10 s.
    shutdownGraceMs: 0,
    ...opts,
    engine,
    registry,
    telemetry,
    logger: { level: opts.logLevel ?? 'info', stream },
  });
  await app.modelReady;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (!address || typeof address === 'string') throw new Error('server did not bind a TCP port');
  const url = `http://127.0.0.1:${address.port}`;
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: opts.apiKey ?? 'unused', maxRetries: 0 });
  return { url, app, engine, registry, telemetry, logs, client, close: () => app.close() };
}

/** A parsed JSON response body; tests index into it freely and assert what they find. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type JsonBody = any;

/** POSTs JSON (or a raw string body) and returns status, headers and the parsed body. */
export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: JsonBody }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

/** Reads every SSE `data:` payload of a streamed response (the [DONE] marker kept as a string). */
export async function readSse(res: Response): Promise<unknown[]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length))
    .map((data) => (data === '[DONE]' ? data : JSON.parse(data)));
}

/** Runs the engine directly (the truth the server's answers are compared with). */
export async function generateDirect(engine: ServerEngine, req: GenerateRequest) {
  const tokens: GeneratedToken[] = [];
  const it = engine.generate(req);
  let step = await it.next();
  while (!step.done) {
    tokens.push(step.value);
    step = await it.next();
  }
  return { tokens, summary: step.value };
}
