// Bad-input cases: JSON, content types, sizes, types and ranges.
import { httpText } from './raw-http.ts';
import { add, admin, chat, completion, json, key, lastLayer, post } from './bad-input-cases.ts';

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
  ['n', 9, 'invalid_value'], // above the default --max-n (8)
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
