// The sidecar as users run it: `serve`'s own code path (setupEngine: model folder -> graph ->
// catalogue -> engine -> registry) with the real Telemetry, driven by real clients: the openai
// SDK, a `ws` subscriber, `promtool`, and a Prometheus server scraping it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/wait.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import WebSocket from 'ws';
import { serve } from '../src/server/serve.ts';
import { setupEngine } from '../src/commands/setup.ts';
import { demoModelDir } from '../src/demo/index.ts';
import { fixture } from './helpers/shared.ts';
import { promtoolCheckMetrics, startPrometheus } from './helpers/prometheus.ts';
import { digestOf } from './helpers/digest.ts';

interface Running {
  url: string;
  client: OpenAI;
  stop: () => Promise<void>;
}

async function startSidecar(model: string): Promise<Running> {
  const ac = new AbortController();
  let url = '';
  let stopped: Promise<void> = Promise.resolve();
  const listening = new Promise<void>((resolve) => {
    const done = serve({
      host: '127.0.0.1',
      port: 0,
      maxConcurrency: 2,
      maxQueue: 4,
      logLevel: 'warn',
      shutdownGraceMs: 0,
      signal: ac.signal,
      env: {},
      load: async () => {
        const { engine, registry } = await setupEngine({ model, device: 'cpu' });
        return { engine, registry };
      },
      onListening: (u) => {
        url = u;
        resolve();
      },
    });
    stopped = done;
  });
  await listening;
  // Wait for the model: /readyz turns 200 once loaded.
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, 'the model to load (/readyz 200)', 60_000);
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
  return {
    url,
    client,
    stop: async () => {
      ac.abort();
      await stopped;
    },
  };
}

describe('sidecar on aidreams260K (real LLaMA checkpoint)', () => {
  let s: Running;
  let exp: { prompt: string; prompt_ids: number[]; greedy_ids: number[]; greedy_text: string };
  beforeAll(async () => {
    const dir = fixture('aidreams260K');
    exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    s = await startSidecar(dir);
  });
  afterAll(async () => s?.stop());

  it('the openai SDK gets the fixture greedy text at temperature 0, streamed and not', async () => {
    const n = exp.greedy_ids.length - exp.prompt_ids.length;
    const models = await s.client.models.list();
    const model = models.data[0]!.id;
    const plain = await s.client.completions.create({ model, prompt: exp.prompt, max_tokens: n, temperature: 0 });
    expect(exp.prompt + plain.choices[0]!.text).toBe(exp.greedy_text);
    expect(plain.usage).toMatchObject({ prompt_tokens: exp.prompt_ids.length, completion_tokens: n });

    const stream = await s.client.completions.create({
      model,
      prompt: exp.prompt,
      max_tokens: n,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(exp.prompt + text).toBe(exp.greedy_text);
    expect(usage?.completion_tokens).toBe(n);

    const logprobs = await s.client.completions.create({ model, prompt: exp.prompt, max_tokens: 3, temperature: 0, logprobs: 2 });
    const lp = logprobs.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      const top = Object.values(lp.top_logprobs![i]!);
      expect(Math.max(...top)).toBeCloseTo(lp.token_logprobs![i]!, 6); // greedy picks the top token
    }
  });

  it('chat completions answer through the chat path, streamed and not', async () => {
    const model = (await s.client.models.list()).data[0]!.id;
    const r = await s.client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Tell me about the moon.' }],
      max_tokens: 8,
      temperature: 0,
    });
    expect(r.choices[0]!.message.role).toBe('assistant');
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    const stream = await s.client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Tell me about the moon.' }],
      max_tokens: 8,
      temperature: 0,
      stream: true,
    });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    expect(text).toBe(r.choices[0]!.message.content);
  });

  it('a ws subscriber sees one token event per generated token, matching the streamed text', async () => {
    const model = (await s.client.models.list()).data[0]!.id;
    const ws = new WebSocket(`${s.url.replace('http', 'ws')}/v1/monitor/stream?model=${encodeURIComponent(model)}`);
    const events: { type: string; text?: string; request_id?: string }[] = [];
    ws.on('message', (m) => events.push(JSON.parse(String(m))));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const stream = await s.client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0, stream: true });
    let text = '';
    let id = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      id = chunk.id;
    }
    await waitFor(() => events.some((e) => e.type === 'request_end'), 'the request_end event', 5_000);
    ws.close();
    const tokens = events.filter((e) => e.type === 'token');
    expect(events[0]!.type).toBe('request_start');
    expect(tokens).toHaveLength(20);
    expect(tokens.map((t) => t.text).join('')).toBe(text);
    expect(id).toContain(tokens[0]!.request_id!);
  });

  it('promtool accepts the live /metrics, and a real Prometheus scrapes generated tokens', async () => {
    const exposition = await (await fetch(`${s.url}/metrics`)).text();
    const check = promtoolCheckMetrics(exposition);
    expect(check.output).toBe('');
    expect(check.ok).toBe(true);
    // The replica's facts, as `serve` loaded them (a float32 graph built from the checkpoint).
    const model = (await s.client.models.list()).data[0]!.id;
    expect(exposition).toContain(
      `llm_model_info{model="${model}",source="checkpoint",dtype="fp32",quantize_last_layer="false",provider="cpu"} 1`,
    );
    const prom = await startPrometheus({ targets: [new URL(s.url).host], scrapeIntervalS: 1 });
    try {
      const samples = await prom.waitFor('llm_generated_tokens_total > 0', 30_000);
      expect(Number(samples[0]!.value[1])).toBeGreaterThan(0);
      const entropy = await prom.waitFor('llm_token_entropy_nats_count > 0', 30_000);
      expect(entropy.length).toBeGreaterThan(0);
    } finally {
      await prom.stop();
    }
  });
});

