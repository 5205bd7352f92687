// The alert rules loaded by a REAL Prometheus server (Debian `prometheus`) that scrapes a Telemetry
// fed synthetic traffic: every rule evaluates without error against the sidecar's real exposition,
// the recording rules produce the values the traffic implies (derived by hand below), and normal
// traffic fires no alert. promtool's unit tests (alerts.test.ts) cover firing; this covers the join
// between the rules and what the sidecar actually exposes (names, label sets, histogram layout).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alertRuleGroups, RECORDED } from '../src/dashboards/alerts.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { seededRandom, syntheticSummary, syntheticToken } from './helpers/telemetry-traffic.ts';

const MODEL = 'gpt2';
const ENTROPY = ['11.584'];
const FREQUENCY = ['11.417'];
const TOKENS = 400;
const BIN = process.env.PROMETHEUS_BIN ?? 'prometheus';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

function prometheusAvailable(): boolean {
  const probe = spawnSync(BIN, ['--version'], { encoding: 'utf8' });
  if (!probe.error && probe.status === 0) return true;
  const message = `${BIN} not found; install it with .ci/install-system-deps.sh`;
  if (process.env.CI) throw new Error(message);
  console.warn(`${message}: skipping the real-Prometheus alert checks`);
  return false;
}

const available = prometheusAvailable();
let telemetry: Telemetry;
let metricsServer: Server;
let proc: ChildProcess | undefined;
let dir: string;
let url: string;
let stderr = '';

async function api(path: string): Promise<Obj> {
  return (await (await fetch(`${url}${path}`)).json()) as Obj;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Feeds `n` tokens: entropy 8u^2 and unigram KL 6u for uniform u (syntheticToken's distributions). */
function feed(n: number, seed: number): void {
  const rand = seededRandom(seed);
  const req = telemetry.requestStarted({
    requestId: `req-${seed}`,
    model: MODEL,
    endpoint: 'completions',
    params: { max_tokens: n, temperature: 1, top_p: 1, stream: true },
    promptTokens: 8,
    interventions: [],
  });
  for (let i = 0; i < n; i++)
    req.token(syntheticToken(i, rand, { entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY }));
  req.end(syntheticSummary(8, n), 'success');
}

beforeAll(async () => {
  if (!available) return;
  telemetry = new Telemetry({ model: MODEL, entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY });
  metricsServer = createServer((req, res) => {
    if (req.url !== '/metrics') return void res.writeHead(404).end();
    void telemetry.registry.metrics().then((body) => {
      res.writeHead(200, { 'Content-Type': telemetry.registry.contentType }).end(body);
    });
  });
  await new Promise<void>((r) => metricsServer.listen(0, '127.0.0.1', r));
  const target = `127.0.0.1:${(metricsServer.address() as AddressInfo).port}`;

  // The generator's rule groups (alerts.test.ts proves the committed alerts.yml holds exactly them)
  // with every group evaluated each second, or the recording group's 1m interval would make the test
  // wait a minute. JSON is YAML, so Prometheus reads the file as it reads alerts.yml.
  dir = mkdtempSync(join(tmpdir(), 'prom-alerts-'));
  const fast = alertRuleGroups();
  for (const g of fast.groups) g.interval = '1s';
  writeFileSync(join(dir, 'fast-alerts.json'), JSON.stringify(fast));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global: {scrape_interval: 1s, evaluation_interval: 1s}',
      'rule_files: [fast-alerts.json]',
      'scrape_configs:',
      `  - {job_name: confidence-sidecar, static_configs: [{targets: ["${target}"]}]}`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  proc = spawn(
    BIN,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  await until('prometheus ready', async () => ((await fetch(`${url}/-/ready`)).ok ? true : undefined));
  // Traffic between scrapes, so rate() over the window sees increases. The histograms appear with
  // their first observation, so rate() sees the second batch only (the first is their starting value).
  const tokens = async (expr: string) => {
    const r = await api(`/api/v1/query?${new URLSearchParams({ query: expr })}`);
    return r.data?.result?.[0]?.value?.[1] as string | undefined;
  };
  await until('first scrape', () => tokens(`llm_generated_tokens_total{model="${MODEL}"} == 0`));
  feed(TOKENS / 2, 1);
  await until('second scrape', () => tokens(`llm_generated_tokens_total{model="${MODEL}"} == ${TOKENS / 2}`));
  feed(TOKENS / 2, 2);
  await until('third scrape', () => tokens(`llm_generated_tokens_total{model="${MODEL}"} == ${TOKENS}`));
});

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    const gone = new Promise((r) => proc!.once('exit', r));
    proc.kill('SIGTERM');
    await gone;
  }
  await telemetry?.close();
  metricsServer?.closeAllConnections();
  await new Promise((r) => metricsServer?.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('alert rules in a real Prometheus', () => {
  it('loads every rule of the committed file, and every rule evaluates without error', async () => {
    const byName = (list: { name: string; rules: unknown[] }[]) =>
      Object.fromEntries(list.map((g) => [g.name, g.rules.length]));
    const expected = byName(alertRuleGroups().groups);
    const groups = await until('rules evaluated', async () => {
      const g = ((await api('/api/v1/rules')).data?.groups ?? []) as Obj[];
      const rules = g.flatMap((x) => x.rules as Obj[]);
      return rules.length > 0 && rules.every((r) => r.lastEvaluation && !r.lastEvaluation.startsWith('0001'))
        ? g
        : undefined;
    });
    expect(byName(groups as { name: string; rules: unknown[] }[])).toEqual(expected);
    for (const r of groups.flatMap((g) => g.rules as Obj[])) {
      expect(r.health, `${r.name}: ${r.lastError}`).toBe('ok');
    }
  });

  it('the recording rules give the p90 entropy and the mean unigram KL the traffic implies', async () => {
    const sample = (name: string) =>
      until(name, async () => {
        const r = await api(`/api/v1/query?${new URLSearchParams({ query: name })}`);
        const s = (r.data?.result ?? []) as Obj[];
        return s.length === 1 ? { labels: s[0].metric as Obj, value: Number(s[0].value[1]) } : undefined;
      });
    // Entropy 8u^2: P(H <= x) = sqrt(x/8), so p90 = 8 * 0.81 = 6.48 nats; over 200 tokens the sample
    // p90 has a standard error of about 0.15 nats, and the histogram interpolates inside the bucket
    // holding it, (6, 7].
    const p90 = await sample(RECORDED.entropyP90);
    expect(p90.labels.model).toBe(MODEL);
    expect(p90.value).toBeGreaterThan(6);
    expect(p90.value).toBeLessThanOrEqual(7);
    // Unigram KL 6u: mean 3 nats; 200 draws have a standard error of 6/sqrt(12*200) = 0.12.
    const kl = await sample(RECORDED.unigramKlMean);
    expect(kl.labels.model).toBe(MODEL);
    expect(Math.abs(kl.value - 3)).toBeLessThan(0.35);
    console.log(
      `recorded: entropy p90 ${p90.value.toFixed(3)} nats (6.48 expected), unigram KL mean ${kl.value.toFixed(3)} nats (3 expected)`,
    );
  });

  it('normal traffic fires no alert', async () => {
    const alerts = (await api('/api/v1/alerts')).data?.alerts as Obj[];
    expect(alerts).toEqual([]);
  });
});
