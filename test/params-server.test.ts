// Sampling parameters through the HTTP API on the real engine (gpt2-tiny-random-onnx), checked
// against independent truth: the same requests made one by one (n), the model's own distribution
// as top_logprobs reports it (penalties, logit_bias, min_tokens), and a teacher-forced score (echo).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postJson, readSse, startServer, type JsonBody, type TestServer } from './helpers/server.ts';

const PROMPT = 'The quick brown fox';

describe('sampling parameters on the real engine', () => {
  let s: TestServer;
  const complete = (body: Record<string, unknown>) =>
    postJson(`${s.url}/v1/completions`, { model: s.engine.modelId, prompt: PROMPT, ...body });
  beforeAll(async () => {
    s = await startServer({ maxN: 4 });
  });
  afterAll(async () => s?.close());

  it('n = 3 seeded equals three single requests seeded s, s+1, s+2; usage is summed', async () => {
    const params = { model: s.engine.modelId, prompt: PROMPT, max_tokens: 6, temperature: 1, seed: 41 };
    const many = await s.client.completions.create({ ...params, n: 3 });
    expect(many.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const singles = await Promise.all(
      [41, 42, 43].map((seed) => s.client.completions.create({ ...params, seed })),
    );
    expect(many.choices.map((c) => c.text)).toEqual(singles.map((r) => r.choices[0]!.text));
    // The choices differ from each other (else the test would pass with one seed reused).
    expect(new Set(many.choices.map((c) => c.text)).size).toBeGreaterThan(1);
    expect(many.usage!.prompt_tokens).toBe(singles[0]!.usage!.prompt_tokens);
    expect(many.usage!.completion_tokens).toBe(singles.reduce((a, r) => a + r.usage!.completion_tokens, 0));
  });

  it('a streamed chat with n = 3 carries index per choice and reassembles to the non-streamed one', async () => {
    const params = {
      model: s.engine.modelId,
      messages: [{ role: 'user' as const, content: 'Hello' }],
      max_tokens: 5,
      temperature: 1,
      seed: 7,
      n: 3,
    };
    const whole = await s.client.chat.completions.create(params);
    const stream = await s.client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    const text = ['', '', ''];
    const finished = new Set<number>();
    let usage: JsonBody = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finished.add(c.index);
      }
    }
    expect(text).toEqual(whole.choices.map((c) => c.message.content));
    expect([...finished].sort()).toEqual([0, 1, 2]);
    expect(usage.completion_tokens).toBe(whole.usage!.completion_tokens);
  });

  it('n above --max-n is a 400 naming n', async () => {
    const r = await complete({ n: 5 });
    expect(r.status).toBe(400);
    expect(r.body.error.param).toBe('n');
    expect(r.body.error.message).toContain('at most 4');
  });

  it('logit_bias +100 forces a token; the reported logprob stays the model’s own', async () => {
    const base = await complete({ max_tokens: 1, temperature: 0, logprobs: 5 });
    const alternatives = base.body.choices[0].logprobs.top_logprobs[0] as Record<string, number>;
    // Force the fifth most likely token; its logprob must be the one the unbiased request reported.
    const [fifthText, fifthLogprob] = Object.entries(alternatives).sort((a, b) => b[1] - a[1])[4]!;
    const fifthId = s.engine.encode(fifthText, { addSpecialTokens: false });
    expect(fifthId.length).toBe(1);
    const r = await complete({
      max_tokens: 3,
      temperature: 0,
      logprobs: 0,
      logit_bias: { [String(fifthId[0])]: 100 },
    });
    expect(r.status).toBe(200);
    const lp = r.body.choices[0].logprobs;
    expect(lp.tokens).toEqual([fifthText, fifthText, fifthText]);
    expect(lp.token_logprobs[0]).toBeCloseTo(fifthLogprob, 5);
    // The per-token record names the adjustment.
    const recorded = s.telemetry.tokens.get(r.headers.get('x-request-id')!)!;
    expect(recorded.map((t) => t.adjustments)).toEqual([['logit_bias'], ['logit_bias'], ['logit_bias']]);
    expect(s.telemetry.tokens.get(base.headers.get('x-request-id')!)![0]!.adjustments).toBeUndefined();
    // And the confidence extension says so too, complete and streamed.
    const withConf = await complete({
      max_tokens: 2,
      temperature: 0,
      logit_bias: { [String(fifthId[0])]: 100 },
      confidence: true,
    });
    expect(withConf.body.choices[0].confidence.adjustments).toEqual([['logit_bias'], ['logit_bias']]);
    const plainConf = await complete({ max_tokens: 2, temperature: 0, confidence: true });
    expect(plainConf.body.choices[0].confidence).not.toHaveProperty('adjustments');
  });

  it('frequency/presence penalties: each greedy pick is the argmax of logprob - c*f - (c>0)*p', async () => {
    const f = 1.5;
    const p = 0.5;
    const r = await complete({
      max_tokens: 16,
      temperature: 0,
      logprobs: 5,
      frequency_penalty: f,
      presence_penalty: p,
      echo: false,
    });
    expect(r.status).toBe(200);
    const lp = r.body.choices[0].logprobs;
    const counts = new Map<string, number>();
    let checked = 0;
    lp.tokens.forEach((tok: string, k: number) => {
      const top = lp.top_logprobs[k] as Record<string, number>;
      const adjusted = Object.entries(top).map(([t, l]) => {
        const c = counts.get(t) ?? 0;
        return [t, l - c * f - (c > 0 ? p : 0)] as const;
      });
      adjusted.sort((a, b) => b[1] - a[1]);
      // Tokens outside the top 5 have a raw logprob <= the 5th and penalties >= 0, so when the best
      // adjusted candidate beats the 5th raw logprob, it must be the pick.
      const floor = Math.min(...Object.values(top));
      if (adjusted[0]![1] > floor) {
        expect(tok).toBe(adjusted[0]![0]);
        checked++;
      }
      counts.set(tok, (counts.get(tok) ?? 0) + 1);
    });
    expect(checked).toBeGreaterThan(8);
    // Without penalties, the greedy continuation differs (the penalties did something).
    const plain = await complete({ max_tokens: 16, temperature: 0 });
    expect(plain.body.choices[0].text).not.toBe(r.body.choices[0].text);
  });

  it('stop_token_ids ends the completion before the token; min_tokens masks it until then', async () => {
    const base = await complete({ max_tokens: 4, temperature: 0, logprobs: 2 });
    const ids = s.engine.encode(PROMPT + base.body.choices[0].text).slice(s.engine.encode(PROMPT).length);
    const third = ids[2]!;
    const stopped = await complete({ max_tokens: 4, temperature: 0, stop_token_ids: [third] });
    if (!ids.slice(0, 2).includes(third)) {
      expect(stopped.body.choices[0].finish_reason).toBe('stop');
      expect(s.engine.encode(PROMPT + stopped.body.choices[0].text).slice(-2)).toEqual(ids.slice(0, 2));
    }
    // min_tokens 1 with the greedy first token as a stop token: the first pick is the runner-up.
    const first = ids[0]!;
    const runnerUp = Object.entries(
      base.body.choices[0].logprobs.top_logprobs[0] as Record<string, number>,
    ).sort((a, b) => b[1] - a[1])[1]![0];
    const masked = await complete({
      max_tokens: 2,
      temperature: 0,
      logprobs: 0,
      stop_token_ids: [first],
      min_tokens: 1,
    });
    expect(masked.body.choices[0].logprobs.tokens[0]).toBe(runnerUp);
  });

  it('min_tokens holds stop strings back too (vLLM): the first allowed occurrence ends the text', async () => {
    const base = await complete({ max_tokens: 8, temperature: 0, logprobs: 0 });
    const tokens: string[] = base.body.choices[0].logprobs.tokens;
    const text = tokens.join('');
    const stop = tokens[0]!;
    expect(stop.length).toBeGreaterThan(0);
    // Without min_tokens the first token is the stop string: nothing is returned.
    const early = await complete({ max_tokens: 8, temperature: 0, stop: [stop] });
    expect(early.body.choices[0]).toMatchObject({ text: '', finish_reason: 'stop' });
    // With min_tokens 3, an occurrence may end the completion only if it ends in token 3 or later;
    // worked out from the unconstrained greedy tokens.
    const ends = tokens.map((_, i) => tokens.slice(0, i + 1).join('').length);
    let expected: { text: string; tokens: number } | null = null;
    for (let at = text.indexOf(stop); at >= 0 && !expected; at = text.indexOf(stop, at + 1)) {
      const endsIn = ends.findIndex((e) => e >= at + stop.length);
      if (endsIn >= 2) expected = { text: text.slice(0, at), tokens: endsIn + 1 };
    }
    const held = await complete({ max_tokens: 8, temperature: 0, stop: [stop], min_tokens: 3 });
    // (gpt2-tiny-random repeats " fox": the stop string occurs in every token.)
    expect(expected).not.toBeNull();
    expect(held.body.choices[0]).toMatchObject({ text: expected!.text, finish_reason: 'stop' });
    expect(held.body.usage.completion_tokens).toBe(expected!.tokens);
  });

  it('echo returns the prompt with its teacher-forced logprobs, then the completion', async () => {
    const r = await complete({ max_tokens: 2, temperature: 0, logprobs: 0, echo: true });
    const plain = await complete({ max_tokens: 2, temperature: 0 });
    const choice = r.body.choices[0];
    expect(choice.text).toBe(PROMPT + plain.body.choices[0].text);
    const promptIds = s.engine.encode(PROMPT);
    const scored = await s.engine.score(promptIds);
    const n = promptIds.length;
    expect(choice.logprobs.tokens.slice(0, n)).toEqual(
      promptIds.map((id) => s.engine.tokenizer.tokenText(id)),
    );
    expect(choice.logprobs.token_logprobs[0]).toBeNull();
    for (let k = 1; k < n; k++)
      expect(choice.logprobs.token_logprobs[k]).toBeCloseTo(scored[k - 1]!.nextLogprob!, 5);
    expect(choice.logprobs.text_offset[0]).toBe(0);
    expect(choice.logprobs.text_offset[n]).toBe(PROMPT.length);
    // Streamed, the prompt comes first.
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: s.engine.modelId,
        prompt: PROMPT,
        max_tokens: 2,
        temperature: 0,
        echo: true,
        stream: true,
      }),
    });
    const events = (await readSse(res)) as JsonBody[];
    expect(events[0].choices[0].text).toBe(PROMPT);
  });

  it('refuses what it cannot do, naming the parameter', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ logit_bias: { abc: 1 } }, 'logit_bias'],
      [{ logit_bias: { '5': 101 } }, 'logit_bias'],
      [{ logit_bias: { '999999': 1 } }, 'logit_bias'],
      [{ stop_token_ids: [60000] }, 'stop_token_ids'],
      [{ min_tokens: 20, max_tokens: 5 }, 'min_tokens'],
      [{ frequency_penalty: 3 }, 'frequency_penalty'],
      [{ guided_json: {} }, 'guided_json'],
    ];
    for (const [body, param] of cases) {
      const r = await complete(body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.param, JSON.stringify(body)).toBe(param);
    }
    const chat = await postJson(`${s.url}/v1/chat/completions`, {
      model: s.engine.modelId,
      messages: [{ role: 'user', content: 'hi' }],
      response_format: { type: 'json_object' },
    });
    expect(chat.status).toBe(400);
    expect(chat.body.error.param).toBe('response_format');
    expect(chat.body.error.message).toContain('json_object');
  });
});

describe('--unknown-fields ignore', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ unknownFields: 'ignore' });
  });
  afterAll(async () => s?.close());

  it('drops unknown top-level fields with a warning and a count, still refuses tools', async () => {
    const counted: [string, number][] = [];
    Object.assign(s.telemetry, { fieldsIgnored: (e: string, n: number) => counted.push([e, n]) });
    const r = await postJson(`${s.url}/v1/completions`, {
      model: s.engine.modelId,
      prompt: PROMPT,
      max_tokens: 2,
      skip_special_tokens: true,
      guided_json: null,
    });
    expect(r.status).toBe(200);
    expect(counted).toEqual([['completions', 2]]);
    const warn = s.logs.find((l) => l.msg === 'ignored unknown request fields (--unknown-fields ignore)');
    expect(warn?.ignored_fields).toEqual(['skip_special_tokens', 'guided_json']);
    const tools = await postJson(`${s.url}/v1/chat/completions`, {
      model: s.engine.modelId,
      messages: [{ role: 'user', content: 'hi' }],
      tools: [{ type: 'function', function: { name: 'f' } }],
    });
    expect(tools.status).toBe(400);
    expect(tools.body.error.param).toBe('tools');
  });
});
