// The sidecar's Prometheus metrics. One table (METRIC_DEFINITIONS) names every metric, its type,
// labels and buckets; the dashboards are checked against it, so a panel cannot query a metric that
// does not exist. Naming follows Prometheus conventions: base units in the name (seconds, nats),
// `_total` on counters, no colons (those are reserved for recording rules).
//
// Labels are bounded by construction:
//   model     the served model id given at startup (never the client-supplied string)
//   endpoint  'completions' | 'chat_completions'
//   outcome   'success' | 'aborted' | 'error' | 'rejected_queue_full' | 'invalid' | 'unauthorized'
//             | 'abandoned_in_queue' (the client hung up while waiting for a slot)
//   neuron    a `LAYER.INDEX` address from the startup catalogue (others are ignored)
//   role      'entropy' | 'frequency'
//
// Neuron activations are a histogram only (no "last value" gauge): a gauge sampled every scrape shows one
// arbitrary token out of hundreds, while the histogram's _sum/_count give the exact mean activation over
// any window and its buckets give the distribution and quantiles per neuron.

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import * as buckets from './buckets.ts';

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricDefinition {
  name: string;
  type: MetricType;
  help: string;
  labels: readonly string[];
  buckets?: readonly number[];
}

function def<const T extends MetricType, const L extends readonly string[]>(
  name: string,
  type: T,
  help: string,
  labels: L,
  bucketList?: readonly number[],
) {
  return { name, type, help, labels, buckets: bucketList } as const;
}

export const METRIC_DEFINITIONS = {
  requests: def('llm_requests_total', 'counter', 'Requests by endpoint and outcome.', [
    'model',
    'endpoint',
    'outcome',
  ]),
  promptTokens: def('llm_prompt_tokens_total', 'counter', 'Prompt tokens of admitted requests.', ['model']),
  generatedTokens: def('llm_generated_tokens_total', 'counter', 'Tokens generated.', ['model']),
  running: def('llm_requests_running', 'gauge', 'Requests currently generating.', ['model']),
  waiting: def('llm_requests_waiting', 'gauge', 'Requests waiting in the queue.', ['model']),
  timeToFirstToken: def(
    'llm_time_to_first_token_seconds',
    'histogram',
    'Time from admission (queue wait included) to the first generated token.',
    ['model'],
    buckets.TIME_TO_FIRST_TOKEN_S,
  ),
  interTokenLatency: def(
    'llm_inter_token_latency_seconds',
    'histogram',
    'Time between consecutive generated tokens of one request.',
    ['model'],
    buckets.INTER_TOKEN_LATENCY_S,
  ),
  requestDuration: def(
    'llm_request_duration_seconds',
    'histogram',
    'Time from admission to the end of a request, any outcome.',
    ['model', 'endpoint'],
    buckets.REQUEST_DURATION_S,
  ),
  entropy: def(
    'llm_token_entropy_nats',
    'histogram',
    'Entropy of the next-token distribution (after interventions, temperature 1) at each generated token.',
    ['model'],
    buckets.ENTROPY_NATS,
  ),
  top1: def(
    'llm_token_top1_probability',
    'histogram',
    'Probability of the most likely next token at each generated token.',
    ['model'],
    buckets.TOP1_PROBABILITY,
  ),
  normScale: def(
    'llm_final_norm_scale',
    'histogram',
    'Scale of the final LayerNorm/RMSNorm (sqrt(var+eps) or sqrt(mean square+eps)) of the last residual.',
    ['model'],
    buckets.NORM_SCALE,
  ),
  neuronActivation: def(
    'llm_neuron_activation',
    'histogram',
    'Activation of each catalogued last-layer neuron at each generated token (after interventions).',
    ['model', 'neuron', 'role'],
    buckets.NEURON_ACTIVATION,
  ),
  unigramKl: def(
    'llm_unigram_kl_nats',
    'histogram',
    'KL(P_model || P_unigram) at each generated token, when unigram counts are known.',
    ['model'],
    buckets.UNIGRAM_KL_NATS,
  ),
  interventionsActive: def(
    'llm_interventions_active',
    'gauge',
    'Neuron interventions currently registered.',
    ['model'],
  ),
  intervenedTokens: def(
    'llm_intervened_tokens_total',
    'counter',
    'Generated tokens during which at least one intervention was applied.',
    ['model'],
  ),
  engineBatchSize: def(
    'llm_engine_batch_size',
    'histogram',
    'Sequences advanced by each forward pass of the engine (continuous batching).',
    ['model'],
    [1, 2, 4, 8, 12, 16, 24, 32, 64],
  ),
  engineKvCacheBytes: def(
    'llm_engine_kv_cache_bytes',
    'gauge',
    'Bytes held by KV caches after the latest engine step (batch padding included).',
    ['model'],
  ),
  engineSteps: def('llm_engine_steps_total', 'counter', 'Engine forward passes (rate() gives steps per second).', [
    'model',
  ]),
  modelInfo: def(
    'llm_model_info',
    'gauge',
    'The replica this sidecar runs: always 1, its facts in the labels (source checkpoint|onnx-export, ' +
      'dtype fp32|fp16|int8|int4, quantize_last_layer true|false, provider cpu|cuda).',
    ['model', 'source', 'dtype', 'quantize_last_layer', 'provider'],
  ),
  wsSubscribers: def('llm_ws_subscribers', 'gauge', 'Open WebSocket monitor subscriptions.', ['model']),
  wsEventsDropped: def(
    'llm_ws_events_dropped_total',
    'counter',
    'Monitor events dropped because a subscriber fell more than its buffer behind.',
    ['model'],
  ),
  // No field label: field names come from clients, so the label would be unbounded (the log names them).
  ignoredFields: def(
    'llm_request_fields_ignored_total',
    'counter',
    'Unknown request fields dropped under --unknown-fields ignore.',
    ['model', 'endpoint'],
  ),
} as const;

