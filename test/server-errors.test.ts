// Every way a request can be wrong gets the right status and OpenAI's error shape
// {"error": {message, type, param, code}}, and the server keeps serving afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer, type ServerEngine } from '../src/server/app.ts';
import {
  createTestEngine,
  postJson,
  RecordingTelemetry,
  startServer,
  type JsonBody,
  type TestServer,
} from './helpers/server.ts';

function expectOpenAIError(
  body: JsonBody,
  status: number,
  code: string,
  param: string | null | undefined,
  type?: string,
) {
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(body.error.code).toBe(code);
  if (param !== undefined) expect(body.error.param).toBe(param);
  const types: Record<number, string> = {
    400: 'invalid_request_error',
    413: 'invalid_request_error',
    415: 'invalid_request_error',
    401: 'authentication_error',
    404: 'not_found_error',
    429: 'rate_limit_error',
    503: 'server_error',
  };
  expect(body.error.type).toBe(type ?? types[status]);
}

describe('bad input', () => {
  let s: TestServer;
  let model: string;
  let completions: string;
  let chat: string;

  beforeAll(async () => {
    s = await startServer({ bodyLimit: 64 * 1024 });
    model = s.engine.modelId;
    completions = `${s.url}/v1/completions`;
    chat = `${s.url}/v1/chat/completions`;
  });
  afterAll(async () => s?.close());

  const good = () => ({ model, prompt: 'The moon', max_tokens: 2, temperature: 0 });
  const goodChat = () => ({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

  async function stillServes() {
    const r = await postJson(completions, good());
    expect(r.status).toBe(200);
    expect(r.body.choices[0].text.length).toBeGreaterThan(0);
  }

  const maxPositions = () => s.engine.spec.maxPositions;

  const cases: [string, () => { url?: 'chat'; body: unknown }, number, string, string | null | undefined][] =
    [
      ['malformed JSON', () => ({ body: '{"model": "x", "prompt": ' }), 400, 'invalid_json', null],
      ['missing model', () => ({ body: { prompt: 'hi' } }), 400, 'missing_required_parameter', 'model'],
      ['missing prompt', () => ({ body: { model } }), 400, 'missing_required_parameter', 'prompt'],
      ['unknown parameter', () => ({ body: { ...good(), foo: 1 } }), 400, 'unknown_parameter', 'foo'],
      [
        'max_tokens as a string (no coercion)',
        () => ({ body: { ...good(), max_tokens: '5' } }),
        400,
        'invalid_type',
        'max_tokens',
      ],
      ['max_tokens zero', () => ({ body: { ...good(), max_tokens: 0 } }), 400, 'invalid_value', 'max_tokens'],
      [
        'max_tokens negative',
        () => ({ body: { ...good(), max_tokens: -3 } }),
        400,
        'invalid_value',
        'max_tokens',
      ],
      [
        'max_tokens fractional',
        () => ({ body: { ...good(), max_tokens: 2.5 } }),
        400,
        'invalid_type',
        'max_tokens',
      ],
      [
        'max_tokens beyond the context',
        () => ({ body: { ...good(), max_tokens: maxPositions() } }),
        400,
        'context_length_exceeded',
        'max_tokens',
      ],
      [
        'max_tokens huge',
        () => ({ body: { ...good(), max_tokens: 1e9 } }),
        400,
        'context_length_exceeded',
        'max_tokens',
      ],
      [
        'prompt longer than the context',
        () => ({ body: { ...good(), prompt: ' the moon'.repeat(maxPositions()) } }),
        400,
        'context_length_exceeded',
        'prompt',
      ],
      [
        'prompt longer than the context, chat default max',
        () => ({
          url: 'chat',
          body: { model, messages: [{ role: 'user', content: ' the moon'.repeat(maxPositions()) }] },
        }),
        400,
        'context_length_exceeded',
        'messages',
      ],
      [
        'temperature above 2',
        () => ({ body: { ...good(), temperature: 3 } }),
        400,
        'invalid_value',
        'temperature',
      ],
      ['top_p zero', () => ({ body: { ...good(), top_p: 0 } }), 400, 'invalid_value', 'top_p'],
      [
        'five stop strings',
        () => ({ body: { ...good(), stop: ['a', 'b', 'c', 'd', 'e'] } }),
        400,
        'invalid_value',
        'stop',
      ],
      ['stop of the wrong type', () => ({ body: { ...good(), stop: 7 } }), 400, 'invalid_type', 'stop'],
      ['logprobs above 5', () => ({ body: { ...good(), logprobs: 6 } }), 400, 'invalid_value', 'logprobs'],
      [
        'token id outside the vocabulary',
        () => ({ body: { ...good(), prompt: [1, 2, 10_000_000] } }),
        400,
        'invalid_value',
        'prompt',
      ],
      [
        'two prompts',
        () => ({ body: { ...good(), prompt: ['a', 'b'] } }),
        400,
        'unsupported_parameter',
        'prompt',
      ],
      ['n above --max-n', () => ({ body: { ...good(), n: 9 } }), 400, 'invalid_value', 'n'],
      ['best_of > 1', () => ({ body: { ...good(), best_of: 3 } }), 400, 'unsupported_parameter', 'best_of'],
      ['suffix', () => ({ body: { ...good(), suffix: 'end' } }), 400, 'unsupported_parameter', 'suffix'],
      [
        'logit_bias on a token outside the vocabulary',
        () => ({ body: { ...good(), logit_bias: { '10000000': 10 } } }),
        400,
        'invalid_value',
        'logit_bias',
      ],
      [
        'frequency_penalty outside [-2, 2]',
        () => ({ body: { ...good(), frequency_penalty: 2.5 } }),
        400,
        'invalid_value',
        'frequency_penalty',
      ],
      [
        'presence_penalty outside [-2, 2]',
        () => ({ body: { ...good(), presence_penalty: -3 } }),
        400,
        'invalid_value',
        'presence_penalty',
      ],
      [
        'stream_options without stream',
        () => ({ body: { ...good(), stream_options: { include_usage: true } } }),
        400,
        'invalid_value',
        'stream_options',
      ],
      [
        'an intervention on a neuron outside the last layer',
        () => ({ body: { ...good(), interventions: [{ neuron: '0.1', mode: 'clamp', value: 1 }] } }),
        400,
        'invalid_value',
        'interventions[0].neuron',
      ],
      [
        'an intervention without its value',
        () => ({
          body: { ...good(), interventions: [{ neuron: `${s.engine.spec.nLayers - 1}.1`, mode: 'scale' }] },
        }),
        400,
        'invalid_value',
        'interventions[0].value',
      ],
      [
        'an intervention with an unknown mode',
        () => ({ body: { ...good(), interventions: [{ neuron: '1.1', mode: 'zap' }] } }),
        400,
        'invalid_value',
        'interventions[0].mode',
      ],
      // Issue 11: every numeric field is bounded in the schema.
      [
        'an intervention value beyond float32',
        () => ({ body: { ...good(), interventions: [{ neuron: '1.1', mode: 'add', value: 1e39 }] } }),
        400,
        'invalid_value',
        'interventions[0].value',
      ],
      [
        'seed beyond a safe integer',
        () => ({ body: { ...good(), seed: 1e300 } }),
        400,
        'invalid_value',
        'seed',
      ],
      ['top_k beyond int32', () => ({ body: { ...good(), top_k: 1e12 } }), 400, 'invalid_value', 'top_k'],
      [
        'chat: max_completion_tokens beyond int32',
        () => ({ url: 'chat', body: { ...goodChat(), max_completion_tokens: 1e20 } }),
        400,
        'invalid_value',
        'max_completion_tokens',
      ],
      [
        'chat: tools',
        () => ({
          url: 'chat',
          body: { ...goodChat(), tools: [{ type: 'function', function: { name: 'f' } }] },
        }),
        400,
        'unsupported_parameter',
        'tools',
      ],
      [
        'chat: functions',
        () => ({ url: 'chat', body: { ...goodChat(), functions: [{ name: 'f' }] } }),
        400,
        'unsupported_parameter',
        'functions',
      ],
      [
        'chat: response_format json',
        () => ({ url: 'chat', body: { ...goodChat(), response_format: { type: 'json_object' } } }),
        400,
        'unsupported_parameter',
        'response_format',
      ],
      [
        'chat: n above --max-n',
        () => ({ url: 'chat', body: { ...goodChat(), n: 9 } }),
        400,
        'invalid_value',
        'n',
      ],
      [
        'chat: top_logprobs without logprobs',
        () => ({ url: 'chat', body: { ...goodChat(), top_logprobs: 2 } }),
        400,
        'invalid_value',
        'top_logprobs',
      ],
      [
        'chat: top_logprobs above 20',
        () => ({ url: 'chat', body: { ...goodChat(), logprobs: true, top_logprobs: 21 } }),
        400,
        'invalid_value',
        'top_logprobs',
      ],
      [
        'chat: max_tokens and max_completion_tokens disagree',
        () => ({ url: 'chat', body: { ...goodChat(), max_tokens: 2, max_completion_tokens: 3 } }),
        400,
        'invalid_value',
        'max_tokens',
      ],
      [
        'chat: no messages',
        () => ({ url: 'chat', body: { model, messages: [] } }),
        400,
        'invalid_value',
        'messages',
      ],
      [
        'chat: a tool message',
        () => ({
          url: 'chat',
          body: { model, messages: [{ role: 'tool', content: 'x', tool_call_id: 'c1' }] },
        }),
        400,
        'unsupported_parameter',
        'messages[0].role',
      ],
      [
        'chat: an unknown role',
        () => ({ url: 'chat', body: { model, messages: [{ role: 'wizard', content: 'x' }] } }),
        400,
        'invalid_value',
        'messages[0].role',
      ],
      [
        'chat: an image part',
        () => ({
          url: 'chat',
          body: {
            model,
            messages: [
              { role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] },
            ],
          },
        }),
        400,
        'unsupported_parameter',
        'messages[0].content[0].type',
      ],
      [
        'chat: user message without content',
        () => ({ url: 'chat', body: { model, messages: [{ role: 'user' }] } }),
        400,
        'missing_required_parameter',
        'messages[0].content',
      ],
      [
        'chat: unknown message field',
        () => ({ url: 'chat', body: { model, messages: [{ role: 'user', content: 'x', mood: 1 }] } }),
        400,
        'unknown_parameter',
        'messages[0].mood',
      ],
      ['unknown model', () => ({ body: { ...good(), model: 'gpt-17' } }), 404, 'model_not_found', 'model'],
      [
        'chat: unknown model',
        () => ({ url: 'chat', body: { ...goodChat(), model: 'gpt-17' } }),
        404,
        'model_not_found',
        'model',
      ],
    ];

  for (const [name, make, status, code, param] of cases) {
    it(`${name} -> ${status} ${code}`, async () => {
      const { url, body } = make();
      const r = await postJson(url === 'chat' ? chat : completions, body);
      expect(r.status).toBe(status);
      expectOpenAIError(r.body, status, code, param);
      await stillServes();
    });
  }

  it('accepts the neutral values of parameters it otherwise refuses', async () => {
    const r = await postJson(completions, {
      ...good(),
      n: 1,
      best_of: 1,
      echo: false,
      logit_bias: {},
      frequency_penalty: 0,
      presence_penalty: 0,
      stop: null,
      seed: null,
      user: 'someone',
    });
    expect(r.status).toBe(200);
    const c = await postJson(chat, {
      ...goodChat(),
      tools: [],
      response_format: { type: 'text' },
      store: false,
      parallel_tool_calls: true,
    });
    expect(c.status).toBe(200);
  });

  it('an empty JSON body, a wrong content type and a body over the limit', async () => {
    const empty = await fetch(completions, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    });
    expect(empty.status).toBe(400);
    expectOpenAIError(await empty.json(), 400, 'invalid_json', null);

    const text = await fetch(completions, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(text.status).toBe(415);
    expectOpenAIError(await text.json(), 415, 'unsupported_media_type', null);

    const big = await postJson(completions, { ...good(), prompt: 'x'.repeat(100 * 1024) });
    expect(big.status).toBe(413);
    expectOpenAIError(big.body, 413, 'request_too_large', null);
    await stillServes();
  });

  it('unknown routes are 404 in the same shape', async () => {
    const r = await fetch(`${s.url}/v1/embeddings`, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(404);
    expectOpenAIError(await r.json(), 404, 'route_not_found', null);
  });

  it('the SDK sees typed errors with our codes', async () => {
    await expect(s.client.completions.create({ model: 'nope', prompt: 'x' })).rejects.toMatchObject({
      status: 404,
      code: 'model_not_found',
      param: 'model',
    });
    await expect(s.client.completions.create({ model, prompt: 'x', n: 30 })).rejects.toBeInstanceOf(
      OpenAI.BadRequestError,
    );
  });

  it('counts refused generation requests in telemetry', async () => {
    const before = s.telemetry.rejected.length;
    await postJson(completions, { ...good(), n: 20 });
    await postJson(chat, { ...goodChat(), model: 'nope' });
    expect(s.telemetry.rejected.slice(before)).toEqual([
      ['completions', 'invalid'],
      ['chat_completions', 'invalid'],
    ]);
  });
});

describe('API key', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ apiKey: 'sk-test-key' });
  });
  afterAll(async () => s?.close());

  it('inference routes need the key; probes do not', async () => {
    const body = { model: s.engine.modelId, prompt: 'hi', max_tokens: 1 };
    const none = await postJson(`${s.url}/v1/completions`, body);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expectOpenAIError(none.body, 401, 'invalid_api_key', null);
    const wrong = await postJson(`${s.url}/v1/completions`, body, { authorization: 'Bearer sk-test-kez' });
    expect(wrong.status).toBe(401);
    const models = await fetch(`${s.url}/v1/models`);
    expect(models.status).toBe(401);
    expect(s.telemetry.rejected).toContainEqual(['completions', 'unauthorized']);

    // The SDK sends its apiKey as a bearer token.
    const r = await s.client.completions.create(body);
    expect(r.choices).toHaveLength(1);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
  });
});

