// Prometheus alerting rules for the sidecar, written once here and rendered twice by
// scripts/generate-dashboards.ts: deploy/prometheus/alerts.yml (a plain rule file, loaded by the
// compose stack's Prometheus) and deploy/k8s/base/prometheusrule.yaml (the same groups wrapped in a
// prometheus-operator PrometheusRule). deploy/prometheus/alerts.test.yml holds promtool unit tests.
//
// Every alert is per `model` (the label every sidecar series carries), so one rule set covers a fleet
// of differently-served models, and each compares a signal with that model's own history rather than
// with a number that would only suit one model: an entropy of 3 nats is normal for a chat model and
// alarming for a code model. Baselines are averages of a 10-minute recorded series over one day,
// which keeps the 1-day lookback cheap (one sample per evaluation instead of a day of histogram buckets).

import { METRIC_DEFINITIONS as M } from '../server/telemetry/metrics.ts';

/**
 * Metrics of proxy mode (issue 9), defined by the proxy in its own metrics table; they are named here
 * only until that table exists, so that the alert checks have one list to compare against. When the
 * proxy's definitions land, these names must match them (test/alerts.test.ts checks every name an
 * alert uses against METRIC_DEFINITIONS plus this list).
 */
export const PROXY_METRICS = {
  shadowSkippedTokens: { name: 'llm_shadow_skipped_tokens_total', type: 'counter', labels: ['model'] },
  shadowLag: { name: 'llm_shadow_lag_seconds', type: 'gauge', labels: ['model'] },
  upstreamErrors: { name: 'llm_upstream_errors_total', type: 'counter', labels: ['model', 'kind'] },
  upstreamRequests: { name: 'llm_upstream_requests_total', type: 'counter', labels: ['model', 'code'] },
} as const;

/** Thresholds, in one place so operators (and the unit tests' comments) can read them together. */
export const ALERT_THRESHOLDS = {
  /** Entropy p90 alert: at least this factor above the 1-day baseline ... */
  entropyRiseFactor: 1.5,
  /** ... and at least this many nats above it (a factor alone fires on noise near 0). */
  entropyRiseNats: 0.5,
  /** Unigram KL alert: the 10-minute mean below this fraction of its 1-day baseline. */
  unigramKlCollapseFraction: 0.5,
  /** An intervention registered without a break for longer than this. */
  interventionMaxAge: '6h',
  /** Shadow scorer behind the relayed stream by more than this many seconds. */
  shadowLagSeconds: 30,
  /** Fraction of upstream requests that ended in an error (any kind). */
  upstreamErrorRatio: 0.05,
} as const;

export interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: 'warning' | 'critical' };
  annotations: { summary: string; description: string };
}

export interface RecordingRule {
  record: string;
  expr: string;
}

export interface RuleGroup {
  name: string;
  interval?: string;
  rules: (RecordingRule | AlertRule)[];
}

// Recorded series follow the level:metric:operations convention.
export const RECORDED = {
  entropyP90: 'model:llm_token_entropy_nats:p90_rate10m',
  unigramKlMean: 'model:llm_unigram_kl_nats:mean_rate10m',
} as const;

const T = ALERT_THRESHOLDS;
const P = PROXY_METRICS;

/** Sum of a counter's per-second rate per model. */
const rateByModel = (series: string, window: string, matcher = '') =>
  `sum by (model) (rate(${series}${matcher}[${window}]))`;

/** The 1-day baseline of a recorded series; offset by the alert window so a rise is not its own baseline. */
const baseline = (recorded: string) => `avg_over_time(${recorded}[1d] offset 30m)`;

/**
 * Idle windows are left out of the recorded series: a quantile or mean over no tokens is NaN, and one
 * NaN inside avg_over_time would make the baseline NaN, and the alert mute, for a whole day.
 */
const withTraffic = (expr: string, histogram: string) =>
  `(${expr}) and (${rateByModel(`${histogram}_count`, '10m')} > 0)`;

function recordingRules(): RecordingRule[] {
  return [
    {
      record: RECORDED.entropyP90,
      expr: withTraffic(
        `histogram_quantile(0.9, sum by (model, le) (rate(${M.entropy.name}_bucket[10m])))`,
        M.entropy.name,
      ),
    },
    {
      record: RECORDED.unigramKlMean,
      expr: withTraffic(
        `${rateByModel(`${M.unigramKl.name}_sum`, '10m')} / ${rateByModel(`${M.unigramKl.name}_count`, '10m')}`,
        M.unigramKl.name,
      ),
    },
  ];
}

