// Bad-input cases: unicode, context length, interventions, paths, methods, headers, auth, WebSocket.
import { httpText } from './raw-http.ts';
import { add, admin, chat, completion, engine, json, key, KEY, lastLayer, post } from './bad-input-cases.ts';

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
  '/console/nope.js', // GET / is the operator console
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
// A known path with the wrong method is 405 (test/route-methods.test.ts checks the Allow header).
for (const [method, path] of [
  ['GET', '/v1/completions'],
  ['PUT', '/v1/completions'],
  ['DELETE', '/v1/chat/completions'],
  ['PATCH', '/v1/interventions'],
  ['PUT', '/healthz'],
  ['POST', '/healthz'],
  ['POST', '/metrics'],
  ['DELETE', '/v1/models'],
  ['OPTIONS', '/v1/completions'],
])
  add(
    `method ${method} ${path}`,
    () =>
      httpText(method, path, {
        ...key,
        ...(method === 'GET' || method === 'DELETE' || method === 'OPTIONS' ? {} : { 'content-length': '0' }),
      }),
    405,
    'method_not_allowed',
  );
add(
  'method PATCH on an unknown path',
  () => httpText('PATCH', '/v1/nope', { ...key, 'content-length': '0' }),
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
