// The OpenAI-compatible endpoints through the official `openai` SDK: completions and chat,
// streamed and not, logprobs, stop sequences, usage, X-Request-Id, and the confidence extension.
// The truth is the engine itself: the same request run directly must give the same tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GeneratedToken, SamplingParams } from '../src/runtime/types.ts';
import {
  generateDirect,
  postJson,
  readSse,
  startServer,
  type JsonBody,
  type TestServer,
} from './helpers/server.ts';
import { touchedBy } from './helpers/digest.ts';

const greedy = (maxTokens: number, extra: Partial<SamplingParams> = {}): SamplingParams => ({
  maxTokens,
  temperature: 0,
  topP: 1,
  topK: 0,
  stop: [],
  topLogprobs: 0,
  ...extra,
});

const PROMPT = 'The moon';

describe('OpenAI-compatible API', () => {
  let s: TestServer;
  let model: string;
  let truth: { tokens: GeneratedToken[]; text: string; promptIds: number[] };

  beforeAll(async () => {
    s = await startServer();
    model = s.engine.modelId;
    const promptIds = s.engine.encode(PROMPT);
    const direct = await generateDirect(s.engine, { promptIds, params: greedy(8, { topLogprobs: 3 }) });
    truth = { tokens: direct.tokens, text: direct.summary.text, promptIds };
  });
  afterAll(async () => s?.close());

  it('lists the served model', async () => {
    const list = await s.client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([model]);
    const one = await s.client.models.retrieve(model);
    expect(one).toMatchObject({ id: model, object: 'model' });
  });

  it('completes text like the engine, with usage and legacy logprobs', async () => {
    const r = await s.client.completions.create({
      model,
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      logprobs: 3,
    });
    expect(r.object).toBe('text_completion');
    expect(r.choices).toHaveLength(1);
    const c = r.choices[0]!;
    expect(c.text).toBe(truth.text);
    expect(c.finish_reason).toBe('length');
    expect(r.usage).toEqual({
      prompt_tokens: truth.promptIds.length,
      completion_tokens: 8,
      total_tokens: truth.promptIds.length + 8,
    });
    const lp = c.logprobs!;
    expect(lp.token_logprobs).toEqual(truth.tokens.map((t) => t.logprob));
    expect(lp.tokens).toEqual(truth.tokens.map((t) => s.engine.tokenizer.tokenText(t.tokenId)));
    lp.top_logprobs!.forEach((alts, i) => {
      const expected = Object.fromEntries(truth.tokens[i]!.topLogprobs!.map((a) => [a.text, a.logprob]));
      expect(alts).toEqual(expected);
    });
    // text_offset counts from the start of the prompt text, token by token.
    let offset = PROMPT.length;
    truth.tokens.forEach((t, i) => {
      expect(lp.text_offset![i]).toBe(offset);
      offset += t.text.length;
    });
  });

  it('streams completions: the chunks add up to the same text, then usage, then [DONE]', async () => {
    const stream = await s.client.completions.create({
      model,
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join('');
    expect(text).toBe(truth.text);
    const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f !== null);
    expect(finishes).toEqual(['length']);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({
      prompt_tokens: truth.promptIds.length,
      completion_tokens: 8,
      total_tokens: truth.promptIds.length + 8,
    });
    // Before the usage chunk every chunk says usage: null, as OpenAI's do.
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();

    // The wire format itself: data lines, [DONE] last.
    const res = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, prompt: PROMPT, max_tokens: 3, temperature: 0, stream: true }),
    });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await readSse(res);
    expect(events.at(-1)).toBe('[DONE]');
    expect(
      events
        .slice(0, -1)
        .every((e) => typeof e === 'object' && (e as { object: string }).object === 'text_completion'),
    ).toBe(true);
  });

  it('chat: non-streamed message with logprobs.content like the engine', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about the moon' }];
    const rendered = await chatPromptIds(s, messages);
    const direct = await generateDirect(s.engine, {
      promptIds: rendered,
      params: greedy(6, { topLogprobs: 2 }),
    });
    const r = await s.client.chat.completions.create({
      model,
      messages,
      max_completion_tokens: 6,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    expect(r.object).toBe('chat.completion');
    const c = r.choices[0]!;
    expect(c.message.role).toBe('assistant');
    expect(c.message.content).toBe(direct.summary.text);
    expect(c.finish_reason).toBe('length');
    expect(r.usage).toMatchObject({ prompt_tokens: rendered.length, completion_tokens: 6 });
    const content = c.logprobs!.content!;
    expect(content.map((x) => x.logprob)).toEqual(direct.tokens.map((t) => t.logprob));
    content.forEach((x, i) => {
      const t = direct.tokens[i]!;
      expect(x.token).toBe(s.engine.tokenizer.tokenText(t.tokenId));
      expect(x.bytes).toEqual(Array.from(s.engine.tokenizer.tokenBytes(t.tokenId)));
      expect(x.top_logprobs.map((a) => [a.token, a.logprob])).toEqual(
        t.topLogprobs!.map((a) => [a.text, a.logprob]),
      );
    });
  });

  it('chat: streamed deltas (role first) add up to the non-streamed message', async () => {
    const messages = [
      { role: 'system' as const, content: 'Be brief.' },
      { role: 'user' as const, content: [{ type: 'text' as const, text: 'Hello' }] },
    ];
    const whole = await s.client.chat.completions.create({ model, messages, max_tokens: 5, temperature: 0 });
    const stream = await s.client.chat.completions.create({
      model,
      messages,
      max_tokens: 5,
      temperature: 0,
      stream: true,
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]!.id).toMatch(/^chatcmpl-/);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('length');
  });

  it('stop sequences end the text before the stop string, finish_reason stop (streamed too)', async () => {
    // Pick a stop string from the text the engine produces, so the test holds for any model.
    const cut = truth.tokens.findIndex((t, i) => i >= 2 && t.text.trim().length > 0);
    expect(cut).toBeGreaterThan(0);
    const stop = truth.tokens[cut]!.text;
    const expected = truth.text.slice(0, truth.text.indexOf(stop));
    const r = await s.client.completions.create({
      model,
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      stop: [stop, 'never-seen'],
    });
    expect(r.choices[0]!.text).toBe(expected);
    expect(r.choices[0]!.finish_reason).toBe('stop');

    const stream = await s.client.completions.create({
      model,
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      stop,
      stream: true,
    });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(expected);
    expect(finish).toBe('stop');
  });

  it('passes seed, temperature, top_p, top_k, stop to the engine', async () => {
    const before = s.telemetry.started.length;
    await s.client.completions.create({
      model,
      prompt: PROMPT,
      max_tokens: 2,
      temperature: 0.7,
      top_p: 0.9,
      seed: 1234,
      stop: '\n',
      // @ts-expect-error top_k is this server's extension
      top_k: 5,
    });
    const ctx = s.telemetry.started[before]!;
    expect(ctx.params).toMatchObject({
      max_tokens: 2,
      temperature: 0.7,
      top_p: 0.9,
      top_k: 5,
      seed: 1234,
      stop: ['\n'],
      stream: false,
    });
  });

  it('honours X-Request-Id: echoed, used in the response id and the logs; generated when absent', async () => {
    const { data, response } = await s.client.completions
      .create({ model, prompt: PROMPT, max_tokens: 2 }, { headers: { 'X-Request-Id': 'req-abc.123' } })
      .withResponse();
    expect(response.headers.get('x-request-id')).toBe('req-abc.123');
    expect(data.id).toBe('cmpl-req-abc.123');
    expect(s.logs.some((l) => l.request_id === 'req-abc.123' && l.trace_id === 'trace-req-abc.123')).toBe(
      true,
    );

    const chat = await s.client.chat.completions
      .create(
        { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 },
        { headers: { 'X-Request-Id': 'chat-1' } },
      )
      .withResponse();
    expect(chat.data.id).toBe('chatcmpl-chat-1');

    const anon = await s.client.completions.create({ model, prompt: PROMPT, max_tokens: 1 }).withResponse();
    const generated = anon.response.headers.get('x-request-id');
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(anon.data.id).toBe(`cmpl-${generated}`);
  });

  it('confidence: per-token arrays and a summary for a complete response', async () => {
    const r = await postJson(`${s.url}/v1/completions`, {
      model,
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      confidence: true,
    });
    expect(r.status).toBe(200);
    const conf = r.body.choices[0].confidence;
    expect(conf.entropy).toEqual(truth.tokens.map((t) => t.entropy));
    expect(conf.norm_scale).toEqual(truth.tokens.map((t) => t.normScale));
    expect(conf.top1_prob).toEqual(truth.tokens.map((t) => t.top1Prob));
    expect(conf.repeat).toEqual(truth.tokens.map((t) => t.repeat));
    for (const n of s.engine.catalogue.entropy)
      expect(conf.entropy_neurons[n]).toEqual(truth.tokens.map((t) => t.entropyNeurons[n]));
    for (const n of s.engine.catalogue.frequency)
      expect(conf.frequency_neurons[n]).toEqual(truth.tokens.map((t) => t.frequencyNeurons[n]));
    const entropies = truth.tokens.map((t) => t.entropy);
    expect(conf.summary.tokens).toBe(8);
    expect(conf.summary.mean_entropy).toBeCloseTo(entropies.reduce((a, b) => a + b) / entropies.length, 12);
    expect(conf.summary.max_entropy).toBe(Math.max(...entropies));
    // Without the flag there is no confidence object (plain OpenAI responses).
    const plain = await postJson(`${s.url}/v1/completions`, { model, prompt: PROMPT, max_tokens: 2 });
    expect(plain.body.choices[0]).not.toHaveProperty('confidence');
  });

  it('confidence on each streamed chat chunk', async () => {
    const res = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 4,
        temperature: 0,
        stream: true,
        confidence: true,
      }),
    });
    const events = (await readSse(res)).filter((e) => e !== '[DONE]') as {
      choices: { delta: { content?: string }; confidence?: JsonBody }[];
    }[];
    const tokenChunks = events.filter((e) => e.choices[0]?.confidence);
    expect(tokenChunks).toHaveLength(4);
    for (const c of tokenChunks) {
      expect(Object.keys(c.choices[0]!.confidence).sort()).toEqual(
        expect.arrayContaining([
          'entropy',
          'entropy_neurons',
          'frequency_neurons',
          'interventions',
          'norm_scale',
          'repeat',
          'top1_prob',
        ]),
      );
      expect(c.choices[0]!.confidence.interventions).toEqual(touchedBy([]));
    }
  });

  it('per-request interventions act on this request only, show in confidence, and are gone after it', async () => {
    const neuron = s.engine.catalogue.entropy[0]!;
    const body = { model, prompt: PROMPT, max_tokens: 4, temperature: 0, confidence: true };
    const r = await postJson(
      `${s.url}/v1/completions`,
      { ...body, interventions: [{ neuron, mode: 'clamp', value: 5 }] },
      { 'x-request-id': 'iv-req' },
    );
    expect(r.status).toBe(200);
    const conf = r.body.choices[0].confidence;
    // The engine reports activations after the intervention: the clamped value at every token.
    expect(conf.entropy_neurons[neuron]).toEqual([5, 5, 5, 5]);
    // One intervention acted on every token: the summary names it, each token carries its digest.
    const ids = [conf.summary.intervention_ids as string[]];
    expect(ids[0]).toHaveLength(1);
    expect(conf.interventions).toEqual(new Array(4).fill(touchedBy(ids[0]!)));
    // It was registered for this request only, and removed when the request ended.
    expect(s.registry.list()).toEqual([]);
    const created = s.telemetry.interventions.filter(([, iv]) => iv.id === ids[0]![0]);
    expect(created.map(([kind]) => kind)).toEqual(['created', 'removed']);
    expect(created[0]![1]).toMatchObject({ neuron, mode: 'clamp', value: 5, requestId: 'iv-req' });
    expect(
      s.logs
        .filter((l) => l.audit === true && (l.intervention as { id: string }).id === ids[0]![0])
        .map((l) => l.action),
    ).toEqual(['create', 'delete']);
    // A request without it is not affected.
    const plain = await postJson(`${s.url}/v1/completions`, body);
    expect(plain.body.choices[0].confidence.entropy_neurons[neuron]).not.toContain(5);
    expect(plain.body.choices[0].confidence.interventions).toEqual(new Array(4).fill(touchedBy([])));
  });

  it('reports the catalogue on /v1/neurons', async () => {
    const res = await fetch(`${s.url}/v1/neurons`);
    // The full view (scores, provenance) is test/console-neurons.test.ts; here: the watched set.
    expect(await res.json()).toMatchObject({
      object: 'neuron_catalogue',
      model,
      layer: s.engine.spec.nLayers - 1,
      d_mlp: s.engine.spec.dMlp,
      entropy: s.engine.catalogue.entropy,
      frequency: s.engine.catalogue.frequency,
    });
  });
});

async function chatPromptIds(
  s: TestServer,
  messages: { role: 'user'; content: string }[],
): Promise<number[]> {
  // The plain template (no chat_template in the fake/base tokenizer), encoded with special tokens.
  const { ChatFormatter } = await import('../src/server/chat-template.ts');
  const rendered = new ChatFormatter({ chatTemplate: s.engine.tokenizer.chatTemplate }).render(messages);
  return s.engine.encode(rendered.prompt, { addSpecialTokens: rendered.addSpecialTokens });
}
