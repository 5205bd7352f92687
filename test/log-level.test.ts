// --log-level, and probes and scrapes kept out of the info log: a kubelet probing every few
// seconds and Prometheus scraping every 15 s would otherwise be most of the log lines. Checked on
// the real server's JSON log lines; the level mapping by hand.

import { afterEach, describe, expect, it } from 'vitest';
import { probeLogLevel } from '../src/server/routes/health.ts';
import { startServer, type TestServer } from './helpers/server.ts';

describe('probeLogLevel', () => {
  it('keeps probes at debug and trace, raises them to warn at info, never below the server level', () => {
    expect(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map(probeLogLevel)).toEqual([
      'trace',
      'debug',
      'warn',
      'warn',
      'error',
      'fatal',
      'silent',
    ]);
  });
});

describe('request logs by level', () => {
  let s: TestServer | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  async function urlsLogged(logLevel: string): Promise<string[]> {
    s = await startServer({ logLevel });
    // /metrics answers 503 here (the recording telemetry has no registry): logged all the same.
    for (const path of ['/healthz', '/readyz', '/v1/models'])
      expect((await fetch(`${s.url}${path}`)).status).toBe(200);
    expect((await fetch(`${s.url}/metrics`)).status).toBe(503);
    const urls = s.logs
      .map((l) => (l.req as { url?: string } | undefined)?.url)
      .filter((u): u is string => !!u);
    return [...new Set(urls)].sort();
  }

  it('at info: API requests are logged, probes and scrapes are not', async () => {
    expect(await urlsLogged('info')).toEqual(['/v1/models']);
  });

  it('at debug: probes and scrapes are logged too', async () => {
    expect(await urlsLogged('debug')).toEqual(['/healthz', '/metrics', '/readyz', '/v1/models']);
  });

  it('at warn: a plain API request is not logged either', async () => {
    expect(await urlsLogged('warn')).toEqual([]);
  });
});
