// Concurrency benchmark: N streaming completions at once through the real server (`serve`, the
// openai SDK on loopback, 64 tokens each), beside a bare onnxruntime-node greedy loop run at batch
// N on the same instrumented graph. Prints aggregate tok/s, p50/p99 inter-token latency and p99
// time to first token. Not a test: numbers are printed, never asserted.

import * as ort from 'onnxruntime-node';
import OpenAI from 'openai';
import { IO, type ModelSpec } from '../src/model/types.ts';
import { serve } from '../src/server/serve.ts';
import { setupEngine } from '../src/commands/setup.ts';

const quantileOf = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

function int64(vals: number[], dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(vals.map(BigInt)), dims);
}

/** Bare batched greedy loop: B copies of one prompt, `tokens` steps; returns the median step (s). */
export async function bareBatch(
  session: ort.InferenceSession,
  spec: ModelSpec,
  prompt: number[],
  B: number,
  tokens: number,
): Promise<{ aggregate: number; stepS: number }> {
  const instrumented = session.inputNames.includes(IO.neuronScale);
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < spec.nLayers; l++) {
    for (const name of [IO.pastKey(l), IO.pastValue(l)]) {
      past[name] = new ort.Tensor('float32', new Float32Array(0), [B, spec.nKvHeads, 0, spec.headDim]);
    }
  }
  const scale = new ort.Tensor('float32', new Float32Array(B * spec.dMlp).fill(1), [B, spec.dMlp]);
  const shift = new ort.Tensor('float32', new Float32Array(B * spec.dMlp), [B, spec.dMlp]);
  const unigram = new ort.Tensor('float32', new Float32Array(spec.vocabSize), [spec.vocabSize]);
  let feed = Array.from({ length: B }, () => prompt);
  let len = 0;
  const steps: number[] = [];
  let decodeS = 0;
  for (let i = 0; i < tokens; i++) {
    const n = feed[0]!.length;
    const feeds: Record<string, ort.Tensor> = {
      ...past,
      [IO.inputIds]: int64(feed.flat(), [B, n]),
      [IO.attentionMask]: int64(new Array(B * (len + n)).fill(1), [B, len + n]),
      [IO.positionIds]: int64(feed.flatMap((f) => f.map((_, j) => len + j)), [B, n]),
      [IO.logitsToKeep]: int64([1], [1]),
    };
    if (instrumented) {
      feeds[IO.neuronScale] = scale;
      feeds[IO.neuronShift] = shift;
      feeds[IO.unigramLogProb] = unigram;
    }
    const t0 = performance.now();
    const out = await session.run(feeds);
    for (let l = 0; l < spec.nLayers; l++) {
      past[IO.pastKey(l)] = out[IO.presentKey(l)]!;
      past[IO.pastValue(l)] = out[IO.presentValue(l)]!;
    }
    const logits = out[IO.logits]!.data as Float32Array;
    const V = spec.vocabSize;
    feed = Array.from({ length: B }, (_, b) => {
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[b * V + v]! > logits[b * V + best]!) best = v;
      return [best];
    });
    const dt = (performance.now() - t0) / 1000;
    len += n;
    if (i > 0) {
      steps.push(dt);
      decodeS += dt;
    }
  }
  return { aggregate: (B * (tokens - 1)) / decodeS, stepS: quantileOf(steps, 0.5) };
}

interface StreamStats {
  ttftS: number;
  gapsS: number[];
  tokens: number;
}

async function oneStream(client: OpenAI, model: string, prompt: string, tokens: number): Promise<StreamStats> {
  const t0 = performance.now();
  const stream = await client.completions.create({ model, prompt, max_tokens: tokens, temperature: 0, stream: true });
  let last = 0;
  let ttftS = NaN;
  const gapsS: number[] = [];
  let n = 0;
  for await (const chunk of stream) {
    if (!chunk.choices[0]?.text && chunk.choices[0]?.finish_reason) continue;
    const now = performance.now();
    if (n === 0) ttftS = (now - t0) / 1000;
    else gapsS.push((now - last) / 1000);
    last = now;
    n++;
  }
  return { ttftS, gapsS, tokens: n };
}

/** Starts the real server on the model, runs the levels, prints the table, stops the server. */
export async function benchConcurrency(
  label: string,
  dir: string,
  session: ort.InferenceSession,
  spec: ModelSpec,
  levels: number[],
  tokens: number,
  promptIds: number[],
  /** Model flags for the server's engine (--dtype, --quantize-last-layer), as the CLI takes them. */
  modelFlags: Record<string, unknown> = {},
): Promise<void> {
  const ac = new AbortController();
  let url = '';
  const listening = new Promise<void>((resolve) => {
    void serve({
      host: '127.0.0.1',
      port: 0,
      maxConcurrency: Math.max(...levels),
      maxQueue: 64,
      logLevel: 'warn',
      shutdownGraceMs: 0,
      signal: ac.signal,
      env: {},
      load: async () =>
        setupEngine({ ...modelFlags, model: dir, device: 'cpu', 'max-concurrency': String(Math.max(...levels)) }),
      onListening: (u) => {
        url = u;
        resolve();
      },
    });
  });
  await listening;
  for (let i = 0; i < 1200 && (await fetch(`${url}/readyz`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'bench', maxRetries: 0 });
  const model = (await client.models.list()).data[0]!.id;
  // A prompt of ordinary text; the server tokenizes it.
  const prompt = 'Once upon a time, in a small village by the sea, there lived an old fisherman who';
  await oneStream(client, model, prompt, 8); // warm-up
  console.log(`\n## concurrency, ${label}: ${tokens} streamed tokens per request, openai SDK on loopback`);
  console.log('streams  server tok/s  p50 ITL ms  p99 ITL ms  p99 TTFT ms | bare batch tok/s  bare step ms  server/bare');
  let singleStep = NaN;
  for (const c of levels) {
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: c }, () => oneStream(client, model, prompt, tokens)));
    const wall = (performance.now() - t0) / 1000;
    const total = runs.reduce((a, r) => a + r.tokens, 0);
    const gaps = runs.flatMap((r) => r.gapsS);
    const bare = await bareBatch(session, spec, promptIds, c, tokens);
    if (c === 1) singleStep = bare.stepS;
    const agg = total / wall;
    console.log(
      `${String(c).padStart(7)}  ${agg.toFixed(1).padStart(12)}  ${(quantileOf(gaps, 0.5) * 1000).toFixed(1).padStart(10)}  ` +
        `${(quantileOf(gaps, 0.99) * 1000).toFixed(1).padStart(10)}  ${(quantileOf(runs.map((r) => r.ttftS), 0.99) * 1000).toFixed(1).padStart(11)} | ` +
        `${bare.aggregate.toFixed(1).padStart(16)}  ${(bare.stepS * 1000).toFixed(1).padStart(12)}  ${(agg / bare.aggregate).toFixed(3).padStart(11)}`,
    );
    if (c === Math.max(...levels)) {
      const p99 = quantileOf(gaps, 0.99);
      console.log(
        `at ${c} streams: aggregate ${(agg / bare.aggregate).toFixed(3)}x bare batch-${c} (target >= 0.9); ` +
          `p99 ITL ${(p99 / singleStep).toFixed(2)}x the single-stream bare step (target < 3)`,
      );
    }
  }
  ac.abort();
}
