// The HTTP API on the real engine, checked against the fixtures' float64 expected.json: greedy
// text through /v1/completions and the confidence signals of each generated token (entropy, norm
// scale and catalogued activations at the position that predicted it).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createFixtureEngine, postJson, readSse, startServer, type TestServer } from './helpers/server.ts';
import { fixture } from './helpers/shared.ts';

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

const TOL = 1e-4;
const indexOf = (address: string) => Number(address.split('.')[1]);

describe('server on aidreams260K-onnx (real LLaMA, greedy)', () => {
  let s: TestServer;
  let exp: Expected;
  beforeAll(async () => {
    exp = JSON.parse(readFileSync(join(fixture('aidreams260K-onnx'), 'expected.json'), 'utf8'));
    s = await startServer({ engine: await createFixtureEngine('aidreams260K-onnx') });
  });
  afterAll(async () => s?.close());

  it('completes "The moon" with the expected greedy text and per-token signals', async () => {
    const promptLen = exp.prompt_ids.length;
    const n = exp.greedy_ids!.length - promptLen;
    const r = await postJson(`${s.url}/v1/completions`, {
      model: s.engine.modelId,
      prompt: exp.prompt,
      max_tokens: n,
      temperature: 0,
      logprobs: 0,
      confidence: true,
    });
    expect(r.status).toBe(200);
    const choice = r.body.choices[0];
    expect(exp.prompt + choice.text).toBe(exp.greedy_text);
    expect(r.body.usage.prompt_tokens).toBe(promptLen);
    expect(choice.logprobs.tokens).toEqual(
      exp.greedy_ids!.slice(promptLen).map((id) => s.engine.tokenizer.tokenText(id)),
    );
    const conf = choice.confidence;
    for (let k = 0; k < n; k++) {
      // Token k was predicted at position promptLen - 1 + k.
      const p = promptLen - 1 + k;
      expect(Math.abs(conf.entropy[k] - exp.entropy[p]!)).toBeLessThanOrEqual(TOL);
      expect(Math.abs(conf.norm_scale[k] - exp.final_norm_scale[p]!)).toBeLessThanOrEqual(TOL);
      for (const a of s.engine.catalogue.entropy) {
        expect(Math.abs(conf.entropy_neurons[a][k] - exp.last_mlp_act[p]![indexOf(a)]!)).toBeLessThanOrEqual(
          TOL,
        );
      }
    }
  });

  it('streams the same text', async () => {
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: s.engine.modelId,
        prompt: exp.prompt,
        max_tokens: exp.greedy_ids!.length - exp.prompt_ids.length,
        temperature: 0,
        stream: true,
      }),
    });
    const events = (await readSse(res)).filter((e) => e !== '[DONE]') as { choices: { text: string }[] }[];
    expect(exp.prompt + events.map((e) => e.choices[0]?.text ?? '').join('')).toBe(exp.greedy_text);
  });
});

describe('server on gpt2-tiny-random-onnx (real GPT-2 tokenizer)', () => {
  let s: TestServer;
  let exp: Expected;
  beforeAll(async () => {
    exp = JSON.parse(readFileSync(join(fixture('gpt2-tiny-random-onnx'), 'expected.json'), 'utf8'));
    s = await startServer({ engine: await createFixtureEngine('gpt2-tiny-random-onnx') });
  });
  afterAll(async () => s?.close());

  it('a token-id prompt gets the expected greedy next token and its signals', async () => {
    const last = exp.prompt_ids.length - 1;
    const r = await s.client.completions.create({
      model: s.engine.modelId,
      prompt: exp.prompt_ids,
      max_tokens: 1,
      temperature: 0,
      logprobs: 1,
    });
    const choice = r.choices[0]!;
    expect(choice.logprobs!.tokens).toEqual([s.engine.tokenizer.tokenText(exp.greedy_next![last]!)]);
    expect(r.usage!.prompt_tokens).toBe(exp.prompt_ids.length);
    const conf = (
      await postJson(`${s.url}/v1/completions`, {
        model: s.engine.modelId,
        prompt: exp.prompt_ids,
        max_tokens: 1,
        temperature: 0,
        confidence: true,
      })
    ).body.choices[0].confidence;
    expect(Math.abs(conf.entropy[0] - exp.entropy[last]!)).toBeLessThanOrEqual(TOL);
    expect(Math.abs(conf.norm_scale[0] - exp.final_norm_scale[last]!)).toBeLessThanOrEqual(TOL);
    for (const a of [...s.engine.catalogue.entropy, ...s.engine.catalogue.frequency]) {
      const value = a in conf.entropy_neurons ? conf.entropy_neurons[a][0] : conf.frequency_neurons[a][0];
      expect(Math.abs(value - exp.last_mlp_act[last]![indexOf(a)]!)).toBeLessThanOrEqual(TOL);
    }
  });

  it('a clamp in the request body shows as the reported activation', async () => {
    const neuron = s.engine.catalogue.entropy[0]!;
    const r = await postJson(`${s.url}/v1/chat/completions`, {
      model: s.engine.modelId,
      messages: [{ role: 'user', content: 'Hello there' }],
      max_tokens: 3,
      temperature: 0,
      confidence: true,
      interventions: [{ neuron, mode: 'clamp', value: 4 }],
    });
    expect(r.status).toBe(200);
    for (const v of r.body.choices[0].confidence.entropy_neurons[neuron]) expect(v).toBeCloseTo(4, 5);
  });
});
