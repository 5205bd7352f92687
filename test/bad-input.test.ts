// The standing bad-input suite (issue 11): malformed and hostile requests across every route, each
// spoken as raw HTTP/1.1 so nothing is tidied up by a client. Each case asserts the status, the
// OpenAI error shape {"error": {message, type, param, code}} with its stable code, and that
// /healthz still answers afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { buildServer, type ServerEngine } from '../src/server/app.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { httpText, rawRequest, type RawResponse } from './helpers/raw-http.ts';
import { createTestEngine } from './helpers/server.ts';

const ADMIN = 'bad-input-admin';
const KEY = 'bad-input-key';
const key = { authorization: `Bearer ${KEY}` };
const admin = { authorization: `Bearer ${ADMIN}` };
const json = { 'content-type': 'application/json' };

interface Case {
  name: string;
  /** The raw request text (built once the server and model are known). */
  request: () => string;
  status: number;
  /** The error code; null for a case that must succeed (status < 300). */
  code: string | null;
}

const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  413: 'invalid_request_error',
  414: 'invalid_request_error',
  415: 'invalid_request_error',
  417: 'invalid_request_error',
  426: 'invalid_request_error',
  431: 'invalid_request_error',
};

let engine: ServerEngine;
let port = 0;
let app: ReturnType<typeof buildServer>;

const model = () => engine.modelId;
const lastLayer = () => engine.spec.nLayers - 1;
const post = (path: string, body: unknown, headers: Record<string, string> = key) =>
  httpText('POST', path, { ...json, ...headers }, typeof body === 'string' ? body : JSON.stringify(body));
const completion = (extra: Record<string, unknown>) => ({
  model: model(),
  prompt: 'The moon',
  max_tokens: 1,
  ...extra,
});
const chat = (extra: Record<string, unknown>) => ({
  model: model(),
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 1,
  ...extra,
});

const cases: Case[] = [];
const add = (name: string, request: () => string, status: number, code: string | null) =>
  cases.push({ name, request, status, code });

// ------------------------------------------------------------------ JSON
const badJson = [
  '{',
  '{"model": ',
  '[1, 2',
  'nul',
  '{"a": 1}}',
  "{'model': 'x'}",
  '{"model": "x",}',
  '{"model": NaN}',
  '{"prompt": Infinity}',
  '{"model": "x" "prompt": "y"}',
];
for (const route of ['/v1/completions', '/v1/chat/completions']) {
  badJson.forEach((b, i) => add(`JSON ${route} #${i} ${b}`, () => post(route, b), 400, 'invalid_json'));
}
badJson
  .slice(0, 5)
  .forEach((b, i) =>
    add(`JSON interventions #${i}`, () => post('/v1/interventions', b, admin), 400, 'invalid_json'),
  );
for (const [name, body, code] of [
  ['array body', '[]', 'invalid_type'],
  ['string body', '"hello"', 'invalid_type'],
  ['number body', '42', 'invalid_type'],
  ['empty object', '{}', 'missing_required_parameter'],
] as const) {
  add(`JSON completions: ${name}`, () => post('/v1/completions', body), 400, code);
  add(`JSON chat: ${name}`, () => post('/v1/chat/completions', body), 400, code);
}
add('JSON: empty body with a JSON content type', () => post('/v1/completions', ''), 400, 'invalid_json');

// ------------------------------------------------------------------ content types
for (const type of [
  'text/plain',
  'application/xml',
  'multipart/form-data; boundary=x',
  'application/x-www-form-urlencoded',
  'image/png',
]) {
  add(
    `content type ${type} (completions)`,
    () =>
      httpText('POST', '/v1/completions', { ...key, 'content-type': type }, JSON.stringify(completion({}))),
    415,
    'unsupported_media_type',
  );
  add(
    `content type ${type} (interventions)`,
    () => httpText('POST', '/v1/interventions', { ...admin, 'content-type': type }, '{}'),
    415,
    'unsupported_media_type',
  );
}

