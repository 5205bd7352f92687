// Starts the proxy (src/proxy/app.ts) on 127.0.0.1:0 in front of a given upstream, collecting
// every shadow record by request and choice, and a raw HTTP client that returns the exact bytes.

import { request } from 'undici';
import type { FastifyInstance } from 'fastify';
import { buildProxyServer, type ProxyServerOptions } from '../../src/proxy/app.ts';
import { shadowTelemetry } from '../../src/proxy/telemetry.ts';
import type { TokenRecord } from '../../src/runtime/types.ts';
import type { ServerEngine } from '../../src/server/app.ts';
import type { UpstreamToken } from '../../src/proxy/openai-stream.ts';

export interface Shadowed {
  record: TokenRecord;
  upstream?: UpstreamToken;
}

export interface TestProxy {
  url: string;
  app: FastifyInstance;
  /** requestId -> choice index -> records in order. */
  records: Map<string, Map<number, Shadowed[]>>;
  /** Request ids whose scoring has ended. */
  finished: Set<string>;
  close(): Promise<void>;
}

export async function startProxy(
  upstream: string,
  engine: ServerEngine | Promise<ServerEngine> | null,
  opts: Partial<ProxyServerOptions> = {},
): Promise<TestProxy> {
  const records = new Map<string, Map<number, Shadowed[]>>();
  const finished = new Set<string>();
  const app = buildProxyServer({
    upstream,
    engine: engine ? Promise.resolve(engine) : null,
    telemetry: (e) => shadowTelemetry(e, undefined, { wsHeartbeatMs: 0 }),
    shutdownGraceMs: 0,
    onRecord: (id, choice, record, up) => {
      const byChoice = records.get(id) ?? new Map<number, Shadowed[]>();
      records.set(id, byChoice);
      const list = byChoice.get(choice) ?? [];
      byChoice.set(choice, list);
      list.push({ record, ...(up ? { upstream: up } : {}) });
    },
    onFinished: (id) => finished.add(id),
    ...opts,
  });
  await app.scoringReady;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const a = app.server.address();
  if (!a || typeof a === 'string') throw new Error('no TCP port');
  return { url: `http://127.0.0.1:${a.port}`, app, records, finished, close: () => app.close() };
}

/** A request whose response body is read whole as bytes. */
export async function rawRequest(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
  method: 'POST' | 'GET' = 'POST',
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; bytes: Buffer }> {
  const res = await request(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(method === 'POST' ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, bytes };
}

/** Waits until `cond` holds (scoring runs after the client's response has ended). */
export async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