describe('readiness', () => {
  it('healthz is 200 at once; readyz and model routes are 503 until the engine has loaded', async () => {
    let loaded!: (e: ServerEngine) => void;
    const engine = new Promise<ServerEngine>((r) => (loaded = r));
    const app = buildServer({
      engine,
      registry: (e) => new InterventionRegistry({ lastLayer: e.spec.nLayers - 1, dMlp: e.spec.dMlp }),
      telemetry: () => new RecordingTelemetry(),
      maxConcurrency: 1,
      maxQueue: 0,
    });
    try {
      expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
      const notReady = await app.inject({ url: '/readyz' });
      expect(notReady.statusCode).toBe(503);
      const models = await app.inject({ url: '/v1/models' });
      expect(models.statusCode).toBe(503);
      expect(models.headers['retry-after']).toBe('1');
      expectOpenAIError(models.json(), 503, 'model_not_ready', null);
      const ivs = await app.inject({ url: '/v1/interventions' });
      expectOpenAIError(ivs.json(), 503, 'model_not_ready', null);

      loaded(await createTestEngine());
      await app.modelReady;
      expect((await app.inject({ url: '/readyz' })).statusCode).toBe(200);
      expect((await app.inject({ url: '/v1/models' })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('a failed load keeps readyz at 503 and says why', async () => {
    const app = buildServer({
      engine: Promise.reject(new Error('model.onnx: file not found')),
      registry: (e) => new InterventionRegistry({ lastLayer: e.spec.nLayers - 1, dMlp: e.spec.dMlp }),
      telemetry: () => new RecordingTelemetry(),
      maxConcurrency: 1,
      maxQueue: 0,
    });
    try {
      await expect(app.modelReady).rejects.toThrow('file not found');
      const r = await app.inject({ url: '/readyz' });
      expect(r.statusCode).toBe(503);
      expect(r.json().reason).toMatch(/file not found/);
      expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});