describe('sidecar on the demo model: live interventions through the API', () => {
  let s: Running;
  let planted: { entropy: string[] };
  beforeAll(async () => {
    const dir = await demoModelDir('tiny');
    planted = JSON.parse(readFileSync(join(dir, 'planted.json'), 'utf8'));
    s = await startSidecar(dir);
  });
  afterAll(async () => s?.stop());

  it('clamping a planted entropy neuron mid-stream raises entropy; deleting it restores the baseline', async () => {
    const model = (await s.client.models.list()).data[0]!.id;
    const neuron = planted.entropy[0]!;
    // `confidence` is the sidecar's extension to the request body, unknown to the SDK's types.
    const body = { model, prompt: 'The weather today is', max_tokens: 900, temperature: 0, stream: true, confidence: true };
    const stream = await s.client.completions.create(body as OpenAI.CompletionCreateParamsStreaming);
    const tokens: { entropy: number; interventions: { count: number; digest: string | null } }[] = [];
    let ivId: string | null = null;
    let ivDigest: string | null = null;
    let deleted = false;
    for await (const chunk of stream) {
      const conf = (chunk.choices[0] as unknown as { confidence?: { entropy: number; interventions: { count: number; digest: string | null } } }).confidence;
      if (!conf) continue;
      tokens.push(conf);
      if (tokens.length === 20 && !ivId) {
        const r = await fetch(`${s.url}/v1/interventions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ neuron, mode: 'clamp', value: 20 }),
        });
        expect(r.status).toBe(201);
        ivId = ((await r.json()) as { id: string }).id;
        ivDigest = digestOf([ivId]);
      }
      const clamped = tokens.filter((t) => ivId && t.interventions.digest === ivDigest).length;
      if (clamped >= 40 && !deleted) {
        const r = await fetch(`${s.url}/v1/interventions/${ivId}`, { method: 'DELETE' });
        expect(r.status).toBe(200);
        deleted = true;
      }
      const after = deleted ? tokens.filter((t, i) => i > 0 && t.interventions.digest !== ivDigest && tokens.slice(0, i).some((u) => u.interventions.digest === ivDigest)).length : 0;
      if (after >= 60) break;
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const firstClamped = tokens.findIndex((t) => t.interventions.digest === ivDigest);
    const lastClamped = tokens.length - 1 - [...tokens].reverse().findIndex((t) => t.interventions.digest === ivDigest);
    expect(firstClamped).toBeGreaterThan(0);
    const before = tokens.slice(0, firstClamped).map((t) => t.entropy);
    const during = tokens.slice(firstClamped, lastClamped + 1).map((t) => t.entropy);
    const after = tokens.slice(lastClamped + 1).map((t) => t.entropy);
    expect(during.length).toBeGreaterThanOrEqual(40);
    expect(after.length).toBeGreaterThanOrEqual(20);
    // Clamped high, the neuron's large null-space write grows the final LayerNorm's sigma and
    // flattens the distribution: entropy rises well above the unclamped level, then falls back.
    expect(mean(during)).toBeGreaterThan(mean(before) + 1);
    expect(mean(after)).toBeLessThan(mean(during) - 1);
    expect(Math.abs(mean(after) - mean(before))).toBeLessThan(0.5 * (mean(during) - mean(before)));
  });
});
