// Continuous batching end to end: requests of different lengths, one joining mid-stream, one
// cancelled mid-batch, one with a request-scoped clamp beside others without, seeded sampling
// and a scoring session, all sharing the worker's batch steps. Each must get exactly the tokens
// and (within 1e-4) the signals it gets when it runs alone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from './helpers/shared.ts';
import { createEngine } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import type { GeneratedToken, GenerateRequest, NeuronIntervention, SamplingParams } from '../src/runtime/types.ts';
import { loadCatalogueFor } from '../src/monitor/catalogue-loader.ts';
import { openModelSource } from '../src/model/source.ts';
import { greedyParams } from './helpers/sampling.ts';

const params = (maxTokens: number, extra: Partial<SamplingParams> = {}): SamplingParams => ({ ...greedyParams(maxTokens), ...extra });

interface Run {
  tokens: GeneratedToken[];
  finish: string;
}

async function collect(
  engine: OnnxEngine,
  req: GenerateRequest,
  hooks: { onToken?: (n: number) => void; abortAfter?: number } = {},
): Promise<Run> {
  const ac = new AbortController();
  const it = engine.generate({ ...req, signal: ac.signal });
  const tokens: GeneratedToken[] = [];
  for (let r = await it.next(); ; r = await it.next()) {
    if (r.done) return { tokens, finish: r.value.finishReason };
    tokens.push(r.value);
    hooks.onToken?.(tokens.length);
    if (hooks.abortAfter === tokens.length) ac.abort();
  }
}

function expectSame(got: GeneratedToken[], want: GeneratedToken[], label: string): void {
  expect(got.map((t) => t.tokenId), label).toEqual(want.map((t) => t.tokenId));
  got.forEach((g, i) => {
    const w = want[i]!;
    for (const k of ['entropy', 'top1Prob', 'logprob', 'normScale'] as const) {
      expect(Math.abs(g[k] - w[k]), `${label} token ${i} ${k}`).toBeLessThanOrEqual(1e-4);
    }
    if (w.unigramKl !== undefined) expect(Math.abs(g.unigramKl! - w.unigramKl)).toBeLessThanOrEqual(1e-4);
    for (const [n, v] of Object.entries({ ...w.entropyNeurons, ...w.frequencyNeurons })) {
      const mine = g.entropyNeurons[n] ?? g.frequencyNeurons[n]!;
      expect(Math.abs(mine - v), `${label} token ${i} neuron ${n}`).toBeLessThanOrEqual(1e-4);
    }
    expect(g.interventions).toEqual(w.interventions);
  });
}

