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
  await serve({
    host: values.host as string,
    port,
    maxConcurrency,
    maxQueue,
    interventionsFile: (values.interventions as string | undefined) ?? null,
    stateDir: (values['state-dir'] as string | undefined) ?? null,
    load: async () => {
      const { engine, registry, catalogue } = await setupEngine(values, { modelId: values['served-model-name'] as string | undefined });
      return { engine, registry, catalogue };
    },
    onListening: (url) => process.stderr.write(`confidence-sidecar listening on ${url}\n`),
  });
}
