// Proxy mode's own metrics, defined once here next to where they are observed (relay.ts,
// shadow.ts). They live on a registry of their own, made at startup, so the relay is measured even
// when the local model never loads (fail-open); /metrics serves it beside the telemetry registry,
// whose series carry mode="shadow" in proxy mode. Labels are bounded: `code` is an HTTP status or
// "error", `kind` and `stage` and `reason` come from the fixed lists below.

import { Counter, Histogram, Registry } from 'prom-client';

export type UpstreamErrorKind =
  | 'unreachable'
  | 'connect_timeout'
  | 'first_byte_timeout'
  | 'idle_timeout'
  | 'total_timeout'
  | 'dropped'
  | 'status'
  | 'client_abort';

export type SkipReason = 'queue_full' | 'scoring_failed' | 'context_exceeded' | 'scoring_unavailable';

/** Seconds the proxy adds: tens of microseconds when healthy, so the buckets start at 10 µs. */
const OVERHEAD_S = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05];
const TTFB_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const LAG_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Signed: local logprob minus the upstream's, 0 for a faithful replica. */
const GAP_NATS = [-5, -2, -1, -0.5, -0.1, -0.01, 0.01, 0.1, 0.5, 1, 2, 5];
const ENTROPY_NATS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 6];

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly upstreamRequests = new Counter({
    name: 'llm_upstream_requests_total',
    help: 'Upstream requests by the HTTP status they answered ("error" when none came).',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly upstreamErrors = new Counter({
    name: 'llm_upstream_errors_total',
    help: 'Upstream faults by kind (unreachable, timeouts, drops, error statuses, client aborts).',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly upstreamTtfb = new Histogram({
    name: 'llm_upstream_time_to_first_byte_seconds',
    help: 'Time from sending the upstream request to its response headers.',
    buckets: TTFB_S,
    registers: [this.registry],
  });
  readonly overhead = new Histogram({
    name: 'llm_proxy_overhead_seconds',
    help: 'Time the proxy adds: before the upstream request and after its headers (first_byte), per relayed chunk (chunk).',
    labelNames: ['stage'],
    buckets: OVERHEAD_S,
    registers: [this.registry],
  });
  readonly skipped = new Counter({
    name: 'llm_shadow_skipped_tokens_total',
    help: 'Upstream tokens relayed but not scored, by reason.',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly lag = new Histogram({
    name: 'llm_shadow_lag_seconds',
    help: 'Time from a token arriving from the upstream to its shadow score.',
    buckets: LAG_S,
    registers: [this.registry],
  });
  readonly tokenizerMismatch = new Counter({
    name: 'llm_shadow_tokenizer_mismatch_total',
    help: 'Choices whose upstream tokens had no local counterpart (scored from re-tokenized text).',
    registers: [this.registry],
  });
  readonly logprobGap = new Histogram({
    name: 'llm_shadow_logprob_gap_nats',
    help: "Local model's logprob of each upstream token minus the upstream's own logprob for it.",
    buckets: GAP_NATS,
    registers: [this.registry],
  });
  readonly upstreamEntropyLowerBound = new Histogram({
    name: 'llm_shadow_upstream_entropy_lower_bound_nats',
    help: "Entropy estimated from the upstream's top_logprobs: -sum p log p over the top k, a lower bound.",
    buckets: ENTROPY_NATS,
    registers: [this.registry],
  });

  constructor() {
    for (const kind of ['unreachable', 'first_byte_timeout', 'idle_timeout', 'dropped'] as const)
      this.upstreamErrors.inc({ kind }, 0);
    this.skipped.inc({ reason: 'queue_full' }, 0);
    this.tokenizerMismatch.inc(0);
  }
}
