// The operator console (GET /) in headless Chromium against the real sidecar on the demo model:
// the page loads only from the sidecar, a prompt streams shaded tokens with their signals, a clamp
// set on a planted entropy neuron from the catalogue table is listed and moves the entropy, and
// removing it from the list clears it. A screenshot is kept in test-artifacts/console.png.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { serve } from '../src/server/serve.ts';
import { setupEngine } from '../src/commands/setup.ts';
import { demoModelDir } from '../src/demo/index.ts';
import { launchChromium } from './helpers/chromium.ts';
import { startServer, type TestServer } from './helpers/server.ts';

const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');

async function startSidecar(model: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const ac = new AbortController();
  let url = '';
  let done: Promise<void> = Promise.resolve();
  await new Promise<void>((resolve) => {
    done = serve({
      host: '127.0.0.1',
      port: 0,
      maxConcurrency: 2,
      maxQueue: 4,
      logLevel: 'warn',
      shutdownGraceMs: 0,
      signal: ac.signal,
      env: {},
      load: async () => setupEngine({ model, device: 'cpu' }),
      onListening: (u) => {
        url = u;
        resolve();
      },
    });
  });
  for (let i = 0; i < 600 && (await fetch(`${url}/readyz`)).status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, stop: async () => (ac.abort(), await done) };
}