// ------------------------------------------------------------------ sizes
add(
  'body over the limit',
  () => post('/v1/completions', completion({ prompt: 'x'.repeat(300_000) })),
  413,
  'request_too_large',
);
add(
  'declared Content-Length over the limit',
  () => httpText('POST', '/v1/completions', { ...key, ...json, 'content-length': '999999999' }, '{}'),
  413,
  'request_too_large',
);
add(
  'prompt text past any context (cheap refusal)',
  () => post('/v1/completions', completion({ prompt: 'lorem ipsum '.repeat(20_000) })),
  400,
  'context_length_exceeded',
);
add(
  'chat content past any context (cheap refusal)',
  () => post('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'ab '.repeat(70_000) }] })),
  400,
  'context_length_exceeded',
);
add(
  'five stop strings',
  () => post('/v1/completions', completion({ stop: ['a', 'b', 'c', 'd', 'e'] })),
  400,
  'invalid_value',
);
add(
  '65 interventions',
  () =>
    post(
      '/v1/completions',
      completion({
        interventions: Array.from({ length: 65 }, () => ({
          neuron: `${lastLayer()}.1`,
          mode: 'clamp',
          value: 1,
        })),
      }),
    ),
  400,
  'invalid_value',
);
add(
  'model name over 256 characters',
  () => post('/v1/completions', completion({ model: 'm'.repeat(100_000) })),
  400,
  'invalid_value',
);

// ------------------------------------------------------------------ types and ranges
const numeric: [string, unknown, string][] = [
  ['max_tokens', '5', 'invalid_type'],
  ['max_tokens', 0, 'invalid_value'],
  ['max_tokens', -1, 'invalid_value'],
  ['max_tokens', 1.5, 'invalid_type'],
  ['max_tokens', 1e300, 'invalid_value'],
  ['max_tokens', true, 'invalid_type'],
  ['max_tokens', [1], 'invalid_type'],
  ['max_tokens', { n: 1 }, 'invalid_type'],
  ['temperature', -0.1, 'invalid_value'],
  ['temperature', 2.5, 'invalid_value'],
  ['temperature', '1', 'invalid_type'],
  ['temperature', 1e308, 'invalid_value'],
  ['top_p', 0, 'invalid_value'],
  ['top_p', 1.01, 'invalid_value'],
  ['top_p', -1, 'invalid_value'],
  ['top_p', 'high', 'invalid_type'],
  ['top_k', -1, 'invalid_value'],
  ['top_k', 0.5, 'invalid_type'],
  ['top_k', 1e12, 'invalid_value'],
  ['top_k', 'all', 'invalid_type'],
  ['seed', 1e300, 'invalid_value'],
  ['seed', -1e300, 'invalid_value'],
  ['seed', 1.5, 'invalid_type'],
  ['seed', 'abc', 'invalid_type'],
  ['stream', 'yes', 'invalid_type'],
  ['stream', 1, 'invalid_type'],
  ['confidence', 'true', 'invalid_type'],
  ['stop', '', 'invalid_value'],
  ['stop', 5, 'invalid_type'],
  ['stop', [1], 'invalid_type'],
  ['user', 5, 'invalid_type'],
  ['stream_options', 'x', 'invalid_type'],
];
for (const [field, value, code] of numeric) {
  add(
    `completions ${field}=${JSON.stringify(value)}`,
    () => post('/v1/completions', completion({ [field]: value })),
    400,
    code,
  );
}
for (const [field, value, code] of [
  ['logprobs', 6, 'invalid_value'],
  ['logprobs', -1, 'invalid_value'],
  ['logprobs', 'x', 'invalid_type'],
  ['prompt', 5, 'invalid_type'],
  ['prompt', [], 'invalid_value'],
  ['prompt', [-1], 'invalid_value'],
  ['prompt', [1e12], 'invalid_value'],
  ['prompt', [1.5], 'invalid_type'],
  ['prompt', null, 'invalid_type'],
  ['model', 5, 'invalid_type'],
  ['model', '', 'invalid_value'],
] as const) {
  add(
    `completions ${field}=${JSON.stringify(value)}`,
    () => post('/v1/completions', completion({ [field]: value })),
    400,
    code,
  );
}
for (const [field, value, code] of [
  ['max_completion_tokens', 0, 'invalid_value'],
  ['max_completion_tokens', 1e20, 'invalid_value'],
  ['top_logprobs', 21, 'invalid_value'],
  ['top_logprobs', -1, 'invalid_value'],
  ['logprobs', 'yes', 'invalid_type'],
  ['messages', [], 'invalid_value'],
  ['messages', 'hi', 'invalid_type'],
  ['messages', [{ role: 'user' }], 'missing_required_parameter'],
  ['messages', [{ content: 'hi' }], 'missing_required_parameter'],
  ['messages', [{ role: 'wizard', content: 'hi' }], 'invalid_value'],
  ['messages', [{ role: 'user', content: 5 }], 'invalid_type'],
  ['messages', [{ role: 'user', content: [{ type: 'image_url' }] }], 'unsupported_parameter'],
  ['messages', [{ role: 'tool', content: 'x' }], 'unsupported_parameter'],
  ['messages', [{ role: 'user', content: 'x', extra: 1 }], 'unknown_parameter'],
  ['tools', [{ type: 'function' }], 'unsupported_parameter'],
  ['n', 2, 'unsupported_parameter'],
] as const) {
  add(
    `chat ${field}=${JSON.stringify(value).slice(0, 60)}`,
    () => post('/v1/chat/completions', chat({ [field]: value })),
    400,
    code,
  );
}
add('unknown parameter', () => post('/v1/completions', completion({ foo: 1 })), 400, 'unknown_parameter');
add('unknown model', () => post('/v1/completions', completion({ model: 'gpt-4' })), 404, 'model_not_found');

// ------------------------------------------------------------------ unicode
for (const [name, prompt] of [
  ['a lone surrogate', '\ud800'],
  ['NUL bytes', 'a\u0000b'],
  ['right-to-left marks', '\u202ethe moon'],
  ['emoji and combining marks', '🌕 e\u0301'],
  ['noncharacters', '\uffff\ufffe'],
]) {
  add(`unicode prompt: ${name}`, () => post('/v1/completions', completion({ prompt })), 200, null);
}
add(
  'unicode model name',
  () => post('/v1/completions', completion({ model: 'мodel-🌕' })),
  404,
  'model_not_found',
);
add(
  'latin-1 characters in the model name',
  () => post('/v1/completions', `{"model": "\xff\xfe", "prompt": "x"}`),
  404,
  'model_not_found',
);

// ------------------------------------------------------------------ context length
add(
  'prompt ids longer than the context',
  () => post('/v1/completions', completion({ prompt: Array(engine.spec.maxPositions + 1).fill(1) })),
  400,
  'context_length_exceeded',
);
add(
  'max_tokens past the context',
  () => post('/v1/completions', completion({ max_tokens: engine.spec.maxPositions })),
  400,
  'context_length_exceeded',
);
add(
  'chat max_tokens past the context',
  () => post('/v1/chat/completions', chat({ max_tokens: engine.spec.maxPositions * 2 })),
  400,
  'context_length_exceeded',
);
add(
  'token id past the vocabulary',
  () => post('/v1/completions', completion({ prompt: [engine.spec.vocabSize] })),
  400,
  'invalid_value',
);

// ------------------------------------------------------------------ interventions
const iv = (extra: Record<string, unknown>) =>
  post('/v1/interventions', { neuron: `${lastLayer()}.1`, mode: 'clamp', value: 1, ...extra }, admin);
for (const neuron of ['', 'x', '1', '1.2.3', '-1.0', '99.0', 'a.b', ' 1.1'])
  add(`intervention neuron ${JSON.stringify(neuron)}`, () => iv({ neuron }), 400, 'invalid_value');
add(
  'intervention neuron past the layer width',
  () => iv({ neuron: `${lastLayer()}.${engine.spec.dMlp}` }),
  400,
  'invalid_value',
);
add('intervention on a lower layer', () => iv({ neuron: `${lastLayer() - 1}.1` }), 400, 'invalid_value');
add('intervention neuron over 32 characters', () => iv({ neuron: '1'.repeat(40) }), 400, 'invalid_value');
for (const mode of ['zero', '', 'CLAMP', 5])
  add(
    `intervention mode ${JSON.stringify(mode)}`,
    () => iv({ mode }),
    400,
    mode === 5 ? 'invalid_value' : 'invalid_value',
  );
for (const [value, code] of [
  ['1', 'invalid_type'],
  [3.5e38, 'invalid_value'],
  [-3.5e38, 'invalid_value'],
  [1e308, 'invalid_value'],
  [true, 'invalid_type'],
  [[1], 'invalid_type'],
] as const)
  add(`intervention value ${JSON.stringify(value)}`, () => iv({ value }), 400, code);
add('intervention clamp without a value', () => iv({ value: undefined }), 400, 'invalid_value');
for (const [ttl, code] of [
  [0, 'invalid_value'],
  [-1, 'invalid_value'],
  [8.64e12, 'invalid_value'],
  [1e300, 'invalid_value'],
  ['10', 'invalid_type'],
] as const)
  add(`intervention ttl_s ${JSON.stringify(ttl)}`, () => iv({ ttl_s: ttl }), 400, code);
for (const rid of ['', 'has space', 'x'.repeat(129), 'new\nline', '<script>'])
  add(
    `intervention request_id ${JSON.stringify(rid).slice(0, 20)}`,
    () => iv({ request_id: rid }),
    400,
    'invalid_value',
  );
add('intervention unknown field', () => iv({ colour: 'red' }), 400, 'unknown_parameter');
add(
  'GET an unknown intervention',
  () => httpText('GET', '/v1/interventions/iv_nope', admin),
  404,
  'intervention_not_found',
);
add(
  'DELETE an unknown intervention',
  () => httpText('DELETE', '/v1/interventions/iv_nope', admin),
  404,
  'intervention_not_found',
);
add(
  'GET an intervention with a 10 KB id',
  () => httpText('GET', `/v1/interventions/${'i'.repeat(10_000)}`, admin),
  414,
  'uri_too_long',
);
add(
  'completions prompt=[[]] is the BOS token, as OpenAI reads an empty prompt',
  () => post('/v1/completions', completion({ prompt: [[]] })),
  200,
  null,
);
add(
  'inline intervention on a bad neuron',
  () => post('/v1/completions', completion({ interventions: [{ neuron: '0.0', mode: 'clamp', value: 1 }] })),
  400,
  'invalid_value',
);
add(
  'inline intervention with a TTL',
  () =>
    post(
      '/v1/completions',
      completion({ interventions: [{ neuron: `${lastLayer()}.1`, mode: 'clamp', value: 1, ttl_s: 5 }] }),
    ),
  400,
  'unknown_parameter',
);

// ------------------------------------------------------------------ paths
for (const path of [
  '/v2/completions',
  '/v1/completion',
  '/v1/completions/extra',
  '/',
  '/v1',
  '/v1/models/x/y',
  '/.env',
  '/v1/../etc/passwd',
])
  add(`unknown path ${path}`, () => httpText('GET', path, key), 404, 'route_not_found');
add('bad percent-encoding', () => httpText('GET', '/v1/interventions/%zz', admin), 400, 'invalid_value');
add('a 10 KB path', () => httpText('GET', `/v1/${'p'.repeat(10_000)}`, key), 404, 'route_not_found');
add(
  'a 30 KB request line',
  () => httpText('GET', `/v1/${'p'.repeat(30_000)}`, key),
  431,
  'headers_too_large',
);
add('unknown model by path', () => httpText('GET', '/v1/models/gpt-4', key), 404, 'model_not_found');

// ------------------------------------------------------------------ methods
for (const [method, path] of [
  ['GET', '/v1/completions'],
  ['PUT', '/v1/completions'],
  ['DELETE', '/v1/chat/completions'],
  ['PATCH', '/v1/interventions'],
  ['PUT', '/healthz'],
  ['POST', '/healthz'],
  ['POST', '/metrics'],
  ['DELETE', '/v1/models'],
])
  add(
    `method ${method} ${path}`,
    () =>
      httpText(method, path, {
        ...key,
        ...(method === 'GET' || method === 'DELETE' ? {} : { 'content-length': '0' }),
      }),
    404,
    'route_not_found',
  );
add('method HEAD /healthz', () => httpText('HEAD', '/healthz'), 200, null);

// ------------------------------------------------------------------ headers
add(
  'an invalid X-Request-Id is replaced, not refused',
  () => httpText('GET', '/v1/models', { ...key, 'x-request-id': 'bad id\twith tab' }),
  200,
  null,
);
add(
  'a 40 KB header',
  () => httpText('GET', '/healthz', { 'x-big': 'h'.repeat(40_000) }),
  431,
  'headers_too_large',
);
add(
  'Content-Length not a number',
  () => httpText('POST', '/v1/completions', { ...key, ...json, 'content-length': 'abc' }, '{}'),
  400,
  'invalid_http_request',
);
add(
  'Content-Length and Transfer-Encoding together',
  () =>
    httpText(
      'POST',
      '/v1/completions',
      { ...key, ...json, 'content-length': '2', 'transfer-encoding': 'chunked' },
      '{}',
    ),
  400,
  'invalid_http_request',
);
add(
  'broken chunked encoding',
  () =>
    httpText(
      'POST',
      '/v1/completions',
      { ...key, ...json, 'transfer-encoding': 'chunked' },
      'zz\r\n{}\r\n0\r\n\r\n',
    ),
  400,
  'invalid_http_request',
);
add(
  'Expect: something',
  () => httpText('POST', '/v1/completions', { ...key, ...json, expect: 'fancy-feature' }, '{}'),
  417,
  'expectation_failed',
);
add(
  'Connection: Upgrade on /healthz',
  () => httpText('GET', '/healthz', { connection: 'Upgrade', upgrade: 'h2c' }),
  200,
  null,
);
add(
  'Connection: Upgrade on a completion',
  () => post('/v1/completions', completion({}), { ...key, connection: 'Upgrade', upgrade: 'h2c' }),
  200,
  null,
);
add(
  'Connection: Upgrade on an unknown path',
  () => httpText('GET', '/nope', { connection: 'Upgrade', upgrade: 'websocket' }),
  404,
  'route_not_found',
);
add(
  'Upgrade with a chunked body',
  () =>
    httpText(
      'POST',
      '/v1/completions',
      { ...key, ...json, connection: 'Upgrade', upgrade: 'h2c', 'transfer-encoding': 'chunked' },
      '2\r\n{}\r\n0\r\n\r\n',
    ),
  400,
  'invalid_http_request',
);

// ------------------------------------------------------------------ auth
for (const [name, headers] of [
  ['no key', {}],
  ['wrong key', { authorization: 'Bearer nope' }],
  ['Basic scheme', { authorization: `Basic ${KEY}` }],
  ['empty bearer', { authorization: 'Bearer ' }],
  ['key without scheme', { authorization: KEY }],
] as [string, Record<string, string>][]) {
  add(
    `auth completions: ${name}`,
    () => post('/v1/completions', completion({}), headers),
    401,
    'invalid_api_key',
  );
  add(
    `auth interventions: ${name}`,
    () => httpText('GET', '/v1/interventions', headers),
    401,
    'invalid_api_key',
  );
}
add(
  'auth: the API key is not the admin token',
  () => httpText('GET', '/v1/interventions', key),
  401,
  'invalid_api_key',
);
add(
  'auth: a key in the query string is not a key',
  () => httpText('GET', `/v1/models?token=${KEY}`),
  401,
  'invalid_api_key',
);
add('auth: /v1/neurons without the key', () => httpText('GET', '/v1/neurons'), 401, 'invalid_api_key');
add('auth: /metrics without the key', () => httpText('GET', '/metrics'), 401, 'invalid_api_key');
add('auth: the admin token works on inference routes', () => httpText('GET', '/v1/models', admin), 200, null);
add(
  'auth: claiming a request-scoped id without the admin token',
  () => post('/v1/completions', completion({}), { ...key, 'x-request-id': 'claimed-id' }),
  403,
  'permission_denied',
);

// ------------------------------------------------------------------ WebSocket handshakes
const ws = (headers: Record<string, string>, method = 'GET', path = '/v1/monitor/stream') =>
  httpText(method, path, {
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
    ...headers,
  });
add('ws: no token', () => ws({}), 401, 'invalid_api_key');
add('ws: wrong token', () => ws({ authorization: 'Bearer nope' }), 401, 'invalid_api_key');
add('ws: wrong ?token=', () => ws({}, 'GET', '/v1/monitor/stream?token=nope'), 401, 'invalid_api_key');
add('ws: the API key is not the admin token', () => ws(key), 401, 'invalid_api_key');
add(
  'ws: bad Sec-WebSocket-Key',
  () => ws({ ...admin, 'sec-websocket-key': 'short' }),
  400,
  'invalid_websocket_handshake',
);
add(
  'ws: bad version',
  () => ws({ ...admin, 'sec-websocket-version': '7' }),
  400,
  'invalid_websocket_handshake',
);
add(
  'ws: no version',
  () => ws({ ...admin, 'sec-websocket-version': '' }),
  400,
  'invalid_websocket_handshake',
);
add(
  'ws: Upgrade to something else',
  () => ws({ ...admin, upgrade: 'h2c' }),
  400,
  'invalid_websocket_handshake',
);
add('ws: POST', () => ws({ ...admin, 'content-length': '0' }, 'POST'), 405, 'method_not_allowed');
add(
  'ws: plain GET of the stream',
  () => httpText('GET', '/v1/monitor/stream', admin),
  426,
  'upgrade_required',
);
add('ws: another path', () => ws(admin, 'GET', '/v1/monitor/other'), 404, 'route_not_found');

describe('bad-input suite', () => {
  beforeAll(async () => {
    engine = await createTestEngine();
    app = buildServer({
      engine,
      registry: (e) => new InterventionRegistry({ lastLayer: e.spec.nLayers - 1, dMlp: e.spec.dMlp }),
      telemetry: (e) =>
        new Telemetry({
          model: e.modelId,
          entropyNeurons: e.catalogue.entropy,
          frequencyNeurons: e.catalogue.frequency,
          env: {},
        }),
      adminToken: ADMIN,
      apiKey: KEY,
      maxConcurrency: 2,
      maxQueue: 8,
      bodyLimit: 256 * 1024,
      shutdownGraceMs: 0,
    });
    await app.modelReady;
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as { port: number }).port;
    // The target of the claim case: a request-scoped intervention registered by the admin.
    const claimed = await rawRequest(
      port,
      post(
        '/v1/interventions',
        { neuron: `${lastLayer()}.2`, mode: 'clamp', value: 1, request_id: 'claimed-id' },
        admin,
      ),
    );
    expect(claimed.status).toBe(201);
  });
  afterAll(async () => app?.close());

  it('has at least 150 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(150);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r: RawResponse = await rawRequest(port, c.request());
    expect(r.status, r.body.slice(0, 300)).toBe(c.status);
    if (c.code !== null) {
      const body = JSON.parse(r.body);
      expect(Object.keys(body)).toEqual(['error']);
      expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
      expect(body.error.code).toBe(c.code);
      expect(body.error.type).toBe(TYPES[c.status]);
      expect(typeof body.error.message).toBe('string');
      expect(body.error.message.length).toBeGreaterThan(0);
      expect(body.error.message.length).toBeLessThanOrEqual(2000);
    }
    const health = await rawRequest(port, httpText('GET', '/healthz'));
    expect(health.status).toBe(200);
  });
});
