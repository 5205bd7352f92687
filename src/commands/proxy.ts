// `proxy`: the sidecar in front of an OpenAI-compatible upstream (vLLM, TGI, llama.cpp, SGLang, a
// hosted API). Every /v1/ request is relayed byte for byte; chat and completions streams are also
// scored by the local model in the shadow. See docs/PROXY.md.

import { InvalidInputError } from '../errors.ts';
import { DEFAULT_TIMEOUTS } from '../proxy/app.ts';
import { runProxy } from '../proxy/run.ts';
import { numberFlag, requiredString } from './options.ts';
import { setupEngine } from './setup.ts';

/** The flags, for the CLI's option table (parseArgs or commander: names and defaults only). */
export const PROXY_FLAGS = {
  upstream: { type: 'string' },
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  'upstream-api-key-env': { type: 'string' },
  'connect-timeout-ms': { type: 'string', default: String(DEFAULT_TIMEOUTS.connectMs) },
  'first-byte-timeout-ms': { type: 'string', default: String(DEFAULT_TIMEOUTS.firstByteMs) },
  'idle-timeout-ms': { type: 'string', default: String(DEFAULT_TIMEOUTS.idleMs) },
  'total-timeout-ms': { type: 'string', default: String(DEFAULT_TIMEOUTS.totalMs) },
  'max-pending-tokens': { type: 'string', default: '8192' },
  'served-model-name': { type: 'string' },
  'no-score': { type: 'boolean', default: false },
} as const;

export const PROXY_USAGE =
  'proxy --upstream URL [--model DIR] [--host H] [--port 8080] [--upstream-api-key-env NAME] ' +
  '[--connect-timeout-ms 10000] [--first-byte-timeout-ms 120000] [--idle-timeout-ms 60000] ' +
  '[--total-timeout-ms 600000] [--max-pending-tokens 8192] [--no-score] [--catalogue FILE] [--device D]';

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
    load:
      values['no-score'] === true
        ? null
        : async () =>
            (await setupEngine(values, { modelId: values['served-model-name'] as string | undefined })).engine,
    onListening: (url) => process.stderr.write(`confidence-sidecar proxy listening on ${url}, upstream ${upstream}\n`),
  });
}