function confidenceAlerts(): AlertRule[] {
  return [
    {
      alert: 'ConfidenceSidecarEntropyAboveBaseline',
      // Both a relative and an absolute margin: a model whose p90 is usually 0.2 nats would cross
      // 1.5x on a handful of odd prompts.
      expr:
        `${RECORDED.entropyP90} > ${T.entropyRiseFactor} * ${baseline(RECORDED.entropyP90)}` +
        ` and ${RECORDED.entropyP90} - ${baseline(RECORDED.entropyP90)} > ${T.entropyRiseNats}`,
      for: '15m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'Model {{ $labels.model }} is less sure of its tokens than usual',
        description:
          'The 90th percentile of next-token entropy over 10 minutes is {{ $value | printf "%.2f" }} nats, at ' +
          `least ${T.entropyRiseFactor}x and ${T.entropyRiseNats} nats above its 1-day baseline, for 15 minutes. ` +
          'Look for new traffic (prompts out of distribution), a changed model or an intervention raising entropy.',
      },
    },
    {
      alert: 'ConfidenceSidecarUnigramKlCollapse',
      expr: `${RECORDED.unigramKlMean} < ${T.unigramKlCollapseFraction} * ${baseline(RECORDED.unigramKlMean)}`,
      for: '15m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'Model {{ $labels.model }} is falling back to frequent tokens',
        description:
          'The mean KL divergence between the next-token and the unigram distribution over 10 minutes is ' +
          '{{ $value | printf "%.2f" }} nats, under ' +
          `${T.unigramKlCollapseFraction * 100}% of its 1-day baseline, for 15 minutes: predictions are drifting ` +
          'towards token frequency (the hedging the token-frequency neurons implement), typical of ' +
          'degenerate or repetitive output.',
      },
    },
    {
      alert: 'ConfidenceSidecarInterventionLongLived',
      // The gauge counts registered interventions; min_over_time over the window is above 0 only when
      // there was never a moment without one (it cannot tell one long-lived intervention from a
      // rotating set, and survives a Prometheus restart where `for:` state might not). The offset
      // term needs a sample from a full window ago: with less history than the window,
      // min_over_time alone would fire on the first sample.
      expr:
        `min by (model) (min_over_time(${M.interventionsActive.name}[${T.interventionMaxAge}])) > 0` +
        ` and min by (model) (${M.interventionsActive.name} offset ${T.interventionMaxAge}) > 0`,
      for: '5m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'Interventions have been active on {{ $labels.model }} for over ' + T.interventionMaxAge,
        description:
          `At least one neuron intervention has been registered without a break for ${T.interventionMaxAge} ` +
          '({{ $value }} now). Interventions change what the model generates; check GET /v1/interventions ' +
          'and remove the ones left over from an experiment.',
      },
    },
  ];
}

function proxyAlerts(): AlertRule[] {
  return [
    {
      alert: 'ConfidenceSidecarShadowScoringLagging',
      expr: `max by (model) (${P.shadowLag.name}) > ${T.shadowLagSeconds}`,
      for: '5m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'Shadow scoring of {{ $labels.model }} is {{ $value | humanizeDuration }} behind the stream',
        description:
          `The proxy's local scorer has been more than ${T.shadowLagSeconds} s behind the relayed tokens for ` +
          '5 minutes. Clients are not delayed, but the confidence signals arrive late and tokens will be ' +
          'skipped once its queue fills: give the sidecar more CPU (or a GPU) or lower the traffic it scores.',
      },
    },
    {
      alert: 'ConfidenceSidecarShadowScoringSkipping',
      expr: `${rateByModel(P.shadowSkippedTokens.name, '10m')} > 0`,
      for: '10m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'Shadow scoring of {{ $labels.model }} is skipping tokens',
        description:
          'The scorer fell behind and dropped {{ $value | printf "%.1f" }} tokens/s over the last 10 minutes ' +
          '(continuously for 10 minutes): the confidence metrics of proxied traffic are incomplete.',
      },
    },
    {
      alert: 'ConfidenceSidecarUpstreamErrors',
      // An error before any upstream response may not count as an upstream request, so all-failing
      // traffic divides by zero: +Inf, which still fires; no traffic at all is NaN and stays quiet.
      expr:
        `${rateByModel(P.upstreamErrors.name, '5m')} / ${rateByModel(P.upstreamRequests.name, '5m')}` +
        ` > ${T.upstreamErrorRatio}`,
      for: '5m',
      labels: { severity: 'critical' },
      annotations: {
        summary: 'Upstream of {{ $labels.model }} is failing {{ $value | humanizePercentage }} of requests',
        description:
          `More than ${T.upstreamErrorRatio * 100}% of the requests relayed to the upstream inference server ` +
          'ended in an error (unreachable, timeouts, error statuses, dropped streams) over 5 minutes. ' +
          'llm_upstream_errors_total{kind} says which.',
      },
    },
  ];
}

export function alertRuleGroups(): { groups: RuleGroup[] } {
  return {
    groups: [
      { name: 'confidence-sidecar.recording', interval: '1m', rules: recordingRules() },
      { name: 'confidence-sidecar.confidence', rules: confidenceAlerts() },
      { name: 'confidence-sidecar.proxy', rules: proxyAlerts() },
    ],
  };
}

/** The same groups as a prometheus-operator PrometheusRule (labels for its ruleSelector come from kustomize). */
export function prometheusRuleManifest(): Record<string, unknown> {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'confidence-sidecar', labels: { 'app.kubernetes.io/name': 'confidence-sidecar' } },
    spec: alertRuleGroups(),
  };
}
