// The telemetry of one generation request: per-token metrics, monitor events and the request's span.
// token() runs in the generation loop, so it only does synchronous bookkeeping (histogram
// observations, a non-blocking publish, a few running sums for the span summary).

import type { Attributes, Span } from '@opentelemetry/api';
import type { GeneratedToken, GenerationSummary } from '../../runtime/types.ts';
import { SummaryAccumulator } from '../../monitor/token-record.ts';
import { requestEndEvent, tokenEvent } from './events.ts';
import type { SidecarMetrics } from './metrics.ts';
import { endSpanWithError, traceIdOf } from './tracing.ts';
import type { WsHub } from './ws-hub.ts';

export type Endpoint = 'completions' | 'chat_completions';
export type RequestOutcome = 'success' | 'aborted' | 'error';

export interface RequestTelemetry {
  /** For log lines: the request span's trace id, or the caller's when only they trace; else null. */
  readonly traceId: string | null;
  /** The request's SERVER span, when there is one (proxy mode parents its upstream CLIENT span on it). */
  readonly span?: Span;
  token(t: GeneratedToken): void;
  end(summary: GenerationSummary, outcome: RequestOutcome, error?: Error): void;
}

export interface Clock {
  /** Monotonic milliseconds, for durations. */
  monotonicMs(): number;
  /** Unix epoch milliseconds, for event timestamps. */
  epochMs(): number;
}

/** What every request of one Telemetry shares. */
export interface RequestDeps {
  metrics: SidecarMetrics;
  hub: WsHub;
  clock: Clock;
  /** The served model id: metric label and event `model`. */
  model: string;
  entropyNeurons: readonly string[];
  frequencyNeurons: readonly string[];
}

/** The span's confidence attributes, from the request summary of src/monitor/token-record.ts. */
class ConfidenceSummary {
  private readonly acc = new SummaryAccumulator();

  constructor(activeAtStart: readonly string[]) {
    for (const id of activeAtStart) this.acc.interventionIds.add(id);
  }

  add(t: GeneratedToken): void {
    this.acc.add(t);
  }

  attributes(): Attributes {
    const s = this.acc.summary();
    const ids = this.acc.interventionIds;
    const a: Attributes = {
      'confidence.tokens': s.tokens,
      'confidence.intervened_tokens': s.intervened_tokens,
      // Distinct interventions that acted on this request: active at its start or on any of its tokens.
      'confidence.interventions.active': ids.size,
    };
    if (ids.size > 0) a['confidence.interventions.ids'] = [...ids];
    if (s.tokens > 0) {
      a['confidence.entropy.mean'] = s.mean_entropy!;
      a['confidence.entropy.max'] = s.max_entropy!;
      a['confidence.top1_prob.mean'] = s.mean_top1_prob!;
      a['confidence.norm_scale.mean'] = s.mean_norm_scale!;
    }
    if (s.mean_unigram_kl !== null) a['confidence.unigram_kl.mean'] = s.mean_unigram_kl;
    return a;
  }
}

export class LiveRequest implements RequestTelemetry {
  readonly traceId: string | null;
  private readonly startedMs: number;
  private lastTokenMs: number | null = null;
  private ended = false;
  private readonly summary: ConfidenceSummary;

  constructor(
    private readonly deps: RequestDeps,
    private readonly requestId: string,
    private readonly endpoint: Endpoint,
    readonly span: Span,
    activeInterventions: readonly string[],
  ) {
    this.startedMs = deps.clock.monotonicMs();
    this.traceId = traceIdOf(span);
    this.summary = new ConfidenceSummary(activeInterventions);
  }

  token(t: GeneratedToken): void {
    if (this.ended) return;
    const { metrics: m, model, clock } = this.deps;
    const now = clock.monotonicMs();
    if (this.lastTokenMs === null) m.timeToFirstToken.observe({ model }, (now - this.startedMs) / 1000);
    else m.interTokenLatency.observe({ model }, (now - this.lastTokenMs) / 1000);
    this.lastTokenMs = now;

    m.generatedTokens.inc({ model });
    observeFinite(m.entropy, model, t.entropy);
    observeFinite(m.top1, model, t.top1Prob);
    observeFinite(m.normScale, model, t.normScale);
    if (t.unigramKl !== undefined) observeFinite(m.unigramKl, model, t.unigramKl);
    // Only catalogued neurons become label values, whatever the token carries: bounded cardinality.
    for (const neuron of this.deps.entropyNeurons)
      this.observeNeuron(neuron, 'entropy', t.entropyNeurons[neuron]);
    for (const neuron of this.deps.frequencyNeurons)
      this.observeNeuron(neuron, 'frequency', t.frequencyNeurons[neuron]);
    if (t.interventions.length > 0) m.intervenedTokens.inc({ model });

    this.summary.add(t);
    this.deps.hub.publish(tokenEvent(this.requestId, model, t, clock.epochMs()));
  }

  end(summary: GenerationSummary, outcome: RequestOutcome, error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    const { metrics: m, model, clock } = this.deps;
    const durationS = (clock.monotonicMs() - this.startedMs) / 1000;
    m.requests.inc({ model, endpoint: this.endpoint, outcome });
    m.requestDuration.observe({ model, endpoint: this.endpoint }, durationS);

    this.span.setAttributes({
      'gen_ai.response.id': this.requestId,
      'gen_ai.response.model': model,
      'gen_ai.response.finish_reasons': [summary.finishReason],
      'gen_ai.usage.input_tokens': summary.promptTokens,
      'gen_ai.usage.output_tokens': summary.completionTokens,
      ...this.summary.attributes(),
    });
    // Success and client aborts leave the status unset (the GenAI conventions' advice); errors mark it.
    if (outcome === 'error') endSpanWithError(this.span, error);
    else this.span.end();

    this.deps.hub.publish(
      requestEndEvent(this.requestId, model, summary, outcome, durationS, clock.epochMs(), error),
    );
  }

  private observeNeuron(neuron: string, role: 'entropy' | 'frequency', value: number | undefined): void {
    if (value === undefined || !Number.isFinite(value)) return;
    this.deps.metrics.neuronActivation.observe({ model: this.deps.model, neuron, role }, value);
  }
}

/** A NaN would poison the histogram's _sum for good, so non-finite signals are not observed. */
function observeFinite(h: SidecarMetrics['entropy'], model: string, value: number): void {
  if (Number.isFinite(value)) h.observe({ model }, value);
}
