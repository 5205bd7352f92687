// The confidence dashboard: how sure the model is token by token (entropy, top-1 probability), the
// mechanism behind it (final norm scale, entropy and token-frequency neuron activations, distance to
// the unigram distribution) and the interventions acting on those neurons.

import { METRIC_DEFINITIONS as M } from '../server/telemetry/metrics.ts';
import { buildDashboard, mean, quantile, rate, sel, type PanelSpec } from './grafana.ts';

const NEURON = 'neuron=~"$neuron"';

function distributionPanel(
  title: string,
  description: string,
  histogram: string,
  unit: string,
  extra: Partial<PanelSpec> = {},
): PanelSpec {
  return {
    title,
    description,
    type: 'timeseries',
    unit,
    queries: [
      { expr: mean(histogram), legend: 'mean' },
      { expr: quantile(0.1, histogram), legend: 'p10' },
      { expr: quantile(0.5, histogram), legend: 'p50' },
      { expr: quantile(0.9, histogram), legend: 'p90' },
    ],
    ...extra,
  };
}

function neuronMeanPanel(role: 'entropy' | 'frequency', title: string, description: string): PanelSpec {
  const extra = `role="${role}",${NEURON}`;
  return {
    title,
    description,
    type: 'timeseries',
    unit: 'none',
    queries: [{ expr: mean(M.neuronActivation.name, { by: ['neuron'], extra }), legend: '{{neuron}}' }],
  };
}

export function confidenceDashboard(): Record<string, unknown> {
  return buildDashboard({
    uid: 'confidence-sidecar-confidence',
    title: 'Confidence sidecar / Confidence',
    description:
      'Per-token confidence of the served model and the last-layer neurons that regulate it ' +
      '(entropy and token-frequency neurons, Stolfo et al. 2024).',
    tags: ['confidence-sidecar', 'llm', 'confidence'],
    extraVariables: [
      {
        name: 'neuron',
        label: 'Neuron',
        query: `label_values(${M.neuronActivation.name}_count${sel()}, neuron)`,
      },
    ],
    rows: [
      {
        title: 'Entropy',
        height: 9,
        panels: [
          {
            title: 'Entropy distribution',
            description: 'Generated tokens per entropy bucket (nats) over time. Low = confident.',
            type: 'heatmap',
            unit: 'short',
            queries: [
              {
                expr: `sum by (le) (increase(${M.entropy.name}_bucket${sel()}[$__rate_interval]))`,
                legend: '{{le}}',
                format: 'heatmap',
              },
            ],
            width: 12,
          },
          distributionPanel(
            'Entropy',
            'Mean and quantiles of the next-token entropy in nats (after interventions, temperature 1).',
            M.entropy.name,
            'none',
            { min: 0, width: 12 },
          ),
        ],
      },
      {
        title: 'Confidence and norm',
        panels: [
          distributionPanel(
            'Top-1 probability',
            'Probability of the most likely next token.',
            M.top1.name,
            'percentunit',
            {
              min: 0,
              max: 1,
            },
          ),
          {
            title: 'Top-1 probability histogram (range)',
            description:
              'Generated tokens per top-1 probability bucket over the dashboard range (cumulative buckets).',
            type: 'bargauge',
            unit: 'short',
            queries: [
              {
                expr: `sum by (le) (increase(${M.top1.name}_bucket${sel()}[$__range]))`,
                legend: '{{le}}',
                format: 'heatmap',
                instant: true,
              },
            ],
          },
          distributionPanel(
            'Final norm scale',
            'Scale of the final LayerNorm/RMSNorm. Entropy neurons act through it: a larger scale shrinks the logits and raises entropy.',
            M.normScale.name,
            'none',
            { logScale: true },
          ),
        ],
      },
      {
        title: 'Confidence-regulation neurons',
        height: 9,
        panels: [
          neuronMeanPanel(
            'entropy',
            'Entropy neurons: mean activation',
            'Mean activation per generated token of each catalogued entropy neuron.',
          ),
          neuronMeanPanel(
            'frequency',
            'Token-frequency neurons: mean activation',
            'Mean activation per generated token of each catalogued token-frequency neuron.',
          ),
          {
            title: 'Neuron activation p90',
            description: '90th percentile of each catalogued neuron\u2019s activation, by role.',
            type: 'timeseries',
            unit: 'none',
            queries: [
              {
                expr: quantile(0.9, M.neuronActivation.name, { by: ['neuron', 'role'], extra: NEURON }),
                legend: '{{role}} {{neuron}}',
              },
            ],
          },
        ],
      },
      {
        title: 'Unigram distance and interventions',
        panels: [
          distributionPanel(
            'KL to the unigram distribution',
            'KL(P_model || P_unigram) in nats; lower means hedging towards frequent tokens.',
            M.unigramKl.name,
            'none',
            { min: 0 },
          ),
          {
            title: 'Active interventions',
            description: 'Neuron interventions currently registered.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [{ expr: `sum(${M.interventionsActive.name}${sel()})`, legend: 'active' }],
          },
          {
            title: 'Intervened tokens',
            description:
              'Tokens generated under at least one intervention, per second and as a share of all tokens.',
            type: 'timeseries',
            unit: 'short',
            min: 0,
            queries: [
              { expr: `sum(${rate(M.intervenedTokens.name)})`, legend: 'intervened tokens/s' },
              {
                expr: `sum(${rate(M.intervenedTokens.name)}) / sum(${rate(M.generatedTokens.name)})`,
                legend: 'share of tokens',
              },
            ],
          },
        ],
      },
    ],
  });
}
