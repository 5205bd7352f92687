// The dashboards against a REAL Prometheus server (Debian `prometheus`): a Telemetry fed realistic
// traffic is served on /metrics, Prometheus scrapes it, and every panel query is run through the
// query API exactly as Grafana would send it (after substituting Grafana's variables). Then the
// panels' results are drawn in headless Chromium to check they render.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { generateDashboards, panelsOf } from '../src/dashboards/index.ts';
import { Telemetry, type Clock, type Endpoint } from '../src/server/telemetry/index.ts';
import { launchChromium } from './helpers/chromium.ts';
import { startPrometheus, type PrometheusServer, type PromResponse, type VectorSample } from './helpers/prometheus.ts';
import { seededRandom, syntheticSummary, syntheticToken } from './helpers/telemetry-traffic.ts';

const MODEL = 'gpt2';
const ENTROPY = ['11.584', '11.2378'];
const FREQUENCY = ['11.417'];
const TOKENS_PER_REQUEST = 20;
const REQUESTS_PER_ROUND = 6;

/** Grafana's variables, as Grafana would expand them for this test's time range. */
function expand(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__range', '5m')
    .replaceAll('$model', MODEL)
    .replaceAll('$neuron', '.*');
}

/** A clock the traffic advances by realistic gaps, so latency histograms get realistic values. */
class TrafficClock implements Clock {
  ms = 0;
  monotonicMs = () => this.ms;
  epochMs = () => Date.now();
}

let telemetry: Telemetry;
let metricsServer: Server;
let subscriber: WebSocket;
let prom: PrometheusServer;
const clock = new TrafficClock();
const rand = seededRandom(2024);
let requestSeq = 0;

/** One round of traffic: completions and chats, an intervention, an abort, an error, refusals. */
function feedRound(): void {
  telemetry.setQueue(1, 2);
  const iv = {
    id: `iv-${requestSeq}`,
    neuron: ENTROPY[0],
    mode: 'clamp' as const,
    value: 8,
    createdAt: new Date().toISOString(),
    expiresAt: null,
    requestId: null,
  };
  telemetry.interventionChanged('created', iv);
  for (let r = 0; r < REQUESTS_PER_ROUND; r++) {
    const endpoint: Endpoint = r % 2 === 0 ? 'completions' : 'chat_completions';
    const intervened = r === 0;
    const req = telemetry.requestStarted({
      requestId: `req-${requestSeq++}`,
      model: MODEL,
      endpoint,
      params: { max_tokens: TOKENS_PER_REQUEST, temperature: 0.7, top_p: 1, stream: r % 3 === 0 },
      promptTokens: 12 + r,
      interventions: intervened ? [iv.id] : [],
    });
    clock.ms += 40 + 400 * rand();
    for (let i = 0; i < TOKENS_PER_REQUEST; i++) {
      if (i > 0) clock.ms += 15 + 60 * rand();
      req.token(
        syntheticToken(i, rand, {
          entropyNeurons: ENTROPY,
          frequencyNeurons: FREQUENCY,
          interventions: intervened ? [iv.id] : [],
        }),
      );
    }
    const outcome = r === 4 ? 'aborted' : r === 5 ? 'error' : 'success';
    req.end(
      syntheticSummary(12 + r, TOKENS_PER_REQUEST),
      outcome,
      outcome === 'error' ? new Error('synthetic failure') : undefined,
    );
  }
  // The engine's batch steps, as the batched worker reports them (batch sizes 1..8).
  for (let step = 0; step < 40; step++) {
    const batch = 1 + Math.floor(8 * rand());
    telemetry.engineStep({
      batch,
      kvBytes: batch * 64 * 4096,
      kvReservedBytes: batch * 128 * 4096,
      running: batch,
      waiting: Math.floor(2 * rand()),
      runS: 0.01 + 0.02 * rand(),
    });
  }
  telemetry.interventionChanged('removed', iv);
  telemetry.interventionChanged('created', { ...iv, id: `${iv.id}-kept` });
  telemetry.requestRejected('completions', 'rejected_queue_full');
  telemetry.requestRejected('chat_completions', 'invalid');
}