export type MetricKey = keyof typeof METRIC_DEFINITIONS;

/** Every metric name this module exposes. */
export const METRIC_NAMES: readonly string[] = Object.values(METRIC_DEFINITIONS).map((d) => d.name);

type Def = (typeof METRIC_DEFINITIONS)[MetricKey];
type LabelOf<D extends Def> = D['labels'][number];
type MetricOf<D extends Def> = D['type'] extends 'counter'
  ? Counter<LabelOf<D>>
  : D['type'] extends 'gauge'
    ? Gauge<LabelOf<D>>
    : Histogram<LabelOf<D>>;

export type SidecarMetrics = { [K in MetricKey]: MetricOf<(typeof METRIC_DEFINITIONS)[K]> };

function instantiate(d: Def, registry: Registry): Counter | Gauge | Histogram {
  const common = { name: d.name, help: d.help, labelNames: [...d.labels], registers: [registry] };
  switch (d.type) {
    case 'counter':
      return new Counter(common);
    case 'gauge':
      return new Gauge(common);
    case 'histogram':
      return new Histogram({ ...common, buckets: [...(d.buckets ?? [])] });
  }
}

/** Creates every metric on `registry` (a dedicated one: no default nodejs_* collectors). */
export function createMetrics(registry: Registry): SidecarMetrics {
  const out: Record<string, unknown> = {};
  for (const [key, d] of Object.entries(METRIC_DEFINITIONS)) out[key] = instantiate(d, registry);
  return out as SidecarMetrics;
}

/**
 * Gives the gauges and counters a zero sample for the served model, so series exist from the first
 * scrape: dashboards' model variable gets its value and rate() sees the counter start at 0 instead of
 * missing the first increment.
 */
export function initialiseSeries(m: SidecarMetrics, model: string): void {
  m.running.set({ model }, 0);
  m.waiting.set({ model }, 0);
  m.interventionsActive.set({ model }, 0);
  m.wsSubscribers.set({ model }, 0);
  m.promptTokens.inc({ model }, 0);
  m.generatedTokens.inc({ model }, 0);
  m.intervenedTokens.inc({ model }, 0);
  m.wsEventsDropped.inc({ model }, 0);
  m.engineSteps.inc({ model }, 0);
  m.engineKvCacheBytes.set({ model }, 0);
  for (const endpoint of ['completions', 'chat_completions']) {
    m.requests.inc({ model, endpoint, outcome: 'success' }, 0);
    m.ignoredFields.inc({ model, endpoint }, 0);
  }
}
