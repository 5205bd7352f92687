// `serve`: the sidecar server. It listens at once (so /healthz answers while a large model
// builds), loads the model in the background (/readyz turns 200), and returns after a graceful
// shutdown on SIGINT/SIGTERM.

import { serve } from '../server/serve.ts';
import { numberFlag } from './options.ts';
import { setupEngine } from './setup.ts';

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
    streamIdleTimeoutMs: idleS * 1000,
    ...(values['metrics-token'] !== undefined ? { metricsToken: values['metrics-token'] as string } : {}),
    load: async () => {
      const { engine, registry } = await setupEngine(values, {
        modelId: values['served-model-name'] as string | undefined,
      });
      return { engine, registry };
    },
    onListening: (url) => process.stderr.write(`confidence-sidecar listening on ${url}\n`),
  });
}