for (const name of ['aidreams260K', 'gpt2-tiny-random-onnx']) {
  describe(`continuous batching on ${name}`, () => {
    let engine: OnnxEngine;
    let clamp: NeuronIntervention;
    beforeAll(async () => {
      const dir = fixture(name);
      const catalogue = await loadCatalogueFor(await openModelSource(dir));
      engine = await createEngine({ model: dir, watched: { entropy: catalogue.entropy, frequency: catalogue.frequency } });
      clamp = { id: 'req-clamp', neuron: catalogue.entropy[0]!, mode: 'clamp', value: 6 };
    });
    afterAll(() => engine?.close());

    it('gives every request in a mixed batch exactly what it gets alone', async () => {
      const enc = (s: string) => engine.encode(s);
      const reqs: Record<string, GenerateRequest> = {
        short: { promptIds: enc('Hi'), params: params(24) },
        long: { promptIds: enc('Once upon a time there was a little girl who lived in a village'), params: params(20) },
        late: { promptIds: enc('The cat sat'), params: params(12) },
        cancelled: { promptIds: enc('One day'), params: params(30) },
        sampled: { promptIds: enc('The weather'), params: params(20, { temperature: 0.9, topP: 0.95, seed: 1234 }) },
        clamped: { promptIds: enc('She said'), params: params(16), interventions: () => [clamp] },
      };
      const alone: Record<string, Run> = {};
      for (const [k, req] of Object.entries(reqs)) alone[k] = await collect(engine, req);
      // The clamp did something: its neuron reads the clamped value, and the row differs from unclamped.
      expect(alone.clamped!.tokens.every((t) => t.entropyNeurons[clamp.neuron] === 6)).toBe(true);
      expect(alone.clamped!.tokens.every((t) => t.interventions.includes('req-clamp'))).toBe(true);

      let maxBatch = 0;
      const off = engine.onStep((s) => (maxBatch = Math.max(maxBatch, s.batch)));
      let lateRun: Promise<Run> | null = null;
      const scoring = await engine.openScoring(reqs.short!.promptIds);
      const runs = await Promise.all([
        collect(engine, reqs.short!, {
          onToken: (n) => {
            if (n === 5) lateRun = collect(engine, reqs.late!);
          },
        }),
        collect(engine, reqs.long!),
        collect(engine, reqs.cancelled!, { abortAfter: 4 }),
        collect(engine, reqs.sampled!),
        collect(engine, reqs.clamped!),
        (async () => {
          // A teacher-forced stream scored beside the generations, in uneven pieces.
          const ids = alone.short!.tokens.map((t) => t.tokenId);
          const out = [];
          for (const [a, b] of [[0, 3], [3, 4], [4, 13], [13, 24]] as const) out.push(...(await scoring.extend(ids.slice(a, b))));
          return out;
        })(),
      ]);
      off();
      const late = await lateRun!;
      const [short, long, cancelled, sampled, clamped, scored] = runs as [Run, Run, Run, Run, Run, Awaited<ReturnType<typeof scoring.extend>>];
      await scoring.close();
      expect(maxBatch).toBeGreaterThanOrEqual(3);
      expectSame(short.tokens, alone.short!.tokens, 'short');
      expectSame(long.tokens, alone.long!.tokens, 'long');
      expectSame(late.tokens, alone.late!.tokens, 'late');
      expectSame(sampled.tokens, alone.sampled!.tokens, 'sampled');
      expectSame(clamped.tokens, alone.clamped!.tokens, 'clamped');
      expect(cancelled.finish).toBe('abort');
      expect(cancelled.tokens.length).toBe(4);
      expectSame(cancelled.tokens, alone.cancelled!.tokens.slice(0, 4), 'cancelled');
      // The scoring session's records are the generation's, token for token.
      expect(scored.map((r) => r.tokenId)).toEqual(alone.short!.tokens.map((t) => t.tokenId));
      scored.forEach((r, i) => {
        const g = alone.short!.tokens[i]!;
        expect(r.source).toBe('shadow');
        expect(Math.abs(r.entropy - g.entropy)).toBeLessThanOrEqual(1e-4);
        expect(Math.abs(r.logprob - g.logprob)).toBeLessThanOrEqual(1e-4);
        expect(Math.abs(r.normScale - g.normScale)).toBeLessThanOrEqual(1e-4);
      });
    });

    it('a consumer that stops pulling does not stall the others, and resumes where it left off', async () => {
      const stalled = engine.generate({ promptIds: engine.encode('Hello'), params: params(40) });
      const first = await stalled.next();
      expect(first.done).toBe(false);
      // While `stalled` is not pulled, another request runs to completion.
      const other = await collect(engine, { promptIds: engine.encode('The dog'), params: params(30) });
      expect(other.tokens).toHaveLength(30);
      expect(engine.lastStep!.running).toBeGreaterThanOrEqual(1);
      const rest: GeneratedToken[] = [first.value as GeneratedToken];
      for (let r = await stalled.next(); !r.done; r = await stalled.next()) rest.push(r.value);
      const alone = await collect(engine, { promptIds: engine.encode('Hello'), params: params(40) });
      expectSame(rest, alone.tokens, 'stalled');
    });
  });
}
