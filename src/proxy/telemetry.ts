// Proxy mode's telemetry is serve mode's (src/server/telemetry): the same metrics, monitor events
// and spans, fed shadow records. Its registry labels every series mode="shadow", so a Prometheus
// that scrapes serve-mode and proxy-mode sidecars tells the local model's own generations from its
// scores of an upstream's.

import type { FastifyBaseLogger } from 'fastify';
import type { ServerEngine } from '../server/app.ts';
import { Telemetry, type TelemetryOptions } from '../server/telemetry/index.ts';

export function shadowTelemetry(
  engine: ServerEngine,
  logger?: FastifyBaseLogger,
  extra: Partial<TelemetryOptions> = {},
): Telemetry {
  const t = new Telemetry({
    model: engine.modelId,
    entropyNeurons: engine.catalogue.entropy,
    frequencyNeurons: engine.catalogue.frequency,
    ...(logger ? { logger } : {}),
    ...(engine.replica ? { replica: engine.replica } : {}),
    ...extra,
  });
  t.registry.setDefaultLabels({ mode: 'shadow' });
  return t;
}