beforeAll(async () => {
  telemetry = new Telemetry({
    model: MODEL,
    entropyNeurons: ENTROPY,
    frequencyNeurons: FREQUENCY,
    clock,
    replica: { source: 'checkpoint', dtype: 'int8', quantizeLastLayer: false, provider: 'cpu' },
  });
  metricsServer = createServer((req, res) => {
    if (req.url !== '/metrics') return void res.writeHead(404).end();
    void telemetry.registry.metrics().then((body) => {
      res.writeHead(200, { 'Content-Type': telemetry.registry.contentType }).end(body);
    });
  });
  await new Promise<void>((r) => metricsServer.listen(0, '127.0.0.1', r));
  const port = (metricsServer.address() as AddressInfo).port;
  telemetry.attachWebSocket(metricsServer);
  subscriber = new WebSocket(`ws://127.0.0.1:${port}/v1/monitor/stream`);
  await new Promise((r) => subscriber.once('open', r));

  prom = await startPrometheus({ targets: [`127.0.0.1:${port}`], scrapeIntervalS: 1 });
  // Two scrapes with traffic between them, so rate() over the window sees real increases.
  const perRound = REQUESTS_PER_ROUND * TOKENS_PER_REQUEST;
  feedRound();
  await prom.waitFor(`llm_generated_tokens_total{model="${MODEL}"} >= ${perRound}`);
  feedRound();
  await prom.waitFor(`llm_generated_tokens_total{model="${MODEL}"} >= ${2 * perRound}`);
});

afterAll(async () => {
  subscriber?.terminate();
  await prom?.stop();
  await telemetry?.close();
  metricsServer?.closeAllConnections();
  await new Promise((r) => metricsServer?.close(r));
});

const targets = Object.entries(generateDashboards()).flatMap(([file, d]) =>
  panelsOf(d).flatMap((p) =>
    p.targets.map((t) => ({ file, panel: p.title, type: p.type, expr: expand(t.expr), instant: t.instant })),
  ),
);

function finiteValues(res: PromResponse): number[] {
  const result = (res.data?.result ?? []) as { value?: [number, string]; values?: [number, string][] }[];
  return result
    .flatMap((s) => (s.value ? [s.value] : (s.values ?? [])))
    .map(([, v]) => Number(v))
    .filter(Number.isFinite);
}

describe('dashboards against a real Prometheus', () => {
  it('Prometheus scraped the sidecar successfully', async () => {
    const up = await prom.waitFor('up{job="confidence-sidecar"} == 1');
    expect(up).toHaveLength(1);
  });

  it('every panel query is valid PromQL and returns finite data after realistic traffic', async () => {
    const failures: string[] = [];
    for (const t of targets) {
      const res = await prom.query(t.expr);
      if (res.status !== 'success')
        failures.push(`${t.file} / ${t.panel}: ${res.errorType}: ${res.error}\n  ${t.expr}`);
      else if (finiteValues(res).length === 0)
        failures.push(`${t.file} / ${t.panel}: no finite data\n  ${t.expr}\n  ${JSON.stringify(res.data)}`);
    }
    expect(failures).toEqual([]);
  });

  it('key panels show the values fed in', async () => {
    const value = async (expr: string) => {
      const v = finiteValues(await prom.query(expr));
      expect(v, expr).toHaveLength(1);
      return v[0];
    };
    // Counters as scraped: two rounds of traffic.
    expect(await value(`sum(llm_generated_tokens_total{model="${MODEL}"})`)).toBe(
      2 * REQUESTS_PER_ROUND * TOKENS_PER_REQUEST,
    );
    expect(await value(`sum(llm_requests_total{model="${MODEL}",outcome="error"})`)).toBe(2);
    expect(await value(`sum(llm_interventions_active{model="${MODEL}"})`)).toBe(2);
    expect(await value(`sum(llm_ws_subscribers{model="${MODEL}"})`)).toBe(1);
    // The replicas panel's query, as the dashboard writes it: one int8 CPU replica.
    const replicas = finiteValues(
      await prom.query(expand('count by (dtype, quantize_last_layer, provider) (llm_model_info{model=~"$model"})')),
    );
    expect(replicas).toEqual([1]);
    const info = (await prom.query(expand('llm_model_info{model=~"$model"}'))).data?.result as VectorSample[];
    expect(info.map((v) => v.metric)).toMatchObject([{ dtype: 'int8', provider: 'cpu', quantize_last_layer: 'false' }]);
    // Quantiles land inside the ranges of the synthetic signals.
    const entropyP50 = await value(
      expand(
        'histogram_quantile(0.5, sum by (le) (rate(llm_token_entropy_nats_bucket{model=~"$model"}[$__rate_interval])))',
      ),
    );
    expect(entropyP50).toBeGreaterThan(0);
    expect(entropyP50).toBeLessThan(8);
    const ttftP50 = await value(
      expand(
        'histogram_quantile(0.5, sum by (le) (rate(llm_time_to_first_token_seconds_bucket{model=~"$model"}[$__rate_interval])))',
      ),
    );
    expect(ttftP50).toBeGreaterThan(0.025);
    expect(ttftP50).toBeLessThan(0.5);
  });

  it('the model variable lists the served model', async () => {
    expect(await prom.labelValues('model', 'llm_requests_running')).toEqual([MODEL]);
    expect(
      (await prom.labelValues('neuron', `llm_neuron_activation_count{model="${MODEL}"}`)).sort(),
    ).toEqual([...ENTROPY, ...FREQUENCY].sort());
  });

  it('renders every panel of both dashboards in headless Chromium', async () => {
    const panels: { title: string; series: { name: string; points: [number, number][] }[] }[] = [];
    for (const [file, d] of Object.entries(generateDashboards())) {
      for (const p of panelsOf(d)) {
        const series: { name: string; points: [number, number][] }[] = [];
        for (const t of p.targets) {
          const res = t.instant
            ? await prom.query(expand(t.expr))
            : await prom.queryRange(expand(t.expr), 60, 1);
          expect(res.status, t.expr).toBe('success');
          const result = (res.data?.result ?? []) as {
            metric: Record<string, string>;
            value?: [number, string];
            values?: [number, string][];
          }[];
          for (const s of result) {
            const raw = s.values ?? (s.value ? [s.value] : []);
            const points = raw
              .map(([ts, v]) => [ts, Number(v)] as [number, number])
              .filter(([, v]) => Number.isFinite(v));
            series.push({ name: JSON.stringify(s.metric), points });
          }
        }
        panels.push({ title: `${file.replace('.json', '')}: ${p.title}`, series });
      }
    }

    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.setContent(renderPage(panels));
      const painted = await page.evaluate(() => (window as unknown as { painted: number[] }).painted);
      expect(errors).toEqual([]);
      expect(painted).toHaveLength(panels.length);
      // Every panel drew something: lines or bars cover pixels of its canvas.
      painted.forEach((n, i) => expect(n, panels[i].title).toBeGreaterThan(20));
      // Kept when CONFIDENCE_SIDECAR_KEEP_SCREENSHOT is set, to look at the page.
      const dir = mkdtempSync(join(tmpdir(), 'dashboards-'));
      const shot = join(dir, 'dashboards.png');
      await page.screenshot({ path: shot, fullPage: true });
      const png = readFileSync(shot);
      if (process.env.CONFIDENCE_SIDECAR_KEEP_SCREENSHOT) console.log(`dashboard screenshot: ${shot}`);
      else rmSync(dir, { recursive: true, force: true });
      expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
      expect(png.length).toBeGreaterThan(20_000);
    } finally {
      await browser.close();
    }
  });
});

