// Test helpers around the real Prometheus tools (Debian package `prometheus`, installed by
// .ci/install-system-deps.sh): `promtool check metrics` on an exposition, and a throwaway Prometheus
// server on 127.0.0.1 that scrapes given targets, with its HTTP query API.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const INSTALL_HINT =
  'install it with .ci/install-system-deps.sh (apt-get install --no-install-recommends prometheus)';

function requireBinary(name: string, override: string | undefined): string {
  const bin = override ?? name;
  const probe = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(`${bin} is required by this test and was not found or does not run; ${INSTALL_HINT}`);
  }
  return bin;
}

export function promtoolBinary(): string {
  return requireBinary('promtool', process.env.PROMTOOL_BIN);
}

/** Runs `promtool check metrics` (the Prometheus linter) on an exposition text. */
export function promtoolCheckMetrics(exposition: string): { ok: boolean; output: string } {
  const r = spawnSync(promtoolBinary(), ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface PromResponse<T = unknown> {
  status: 'success' | 'error';
  data?: { resultType: string; result: T };
  errorType?: string;
  error?: string;
}

export interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PrometheusServer {
  readonly url: string;
  /** Instant query (GET /api/v1/query); returns the parsed body whatever its status. */
  query(expr: string): Promise<PromResponse>;
  /** Range query (GET /api/v1/query_range) over the last `seconds` at `stepS` resolution. */
  queryRange(expr: string, seconds: number, stepS?: number): Promise<PromResponse>;
  /** Label values (GET /api/v1/label/<name>/values), optionally restricted by a series selector. */
  labelValues(label: string, match?: string): Promise<string[]>;
  /** Resolves once `expr` returns a non-empty vector; fails with the last answer after `timeoutMs`. */
  waitFor(expr: string, timeoutMs?: number): Promise<VectorSample[]>;
  stop(): Promise<void>;
}

export interface PrometheusOptions {
  /** host:port targets scraped at /metrics. */
  targets: string[];
  scrapeIntervalS?: number;
}

/** Starts a Prometheus server with a temporary config and storage; call stop() when done. */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusServer> {
  const bin = requireBinary('prometheus', process.env.PROMETHEUS_BIN);
  const dir = mkdtempSync(join(tmpdir(), 'prom-test-'));
  const interval = `${opts.scrapeIntervalS ?? 1}s`;
  const config = [
    'global:',
    `  scrape_interval: ${interval}`,
    `  evaluation_interval: ${interval}`,
    'scrape_configs:',
    '  - job_name: confidence-sidecar',
    '    metrics_path: /metrics',
    '    static_configs:',
    `      - targets: [${opts.targets.map((t) => JSON.stringify(t)).join(', ')}]`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(
    bin,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  let exited = false;
  proc.once('exit', () => {
    exited = true;
  });

  const stop = async (): Promise<void> => {
    if (!exited) {
      const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`prometheus exited during startup:\n${stderr}`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not become ready at ${url}:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const query = async (expr: string): Promise<PromResponse> => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    return (await res.json()) as PromResponse;
  };

  const queryRange = async (expr: string, seconds: number, stepS = 1): Promise<PromResponse> => {
    const end = Date.now() / 1000;
    const params = new URLSearchParams({
      query: expr,
      start: String(end - seconds),
      end: String(end),
      step: String(stepS),
    });
    const res = await fetch(`${url}/api/v1/query_range?${params}`);
    return (await res.json()) as PromResponse;
  };

  const labelValues = async (label: string, match?: string): Promise<string[]> => {
    const params = match ? `?${new URLSearchParams({ 'match[]': match })}` : '';
    const res = await fetch(`${url}/api/v1/label/${label}/values${params}`);
    // Unlike queries, this endpoint's `data` is the list itself.
    const body = (await res.json()) as { status: string; data?: string[] };
    if (body.status !== 'success' || !body.data)
      throw new Error(`label values of ${label}: ${JSON.stringify(body)}`);
    return body.data;
  };

  const waitFor = async (expr: string, timeoutMs = 30_000): Promise<VectorSample[]> => {
    const until = Date.now() + timeoutMs;
    let last: PromResponse | null = null;
    for (;;) {
      last = await query(expr);
      const result = last.data?.result;
      if (last.status === 'success' && Array.isArray(result) && result.length > 0)
        return result as VectorSample[];
      if (Date.now() > until)
        throw new Error(`no data for ${expr} after ${timeoutMs} ms; last answer ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  return { url, query, queryRange, labelValues, waitFor, stop };
}
