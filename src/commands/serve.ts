// `serve`: the sidecar server. It listens at once (so /healthz answers while a large model
// builds), loads the model in the background (/readyz turns 200), and returns after a graceful
// shutdown on SIGINT/SIGTERM.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve } from '../server/serve.ts';
import { DEFAULT_MAX_N } from '../server/routes/openai-params.ts';
import type { UnknownFields } from '../server/routes/context.ts';
import { numberFlag } from './options.ts';
import { setupEngine } from './setup.ts';
import { envOf, LOG_LEVEL_FLAG, MODEL_FLAGS, type CommandSpec, type Flag } from './flags.ts';

/** `serve`'s flags (one line per flag). */
export const SERVE_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  LOG_LEVEL_FLAG,
  { name: 'host', type: 'string', default: '127.0.0.1', env: envOf('host'), help: 'address to listen on' },
  {
    name: 'port',
    type: 'integer',
    min: 0,
    max: 65535,
    default: 8080,
    env: envOf('port'),
    help: 'port; 0 = any free one',
  },
  {
    name: 'max-concurrency',
    type: 'integer',
    min: 1,
    default: 16,
    env: envOf('max-concurrency'),
    help: 'requests generating at once (the most rows one decode step batches)',
  },
  {
    name: 'kv-cache-mb',
    type: 'number',
    min: 1,
    default: 1024,
    env: envOf('kv-cache-mb'),
    help: 'KV cache budget: a request is admitted when its prompt + max_tokens fit (then it waits)',
  },
  {
    name: 'max-prefill-tokens',
    type: 'integer',
    min: 1,
    default: 256,
    env: envOf('max-prefill-tokens'),
    help: 'prompt tokens prefilled between two decode steps (long prompts go in chunks)',
  },
  {
    name: 'max-queue',
    type: 'integer',
    min: 0,
    default: 64,
    env: envOf('max-queue'),
    help: 'requests waiting beyond those (then 429)',
  },
  {
    name: 'served-model-name',
    type: 'string',
    env: envOf('served-model-name'),
    help: 'model id clients send; default: the folder name',
  },
  {
    name: 'interventions',
    type: 'path',
    arg: 'FILE',
    env: envOf('interventions'),
    help: 'declarative interventions (YAML or JSON), applied at start and whenever the file changes',
  },
  {
    name: 'state-dir',
    type: 'path',
    arg: 'DIR',
    env: envOf('state-dir'),
    help: 'keep API-created interventions here across restarts (default: in memory only)',
  },
  {
    name: 'max-interventions',
    type: 'integer',
    min: 1,
    default: 256,
    env: envOf('max-interventions'),
    help: 'live interventions at most, every source counted (then 429)',
  },
  {
    name: 'metrics-token',
    type: 'string',
    env: envOf('metrics-token'),
    help: 'bearer token /metrics requires; unset: the API key when one is set, else open',
  },
  {
    name: 'stream-idle-timeout',
    type: 'number',
    min: 0,
    exclusiveMin: true,
    default: 30,
    env: envOf('stream-idle-timeout'),
    help: 'seconds a streaming client may read nothing before its generation is aborted',
  },
  {
    name: 'max-n',
    type: 'integer',
    min: 1,
    default: DEFAULT_MAX_N,
    env: envOf('max-n'),
    help: 'most choices (n) one request may ask for',
  },
  {
    name: 'unknown-fields',
    type: 'choice',
    choices: ['reject', 'ignore'],
    default: 'reject',
    env: envOf('unknown-fields'),
    help: 'request fields this server does not know: a 400 naming the field, or dropped with a warning',
  },
];

export const serveCommand: CommandSpec = {
  name: 'serve',
  summary: 'run the OpenAI-compatible sidecar server with confidence telemetry',
  flags: SERVE_FLAGS,
  examples: [
    'confidence-sidecar serve',
    'confidence-sidecar serve --model ./my-model --host 0.0.0.0 --port 8000 --unknown-fields ignore',
  ],
  notes:
    'Environment: CONFIDENCE_SIDECAR_API_KEY (bearer token for /v1/*), CONFIDENCE_SIDECAR_ADMIN_TOKEN (interventions API\n' +
    'and the /v1/monitor WebSocket), OTEL_* (trace export). Logs are JSON lines on stdout.',
  run: (values) => runServe(values),
};

/** The watched neurons as one line, and the planted ones when the model is the demo (planted.json). */
function neuronsLine(dir: string, watched: { entropy: string[]; frequency: string[] }): string {
  const planted = join(dir, 'planted.json');
  const demo = existsSync(planted)
    ? ` (demo model, planted: entropy ${(JSON.parse(readFileSync(planted, 'utf8')) as { entropy: string[] }).entropy.join(', ')})`
    : '';
  return `watching entropy neurons ${watched.entropy.join(', ') || '-'}; frequency neurons ${watched.frequency.join(', ') || '-'}${demo}\n`;
}

export async function runServe(values: Record<string, unknown>): Promise<void> {
  const port = numberFlag(values, 'port', { min: 0, max: 65535, integer: true })!;
  const maxConcurrency = numberFlag(values, 'max-concurrency', { min: 1, integer: true })!;
  const maxQueue = numberFlag(values, 'max-queue', { min: 0, integer: true })!;
  const idleS = numberFlag(values, 'stream-idle-timeout', { min: 0, exclusiveMin: true }) ?? 30;
  await serve({
    host: values.host as string,
    port,
    maxConcurrency,
    maxQueue,
    interventionsFile: (values.interventions as string | undefined) ?? null,
    stateDir: (values['state-dir'] as string | undefined) ?? null,
    maxN: numberFlag(values, 'max-n', { min: 1, integer: true }) ?? DEFAULT_MAX_N,
    streamIdleTimeoutMs: idleS * 1000,
    ...(values['metrics-token'] !== undefined ? { metricsToken: values['metrics-token'] as string } : {}),
    unknownFields: (values['unknown-fields'] as UnknownFields | undefined) ?? 'reject',
    logLevel: values['log-level'] as string,
    load: async () => {
      const { engine, registry, source, catalogue } = await setupEngine(values, {
        modelId: values['served-model-name'] as string | undefined,
      });
      process.stderr.write(neuronsLine(source.dir, engine.watched));
      return { engine, registry, catalogue };
    },
    onListening: (url) => process.stderr.write(`confidence-sidecar listening on ${url}\n`),
  });
}