/** Entropies of the generated tokens on the page, once `n` have arrived and the run has ended. */
async function generate(page: Page, n: number): Promise<number[]> {
  await page.fill('#max-tokens', String(n));
  await page.click('#run');
  await page
    .waitForFunction((k) => document.querySelectorAll('#output .tok').length >= k && !document.querySelector<HTMLButtonElement>('#run')!.disabled, n, { timeout: 60_000 })
    .catch(async (e: Error) => {
      throw new Error(`${e.message}; page status: ${await page.textContent('#status')}; output: ${await page.textContent('#output')}`);
    });
  return page.$$eval('#output .tok', (spans) => spans.map((s) => Number((s as HTMLElement).dataset.entropy)));
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('console on the demo model', () => {
  let sidecar: { url: string; stop: () => Promise<void> };
  let browser: Browser;
  let page: Page;
  let planted: string;
  const requested: string[] = [];
  const errors: string[] = [];

  beforeAll(async () => {
    const dir = await demoModelDir('tiny');
    planted = (JSON.parse(readFileSync(join(dir, 'planted.json'), 'utf8')) as { entropy: string[] }).entropy[0]!;
    sidecar = await startSidecar(dir);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('request', (r) => requested.push(r.url()));
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${sidecar.url}/`);
    await page.waitForSelector(`#neurons tr[data-neuron="${planted}"]`);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await sidecar?.stop();
  });

  it('serves the page and its assets itself, with a CSP that allows nothing else', async () => {
    const res = await fetch(`${sidecar.url}/`);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const origin = new URL(sidecar.url).origin;
    expect(requested.length).toBeGreaterThan(3);
    expect(requested.filter((u) => !u.startsWith(origin) && !u.startsWith(origin.replace('http', 'ws')))).toEqual([]);
  });

  it('shows the catalogue with scores and provenance', async () => {
    const row = await page.$$eval(`#neurons tr[data-neuron="${planted}"] td`, (tds) => tds.map((t) => t.textContent));
    const api = await (await fetch(`${sidecar.url}/v1/neurons`)).json();
    const n = api.neurons.find((x: { address: string }) => x.address === planted);
    expect(row[1]).toContain('entropy');
    expect(Number(row[2])).toBeCloseTo(n.rho, 3);
    expect(Number(row[3])).toBeCloseTo(n.logit_var, 3);
    expect(await page.textContent('#provenance')).toMatch(/weights only|analyzed/);
  });

  it('streams shaded tokens with a tooltip of their signals', async () => {
    await page.fill('#temperature', '0');
    const entropies = await generate(page, 48);
    expect(entropies.every(Number.isFinite)).toBe(true);
    // Shaded by entropy: a higher-entropy token is drawn with a deeper shade.
    const shades = await page.$$eval('#output .tok', (spans) =>
      spans.map((s) => Number(/rgba\([^)]*,\s*([\d.]+)\)/.exec(getComputedStyle(s).backgroundColor)?.[1] ?? 1)),
    );
    const hi = entropies.indexOf(Math.max(...entropies));
    const lo = entropies.indexOf(Math.min(...entropies));
    expect(shades[hi]!).toBeGreaterThan(shades[lo]!);
    await page.hover('#output .tok >> nth=5');
    const tip = await page.textContent('#tooltip');
    expect(tip).toContain('entropy');
    expect(tip).toContain('norm scale');
    expect(tip).toContain(planted);
    expect(await page.isVisible('#chart')).toBe(true);
  });

  it('a clamp set from the catalogue is listed, raises the entropy, and is removed from the list', async () => {
    await page.fill('#temperature', '0');
    const before = await generate(page, 48);
    const row = `#neurons tr[data-neuron="${planted}"]`;
    await page.selectOption(`${row} select`, 'clamp');
    await page.fill(`${row} input`, '20');
    await page.click(`${row} button`);
    await page.waitForSelector(`#interventions li:has-text("${planted} clamp")`);
    const listed = (await (await fetch(`${sidecar.url}/v1/interventions`)).json()).data;
    expect(listed).toMatchObject([{ neuron: planted, mode: 'clamp', value: 20 }]);

    const during = await generate(page, 48);
    console.log(`console: mean entropy ${mean(before).toFixed(3)} -> ${mean(during).toFixed(3)} nats with ${planted} clamped to 20`);
    expect(mean(during)).toBeGreaterThan(mean(before) + 1);
    expect(await page.$$eval('#output .tok.intervened', (s) => s.length)).toBe(during.length);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console.png'), fullPage: true });

    await page.click(`#interventions li:has-text("${planted} clamp") button`);
    await page.waitForSelector('#interventions li:has-text("none")');
    expect((await (await fetch(`${sidecar.url}/v1/interventions`)).json()).data).toEqual([]);
  });

  it('a confidence target set from the page steers the entropy toward it, shown on the chart', async () => {
    await page.fill('#temperature', '0');
    await page.fill('#target-value', '8.5');
    await page.click('#target-set');
    await page.waitForSelector('#interventions li:has-text("target_entropy 8.500")');
    const h = await generate(page, 40);
    console.log(`console: target 8.5, mean entropy of tokens 8..39 = ${mean(h.slice(8)).toFixed(3)}`);
    expect(Math.abs(mean(h.slice(8)) - 8.5)).toBeLessThan(1);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'console-target.png'), fullPage: true });
    await page.click('#interventions li:has-text("target_entropy") button');
    await page.waitForSelector('#interventions li:has-text("none")');
  });

  it("shows other requests' tokens from the monitor stream", async () => {
    await page.waitForFunction(() => document.querySelector('#feed-state')?.textContent === 'connected');
    const id = `other-${Date.now()}`;
    const model = (await (await fetch(`${sidecar.url}/v1/models`)).json()).data[0].id;
    const res = await fetch(`${sidecar.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': id },
      body: JSON.stringify({ model, prompt: 'Hello', max_tokens: 6, temperature: 0 }),
    });
    const text = (await res.json()).choices[0].text as string;
    await page.waitForFunction((rid) => [...document.querySelectorAll('.feed-req.ended')].some((e) => e.textContent?.startsWith(rid)), id);
    const shown = await page.$$eval('.feed-req', (els, rid) => els.find((e) => e.textContent?.startsWith(rid))!.querySelectorAll('.tok').length, id);
    expect(shown).toBe(6);
    expect(text.length).toBeGreaterThan(0);
    expect(errors).toEqual([]);
  });
});

describe('console with an admin token configured', () => {
  let s: TestServer;
  let browser: Browser;
  beforeAll(async () => {
    s = await startServer({ adminToken: 'console-admin' });
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await s?.close();
  });

  it('asks for it on the 401, then lists interventions with it; generation works without it', async () => {
    const page = await browser.newPage();
    await page.goto(`${s.url}/`);
    await page.waitForSelector('#auth[open]');
    expect(await page.textContent('#interventions')).toContain('admin token needed');
    await page.fill('#admin-token', 'console-admin');
    await page.click('#auth-save');
    await page.waitForSelector('#interventions li:has-text("none")');
    await page.fill('#max-tokens', '5');
    await page.click('#run');
    await page.waitForFunction(() => document.querySelectorAll('#output .tok').length === 5);
  });
});
