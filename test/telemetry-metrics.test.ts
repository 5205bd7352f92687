// Prometheus metrics of the Telemetry class, read back from the text exposition (as Prometheus would
// see it) and compared with values computed independently from the synthetic traffic fed in.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { GeneratedToken } from '../src/runtime/types.ts';
import { Telemetry, type Clock, type RequestContext } from '../src/server/telemetry/index.ts';
import { promtoolCheckMetrics } from './helpers/prometheus.ts';
import { seededRandom, syntheticSummary, syntheticToken } from './helpers/telemetry-traffic.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses sample lines of the Prometheus text format (no escapes needed for our label values). */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').match(/[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"/g) ?? []) {
      const eq = pair.indexOf('=');
      labels[pair.slice(0, eq)] = pair.slice(eq + 2, -1);
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

function one(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = find(samples, name, labels);
  if (hits.length !== 1)
    throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${hits.length}`);
  return hits[0].value;
}

/** Checks a histogram's cumulative buckets, _count and _sum against the observed values. */
function expectHistogram(
  samples: Sample[],
  name: string,
  labels: Record<string, string>,
  observed: number[],
): void {
  const buckets = find(samples, `${name}_bucket`, labels);
  expect(buckets.length).toBeGreaterThan(2);
  for (const b of buckets) {
    const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
    expect(b.value, `${name} le=${b.labels.le}`).toBe(observed.filter((v) => v <= le).length);
  }
  expect(one(samples, `${name}_count`, labels)).toBe(observed.length);
  const sum = observed.reduce((a, b) => a + b, 0);
  expect(one(samples, `${name}_sum`, labels)).toBeCloseTo(sum, 6);
}

class ManualClock implements Clock {
  ms = 1_000;
  monotonicMs = () => this.ms;
  epochMs = () => 1_700_000_000_000 + this.ms;
}

const ENTROPY = ['11.584', '11.2378'];
const FREQUENCY = ['11.417'];

function ctx(requestId: string, over: Partial<RequestContext> = {}): RequestContext {
  return {
    requestId,
    model: 'gpt2',
    endpoint: 'completions',
    params: { max_tokens: 16, temperature: 0.7, top_p: 0.9, stream: true },
    promptTokens: 7,
    interventions: [],
    ...over,
  };
}

let telemetry: Telemetry | null = null;
afterEach(async () => {
  await telemetry?.close();
  telemetry = null;
});

describe('Telemetry metrics', () => {
  it('exposes only the sidecar metrics, with zero series for the served model from the start', async () => {
    telemetry = new Telemetry({ model: 'gpt2', entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY });
    const text = await telemetry.registry.metrics();
    const samples = parseExposition(text);
    expect(samples.every((s) => s.name.startsWith('llm_'))).toBe(true);
    expect(one(samples, 'llm_requests_running', { model: 'gpt2' })).toBe(0);
    expect(one(samples, 'llm_generated_tokens_total', { model: 'gpt2' })).toBe(0);
    const check = promtoolCheckMetrics(text);
    expect(check.output).toBe('');
    expect(check.ok).toBe(true);
  });

  it('records per-token signals, latencies and request outcomes exactly', async () => {
    const clock = new ManualClock();
    telemetry = new Telemetry({ model: 'gpt2', entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY, clock });
    const rand = seededRandom(7);
    const tokens: GeneratedToken[] = [];

    // Request A: 5 tokens; the 2nd and 3rd under an intervention. Token gaps in ms are chosen by hand.
    const a = telemetry.requestStarted(ctx('req-a', { promptTokens: 11 }));
    const gapsMs = [250, 40, 60, 5, 1200];
    for (let i = 0; i < gapsMs.length; i++) {
      clock.ms += gapsMs[i];
      const t = syntheticToken(i, rand, {
        entropyNeurons: ENTROPY,
        frequencyNeurons: FREQUENCY,
        interventions: i === 1 || i === 2 ? ['iv-1'] : [],
      });
      // A neuron outside the catalogue must never become a label value.
      t.entropyNeurons['11.9999'] = 1;
      tokens.push(t);
      a.token(t);
    }
    clock.ms += 100;
    a.end(syntheticSummary(11, 5), 'success');

    // Request B (chat): one token, then an error. Its signals include a NaN that must be skipped.
    const b = telemetry.requestStarted(ctx('req-b', { endpoint: 'chat_completions', promptTokens: 3 }));
    clock.ms += 30;
    const bad = syntheticToken(0, rand, {
      entropyNeurons: ENTROPY,
      frequencyNeurons: FREQUENCY,
      withUnigramKl: false,
    });
    bad.normScale = NaN;
    b.token(bad);
    b.end(syntheticSummary(3, 1, 'abort'), 'error', new Error('engine failed'));
    // Calls after end are ignored.
    b.token(bad);
    b.end(syntheticSummary(3, 1), 'success');

    telemetry.requestRejected('completions', 'rejected_queue_full');
    telemetry.requestRejected('chat_completions', 'invalid');
    telemetry.setQueue(2, 5);

    const s = parseExposition(await telemetry.registry.metrics());
    const model = { model: 'gpt2' };
    const all = [...tokens, bad];
    expect(one(s, 'llm_requests_total', { ...model, endpoint: 'completions', outcome: 'success' })).toBe(1);
    expect(one(s, 'llm_requests_total', { ...model, endpoint: 'chat_completions', outcome: 'error' })).toBe(
      1,
    );
    expect(
      one(s, 'llm_requests_total', { ...model, endpoint: 'completions', outcome: 'rejected_queue_full' }),
    ).toBe(1);
    expect(one(s, 'llm_requests_total', { ...model, endpoint: 'chat_completions', outcome: 'invalid' })).toBe(
      1,
    );
    expect(one(s, 'llm_prompt_tokens_total', model)).toBe(14);
    expect(one(s, 'llm_generated_tokens_total', model)).toBe(6);
    expect(one(s, 'llm_intervened_tokens_total', model)).toBe(2);
    expect(one(s, 'llm_requests_running', model)).toBe(2);
    expect(one(s, 'llm_requests_waiting', model)).toBe(5);

    expectHistogram(s, 'llm_time_to_first_token_seconds', model, [0.25, 0.03]);
    expectHistogram(s, 'llm_inter_token_latency_seconds', model, [0.04, 0.06, 0.005, 1.2]);
    expectHistogram(s, 'llm_request_duration_seconds', { ...model, endpoint: 'completions' }, [
      (250 + 40 + 60 + 5 + 1200 + 100) / 1000,
    ]);
    expectHistogram(s, 'llm_request_duration_seconds', { ...model, endpoint: 'chat_completions' }, [0.03]);
    expectHistogram(
      s,
      'llm_token_entropy_nats',
      model,
      all.map((t) => t.entropy),
    );
    expectHistogram(
      s,
      'llm_token_top1_probability',
      model,
      all.map((t) => t.top1Prob),
    );
    expectHistogram(
      s,
      'llm_final_norm_scale',
      model,
      tokens.map((t) => t.normScale),
    );
    expectHistogram(
      s,
      'llm_unigram_kl_nats',
      model,
      tokens.map((t) => t.unigramKl!),
    );
    for (const neuron of ENTROPY) {
      expectHistogram(
        s,
        'llm_neuron_activation',
        { ...model, neuron, role: 'entropy' },
        all.map((t) => t.entropyNeurons[neuron]),
      );
    }
    expectHistogram(
      s,
      'llm_neuron_activation',
      { ...model, neuron: '11.417', role: 'frequency' },
      all.map((t) => t.frequencyNeurons['11.417']),
    );
    const neuronLabels = new Set(find(s, 'llm_neuron_activation_count').map((x) => x.labels.neuron));
    expect([...neuronLabels].sort()).toEqual([...ENTROPY, ...FREQUENCY].sort());
  });

  it('tracks active interventions from change events until the caller reports a count', async () => {
    telemetry = new Telemetry({ model: 'gpt2', entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY });
    const iv = (id: string) => ({
      id,
      neuron: '11.584',
      mode: 'clamp' as const,
      value: 5,
      createdAt: '2024-01-01T00:00:00.000Z',
      expiresAt: null,
      requestId: null,
    });
    const active = async () =>
      one(parseExposition(await telemetry!.registry.metrics()), 'llm_interventions_active', {
        model: 'gpt2',
      });
    telemetry.interventionChanged('created', iv('a'));
    telemetry.interventionChanged('created', iv('b'));
    telemetry.interventionChanged('created', iv('b'));
    expect(await active()).toBe(2);
    telemetry.interventionChanged('expired', iv('a'));
    expect(await active()).toBe(1);
    telemetry.interventionChanged('removed', iv('b'));
    expect(await active()).toBe(0);
  });

  it('serves an exposition over HTTP that promtool accepts after mixed traffic', async () => {
    telemetry = new Telemetry({ model: 'gpt2', entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY });
    const t = telemetry;
    const server: Server = createServer((_req, res) => {
      void t.registry.metrics().then((body) => {
        res.writeHead(200, { 'Content-Type': t.registry.contentType });
        res.end(body);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const rand = seededRandom(3);
      for (let r = 0; r < 4; r++) {
        const req = t.requestStarted(ctx(`r${r}`, { endpoint: r % 2 ? 'chat_completions' : 'completions' }));
        for (let i = 0; i < 10; i++)
          req.token(syntheticToken(i, rand, { entropyNeurons: ENTROPY, frequencyNeurons: FREQUENCY }));
        req.end(syntheticSummary(7, 10), r === 3 ? 'aborted' : 'success');
      }
      t.requestRejected('completions', 'unauthorized');
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const check = promtoolCheckMetrics(await res.text());
      expect(check.output).toBe('');
      expect(check.ok).toBe(true);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
