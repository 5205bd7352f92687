// The service overview: traffic, errors, token throughput, queue and latency quantiles.

import { METRIC_DEFINITIONS as M } from '../server/telemetry/metrics.ts';
import { buildDashboard, mean, quantile, rate, sel, type PanelSpec } from './grafana.ts';

const QUANTILES = [0.5, 0.9, 0.99];

function latencyPanel(title: string, description: string, histogram: string, by: string[] = []): PanelSpec {
  const suffix = by.map((l) => ` {{${l}}}`).join('');
  return {
    title,
    description,
    type: 'timeseries',
    unit: 's',
    min: 0,
    queries: QUANTILES.map((q) => ({
      expr: quantile(q, histogram, { by }),
      legend: `p${Math.round(q * 100)}${suffix}`,
    })),
  };
}

export function overviewDashboard(): Record<string, unknown> {
  return buildDashboard({
    uid: 'confidence-sidecar-overview',
    title: 'Confidence sidecar / Overview',
    description: 'Traffic, errors, token throughput, queue and latency of the confidence sidecar.',
    tags: ['confidence-sidecar', 'llm'],
    rows: [
      {
        title: 'Traffic',
        panels: [
          {
            title: 'Requests by outcome',
            description: 'Finished and refused requests per second, by outcome.',
            type: 'timeseries',
            unit: 'reqps',
            min: 0,
            stacked: true,
            queries: [{ expr: `sum by (outcome) (${rate(M.requests.name)})`, legend: '{{outcome}}' }],
          },
          {
            title: 'Error ratio',
            description: 'Share of requests that failed or were refused (client aborts are not errors).',
            type: 'timeseries',
            unit: 'percentunit',
            min: 0,
            max: 1,
            queries: [
              {
                expr: `sum(${rate(M.requests.name, 'outcome!~"success|aborted"')}) / sum(${rate(M.requests.name)})`,
                legend: 'error ratio',
              },
            ],
          },
          {
            title: 'Token throughput',
            description: 'Prompt tokens admitted and tokens generated per second.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [
              { expr: `sum(${rate(M.promptTokens.name)})`, legend: 'prompt tokens/s' },
              { expr: `sum(${rate(M.generatedTokens.name)})`, legend: 'generated tokens/s' },
            ],
          },
        ],
      },
      {
        title: 'Queue',
        panels: [
          {
            title: 'Running and waiting requests',
            description: 'Generations in progress and requests queued behind them.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [
              { expr: `sum(${M.running.name}${sel()})`, legend: 'running' },
              { expr: `sum(${M.waiting.name}${sel()})`, legend: 'waiting' },
            ],
          },
          {
            title: 'Requests in range',
            description: 'Requests finished or refused over the dashboard time range.',
            type: 'stat',
            unit: 'short',
            queries: [
              {
                expr: `sum(increase(${M.requests.name}${sel()}[$__range]))`,
                legend: 'requests',
                instant: true,
              },
            ],
            width: 6,
          },
          {
            title: 'Refused requests',
            description: 'Requests refused before generation (queue full, invalid, unauthorized) per second.',
            type: 'timeseries',
            unit: 'reqps',
            min: 0,
            queries: [
              {
                expr: `sum by (endpoint, outcome) (${rate(M.requests.name, 'outcome=~"rejected_queue_full|invalid|unauthorized"')})`,
                legend: '{{endpoint}} {{outcome}}',
              },
            ],
          },
          {
            title: 'Ignored request fields',
            description:
              'Unknown request fields dropped per second under --unknown-fields ignore (the log names them); 0 when unknown fields are refused.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [{ expr: `sum by (endpoint) (${rate(M.ignoredFields.name)})`, legend: '{{endpoint}}' }],
          },
        ],
      },
      {
        title: 'Engine',
        height: 6,
        panels: [
          {
            title: 'Batch size',
            description: 'Sequences advanced per forward pass (continuous batching): mean and p90.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [
              { expr: mean(M.engineBatchSize.name), legend: 'mean' },
              { expr: quantile(0.9, M.engineBatchSize.name), legend: 'p90' },
            ],
          },
          {
            title: 'Engine steps',
            description: 'Forward passes per second.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [{ expr: `sum(${rate(M.engineSteps.name)})`, legend: 'steps/s' }],
          },
          {
            title: 'KV cache',
            description: 'Bytes held by KV caches (batch padding included).',
            type: 'timeseries',
            unit: 'bytes',
            min: 0,
            queries: [{ expr: `sum(${M.engineKvCacheBytes.name}${sel()})`, legend: 'KV bytes' }],
          },
          {
            title: 'Replicas by dtype',
            description:
              'Sidecars per weight dtype and provider (llm_model_info); "last-layer quantized: true" when the ' +
              'last MLP and the unembedding are quantized too, which costs signal fidelity (README "Choosing a dtype").',
            type: 'stat',
            unit: 'short',
            width: 6,
            queries: [
              {
                expr: `count by (dtype, quantize_last_layer, provider) (${M.modelInfo.name}${sel()})`,
                legend: '{{dtype}} {{provider}} last-layer quantized: {{quantize_last_layer}}',
                instant: true,
              },
            ],
          },
        ],
      },
      {
        title: 'Latency',
        panels: [
          latencyPanel(
            'Time to first token',
            'Admission (queue wait included) to first token; quantiles from the histogram buckets.',
            M.timeToFirstToken.name,
          ),
          latencyPanel(
            'Inter-token latency',
            'Gap between consecutive tokens of a request.',
            M.interTokenLatency.name,
          ),
          latencyPanel(
            'Request duration',
            'Admission to the end of the request, by endpoint.',
            M.requestDuration.name,
            ['endpoint'],
          ),
        ],
      },
      {
        title: 'Monitor stream',
        height: 6,
        panels: [
          {
            title: 'WebSocket subscribers',
            description: 'Open /v1/monitor/stream subscriptions.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [{ expr: `sum(${M.wsSubscribers.name}${sel()})`, legend: 'subscribers' }],
          },
          {
            title: 'Dropped monitor events',
            description: 'Events dropped per second because a subscriber fell more than its buffer behind.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [{ expr: `sum(${rate(M.wsEventsDropped.name)})`, legend: 'dropped/s' }],
          },
        ],
      },
    ],
  });
}