/**
 * A self-contained page: one canvas per panel with its series drawn as lines (one point: a bar),
 * then a count of the pixels each canvas painted, published as window.painted.
 */
function renderPage(
  panels: { title: string; series: { name: string; points: [number, number][] }[] }[],
): string {
  const script = `
    const panels = ${JSON.stringify(panels)};
    const grid = document.getElementById('grid');
    const colors = ['#e6550d', '#3182bd', '#31a354', '#756bb1', '#636363', '#de2d26'];
    window.painted = panels.map((panel) => {
      const box = document.createElement('div');
      box.className = 'panel';
      const h = document.createElement('h3');
      h.textContent = panel.title;
      const canvas = document.createElement('canvas');
      canvas.width = 360; canvas.height = 140;
      box.append(h, canvas);
      grid.append(box);
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const all = panel.series.flatMap((s) => s.points);
      if (all.length === 0) return 0;
      const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
      const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
      const sx = (x) => 10 + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * 340;
      const sy = (y) => 130 - (y1 > y0 ? (y - y0) / (y1 - y0) : 1) * 120;
      panel.series.forEach((s, i) => {
        ctx.strokeStyle = ctx.fillStyle = colors[i % colors.length];
        ctx.lineWidth = 2;
        if (s.points.length === 1) {
          const [x, y] = s.points[0];
          const w = Math.max(2, 340 / Math.max(1, panel.series.length));
          ctx.fillRect(10 + i * w, sy(y), w - 1, 130 - sy(y) + 1);
          return;
        }
        ctx.beginPath();
        s.points.forEach(([x, y], j) => (j === 0 ? ctx.moveTo(sx(x), sy(y)) : ctx.lineTo(sx(x), sy(y))));
        ctx.stroke();
      });
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let k = 3; k < data.length; k += 4) if (data[k] > 0) n++;
      return n;
    });`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>dashboards</title>
<style>body{font:12px sans-serif;margin:8px;background:#fff} #grid{display:grid;grid-template-columns:repeat(4,1fr);gap:8px}
.panel{border:1px solid #ccc;padding:4px} h3{font-size:12px;margin:0 0 4px}</style></head>
<body><div id="grid"></div><script>${script}</script></body></html>`;
}
