// The engine end to end (worker thread, KV cache, sampling, stop handling) on the shared
// fixtures, against their float64 expected.json.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixture } from './helpers/shared.ts';
import { createEngine } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import type { GeneratedToken, GenerationSummary, SamplingParams } from '../src/runtime/types.ts';

interface Expected {
  prompt?: string;
  prompt_ids: number[];
  greedy_ids?: number[];
  greedy_next?: number[];
  greedy_text?: string;
  entropy: number[];
  final_norm_scale: number[];
  last_mlp_act: number[][];
}

const greedy = (maxTokens: number, extra: Partial<SamplingParams> = {}): SamplingParams => ({
  maxTokens,
  temperature: 0,
  topP: 1,
  topK: 0,
  stop: [],
  topLogprobs: 0,
  ...extra,
});

async function collect(it: AsyncGenerator<GeneratedToken, GenerationSummary>) {
  const tokens: GeneratedToken[] = [];
  let r = await it.next();
  while (!r.done) {
    tokens.push(r.value);
    r = await it.next();
  }
  return { tokens, summary: r.value };
}

for (const name of ['aidreams260K', 'aidreams260K-onnx', 'gpt2-tiny-random', 'gpt2-tiny-random-onnx']) {
  describe(`engine on ${name}`, () => {
    let engine: OnnxEngine;
    let exp: Expected;
    beforeAll(async () => {
      const dir = fixture(name);
      exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
      engine = await createEngine({ model: dir });
    });
    afterAll(async () => engine?.close());

    it('score matches expected entropy, norm scale and last-layer activations', async () => {
      const ids = exp.greedy_ids ?? exp.prompt_ids;
      const pos = await engine.score(ids, { activations: true });
      expect(pos).toHaveLength(ids.length);
      for (let p = 0; p < ids.length; p++) {
        expect(Math.abs(pos[p]!.entropy - exp.entropy[p]!)).toBeLessThanOrEqual(1e-4);
        expect(Math.abs(pos[p]!.normScale - exp.final_norm_scale[p]!)).toBeLessThanOrEqual(1e-4);
        const act = pos[p]!.mlpAct!;
        let maxDiff = 0;
        for (let i = 0; i < act.length; i++) maxDiff = Math.max(maxDiff, Math.abs(act[i]! - exp.last_mlp_act[p]![i]!));
        expect(maxDiff).toBeLessThanOrEqual(1e-4);
      }
    });

    if (name.startsWith('aidreams')) {
      it('greedy generation reproduces greedy_ids and greedy_text', async () => {
        const prompt = engine.encode(exp.prompt!);
        expect(prompt).toEqual(exp.prompt_ids);
        const want = exp.greedy_ids!.slice(prompt.length);
        const { tokens, summary } = await collect(engine.generate({ promptIds: prompt, params: greedy(want.length) }));
        expect(tokens.map((t) => t.tokenId)).toEqual(want);
        expect(summary.finishReason).toBe('length');
        expect(summary.text).toBe(tokens.map((t) => t.text).join('') + summary.trailingText);
        // Per-token signals of generation equal the teacher-forced ones (KV cache vs full pass).
        for (const t of tokens) {
          const p = prompt.length + t.index - 1;
          expect(Math.abs(t.entropy - exp.entropy[p]!)).toBeLessThanOrEqual(1e-4);
          expect(Math.abs(t.normScale - exp.final_norm_scale[p]!)).toBeLessThanOrEqual(1e-4);
        }
        expect(engine.decode(exp.greedy_ids!)).toBe(exp.greedy_text);
      });
    } else {
      it('greedy next token at every prefix matches greedy_next', async () => {
        for (let n = 1; n <= exp.prompt_ids.length; n++) {
          const { tokens } = await collect(engine.generate({ promptIds: exp.prompt_ids.slice(0, n), params: greedy(1) }));
          expect(tokens[0]!.tokenId).toBe(exp.greedy_next![n - 1]);
        }
      });
    }
  });
}

describe('sampling and stopping (aidreams260K)', () => {
  let engine: OnnxEngine;
  beforeAll(async () => {
    engine = await createEngine({ model: fixture('aidreams260K') });
  });
  afterAll(async () => engine?.close());

  it('the same seed gives the same sample; another seed a different one', async () => {
    const prompt = engine.encode('Once upon a time');
    const run = async (seed: number) =>
      (await collect(engine.generate({ promptIds: prompt, params: greedy(30, { temperature: 1.2, topP: 0.95, topK: 50, seed }) })))
        .tokens.map((t) => t.tokenId);
    const a = await run(7);
    expect(await run(7)).toEqual(a);
    expect(await run(8)).not.toEqual(a);
  });

  it('a stop string ends the completion before it and is never streamed', async () => {
    const exp: Expected = JSON.parse(readFileSync(join(fixture('aidreams260K'), 'expected.json'), 'utf8'));
    const full = exp.greedy_text!.slice(exp.prompt!.length);
    const stop = 'unfold';
    const cut = full.indexOf(stop);
    expect(cut).toBeGreaterThan(0);
    const { tokens, summary } = await collect(
      engine.generate({ promptIds: exp.prompt_ids, params: greedy(40, { stop: [stop] }) }),
    );
    expect(summary.finishReason).toBe('stop');
    expect(summary.text).toBe(full.slice(0, cut));
    expect(tokens.map((t) => t.text).join('')).toBe(summary.text);
  });

  it('aborting stops within one step', async () => {
    const ac = new AbortController();
    const it = engine.generate({ promptIds: engine.encode('The moon'), params: greedy(40), signal: ac.signal });
    await it.next();
    await it.next();
    ac.abort();
    const rest = await collect(it);
    expect(rest.tokens.length).toBeLessThanOrEqual(1);
    expect(rest.summary.finishReason).toBe('abort');
    expect(rest.summary.completionTokens).toBeLessThanOrEqual(3);
  });

  it('rejects a prompt that does not fit the context with max_tokens', async () => {
    const ids = new Array(120).fill(5);
    await expect(collect(engine.generate({ promptIds: ids, params: greedy(20) }))).rejects.toThrow(/context length/);
  });
});
