// `proxy`: the sidecar in front of an OpenAI-compatible upstream (vLLM, TGI, llama.cpp, SGLang, a
// hosted API). Every /v1/ request is relayed byte for byte; chat and completions streams are also
// scored by the local model in the shadow. See docs/PROXY.md.

import { InvalidInputError } from '../errors.ts';
import { DEFAULT_TIMEOUTS } from '../proxy/app.ts';
import { runProxy } from '../proxy/run.ts';
import { numberFlag, requiredString } from './options.ts';
import { setupEngine } from './setup.ts';
import { envOf, LOG_LEVEL_FLAG, MODEL_FLAGS, type CommandSpec, type Flag } from './flags.ts';

/** `proxy`'s flags (one line per flag). */
export const PROXY_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  LOG_LEVEL_FLAG,
  { name: 'upstream', type: 'string', arg: 'URL', required: true, env: envOf('upstream'), help: 'the OpenAI-compatible server to front, e.g. http://127.0.0.1:8000' },
  { name: 'host', type: 'string', default: '127.0.0.1', env: envOf('host'), help: 'address to listen on' },
  { name: 'port', type: 'integer', min: 0, max: 65535, default: 8080, env: envOf('port'), help: 'port; 0 = any free one' },
  { name: 'upstream-api-key-env', type: 'string', arg: 'NAME', help: "environment variable whose value replaces the client's Authorization upstream" },
  { name: 'connect-timeout-ms', type: 'integer', min: 0, default: DEFAULT_TIMEOUTS.connectMs, env: envOf('connect-timeout-ms'), help: 'connecting to the upstream (then 504)' },
  { name: 'first-byte-timeout-ms', type: 'integer', min: 0, default: DEFAULT_TIMEOUTS.firstByteMs, env: envOf('first-byte-timeout-ms'), help: "the upstream's first byte (then 504)" },
  { name: 'idle-timeout-ms', type: 'integer', min: 0, default: DEFAULT_TIMEOUTS.idleMs, env: envOf('idle-timeout-ms'), help: 'silence between chunks (then an in-stream error event)' },
  { name: 'total-timeout-ms', type: 'integer', min: 0, default: DEFAULT_TIMEOUTS.totalMs, env: envOf('total-timeout-ms'), help: 'a whole request' },
  { name: 'max-pending-tokens', type: 'integer', min: 1, default: 8192, env: envOf('max-pending-tokens'), help: 'tokens waiting for the shadow scorer; beyond, tokens are skipped and counted' },
  { name: 'served-model-name', type: 'string', env: envOf('served-model-name'), help: 'model id for the local replica; default: the folder name' },
  { name: 'relay-only', type: 'boolean', env: envOf('relay-only'), help: 'relay without loading a local model (no shadow scoring)' },
];

export const proxyCommand: CommandSpec = {
  name: 'proxy',
  summary: 'front an OpenAI-compatible endpoint: relay its traffic untouched and score every streamed token',
  flags: PROXY_FLAGS,
  examples: [
    'confidence-sidecar proxy --upstream http://127.0.0.1:8000 --model ./replica',
    'confidence-sidecar proxy --upstream https://api.example.com --upstream-api-key-env UPSTREAM_KEY --port 9000',
  ],
  notes: 'See docs/PROXY.md: routes, timeouts, the in-stream error shape, fail-open scoring.',
  run: (values) => runProxyCommand(values),
};

function upstreamUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new InvalidInputError(`--upstream must be a URL such as http://127.0.0.1:8000, got "${raw}"`, 'upstream');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new InvalidInputError(`--upstream must be http:// or https://, got "${raw}"`, 'upstream');
  return u.href;
}

export async function runProxyCommand(values: Record<string, unknown>): Promise<void> {
  const upstream = upstreamUrl(requiredString(values, 'upstream'));
  const ms = (flag: string) => numberFlag(values, flag, { min: 0, integer: true })!;
  let upstreamApiKey: string | null = null;
  const keyEnv = values['upstream-api-key-env'] as string | undefined;
  if (keyEnv !== undefined) {
    upstreamApiKey = process.env[keyEnv] || null;
    if (!upstreamApiKey)
      throw new InvalidInputError(`--upstream-api-key-env names ${keyEnv}, which is unset or empty`, 'upstream-api-key-env');
  }
  await runProxy({
    upstream,
    host: values.host as string,
    port: numberFlag(values, 'port', { min: 0, max: 65535, integer: true })!,
    timeouts: {
      connectMs: ms('connect-timeout-ms'),
      firstByteMs: ms('first-byte-timeout-ms'),
      idleMs: ms('idle-timeout-ms'),
      totalMs: ms('total-timeout-ms'),
    },
    upstreamApiKey,
    maxPendingTokens: numberFlag(values, 'max-pending-tokens', { min: 1, integer: true })!,
    adminToken: process.env.CONFIDENCE_SIDECAR_ADMIN_TOKEN || null,
    logLevel: values['log-level'] as string,
    load:
      values['relay-only'] === true
        ? null
        : async () =>
            (await setupEngine(values, { modelId: values['served-model-name'] as string | undefined })).engine,
    onListening: (url) => process.stderr.write(`confidence-sidecar proxy listening on ${url}, upstream ${upstream}\n`),
  });
}
