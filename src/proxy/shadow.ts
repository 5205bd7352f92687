// Shadow scoring: the upstream's completion, token by token, teacher-forced through the local
// model, published as the same per-token records serve mode publishes (source "shadow"): metrics,
// WebSocket token events, the request span's attributes, the request summary (all through the
// serve-mode Telemetry object, see src/server/telemetry).
//
// It never delays the client: the relay hands it copies of the bytes it already wrote. Tokens wait
// in one bounded queue shared by all streams (maxPendingTokens); the tokens queued for a choice go
// to the engine in one extend() when its previous one returns (so a scorer that falls behind
// batches more per call instead of queueing calls). When the queue is full the stream whose tokens
// do not fit stops being scored: teacher forcing cannot leave a hole in the sequence, so the rest of
// that choice is skipped and counted (llm_shadow_skipped_tokens_total{reason="queue_full"}).
// Scoring failures are the same: counted, logged, and the traffic flows on (fail-open).

import type { FastifyBaseLogger } from 'fastify';
import { InvalidInputError } from '../errors.ts';
import type { ScoringSession, TokenRecord } from '../runtime/types.ts';
import type { ServerEngine, ServerTelemetry } from '../server/app.ts';
import type { ChatFormatter } from '../server/chat-template.ts';
import type { Endpoint, RequestTelemetry } from '../server/telemetry/index.ts';
import { ChoiceAligner, type AlignedToken, type TokenIndex } from './aligner.ts';
import type { ProxyMetrics, SkipReason } from './metrics.ts';
import type { StreamItem, UpstreamToken } from './openai-stream.ts';
import { chatPrompt, completionPrompt } from './prompt.ts';

export interface ShadowServices {
  engine: ServerEngine;
  telemetry: ServerTelemetry;
  chat: ChatFormatter;
  index: TokenIndex;
}

/** Called with every shadow record (tests, and a future `confidence` extension on the relay). */
export type RecordListener = (
  requestId: string,
  choice: number,
  record: TokenRecord,
  upstream?: UpstreamToken,
) => void;

export interface ShadowOptions {
  metrics: ProxyMetrics;
  /** Tokens waiting to be scored, all streams together, before streams are skipped (default 8192). */
  maxPendingTokens?: number;
  log: FastifyBaseLogger;
  onRecord?: RecordListener;
  /** Called when a request's scoring has ended (its last record was published, or it was dropped). */
  onFinished?: (requestId: string) => void;
}

export interface ShadowStart {
  requestId: string;
  endpoint: Endpoint;
  body: Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

export class ShadowScorer {
  pending = 0;
  readonly maxPending: number;
  private warnedMismatch = false;

  constructor(
    readonly services: ShadowServices,
    readonly opts: ShadowOptions,
  ) {
    this.maxPending = opts.maxPendingTokens ?? 8192;
  }

  /** Starts scoring a request, or returns null (logged) when its prompt cannot be rendered locally. */
  start(s: ShadowStart): ShadowRequest | null {
    const { engine, telemetry, chat } = this.services;
    const prompt =
      s.endpoint === 'chat_completions' ? chatPrompt(s.body, engine, chat) : completionPrompt(s.body, engine);
    if ('unscored' in prompt) {
      this.opts.log.info({ reason: prompt.unscored }, 'request relayed unscored');
      return null;
    }
    const num = (v: unknown, d: number) => (typeof v === 'number' ? v : d);
    const rt = telemetry.requestStarted({
      requestId: s.requestId,
      model: typeof s.body.model === 'string' ? s.body.model : '',
      endpoint: s.endpoint,
      params: {
        max_tokens: num(s.body.max_completion_tokens ?? s.body.max_tokens, -1),
        temperature: num(s.body.temperature, 1),
        top_p: num(s.body.top_p, 1),
        stream: s.body.stream === true,
        n: num(s.body.n, 1),
        mode: 'shadow',
      },
      promptTokens: prompt.ids.length,
      interventions: [],
      headers: s.headers,
    });
    return new ShadowRequest(this, s.requestId, prompt.ids, rt);
  }

  mismatch(detail: string): void {
    this.opts.metrics.tokenizerMismatch.inc();
    if (this.warnedMismatch) return;
    this.warnedMismatch = true;
    this.opts.log.warn(
      { detail },
      "the upstream's tokens differ from the local tokenizer's; scoring re-tokenized text",
    );
  }
}

interface Queued {
  tok: AlignedToken;
  at: number;
}

class Choice {
  readonly aligner: ChoiceAligner;
  session: Promise<ScoringSession> | null = null;
  queue: Queued[] = [];
  running: Promise<void> | null = null;
  dead: SkipReason | 'closed' | null = null;
  finishReason: string | undefined;
  scored = 0;
  constructor(
    scorer: ShadowScorer,
    readonly index: number,
  ) {
    this.aligner = new ChoiceAligner(scorer.services.index, (d) => scorer.mismatch(d));
  }
}

export class ShadowRequest {
  private readonly choices = new Map<number, Choice>();
  private readonly started = performance.now();
  private firstTokenS: number | null = null;
  private ended = false;

  constructor(
    private readonly scorer: ShadowScorer,
    readonly requestId: string,
    private readonly promptIds: number[],
    readonly rt: RequestTelemetry,
  ) {}

  /** One interpreted event of the upstream's response. */
  feed(item: StreamItem): void {
    if (this.ended || item.kind !== 'chunk') return;
    const at = performance.now();
    for (const piece of item.choices) {
      let c = this.choices.get(piece.index);
      if (!c) this.choices.set(piece.index, (c = new Choice(this.scorer, piece.index)));
      if (piece.finishReason) c.finishReason = piece.finishReason;
      if (this.firstTokenS === null && piece.text !== '') this.firstTokenS = (at - this.started) / 1000;
      this.enqueue(c, c.aligner.push(piece), at);
    }
  }

  /** The response ended (outcome as the relay saw it); resolves once every token is scored. */
  async finish(outcome: 'success' | 'aborted' | 'error', error?: Error): Promise<void> {
    if (this.ended) return;
    const at = performance.now();
    for (const c of this.choices.values()) this.enqueue(c, c.aligner.finish(), at);
    this.ended = true;
    await Promise.all([...this.choices.values()].map((c) => c.running));
    await this.closeSessions();
    this.end(outcome, error);
  }

  /** The client went away: stop scoring at once. */
  async abort(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    for (const c of this.choices.values()) this.kill(c, 'closed');
    await this.closeSessions();
    this.end('aborted');
  }

  private end(outcome: 'success' | 'aborted' | 'error', error?: Error): void {
    const all = [...this.choices.values()];
    const tokens = all.reduce((n, c) => n + c.scored, 0);
    const reasons = all.map((c) => c.finishReason);
    const durationS = (performance.now() - this.started) / 1000;
    this.rt.end(
      {
        promptTokens: this.promptIds.length,
        completionTokens: tokens,
        finishReason: outcome === 'aborted' ? 'abort' : reasons.includes('length') ? 'length' : 'stop',
        text: this.choices.get(0)?.aligner.text ?? '',
        durationS,
        tokensPerS: durationS > 0 ? tokens / durationS : 0,
        timeToFirstTokenS: this.firstTokenS,
        trailingText: '',
      },
      outcome,
      error,
    );
    this.scorer.opts.onFinished?.(this.requestId);
  }

  private async closeSessions(): Promise<void> {
    await Promise.all(
      [...this.choices.values()].map(async (c) => {
        const s = c.session;
        c.session = null;
        if (s) await s.then((x) => x.close()).catch(() => undefined);
      }),
    );
  }

  private enqueue(c: Choice, toks: AlignedToken[], at: number): void {
    if (toks.length === 0) return;
    const { metrics } = this.scorer.opts;
    if (c.dead) {
      if (c.dead !== 'closed') metrics.skipped.inc({ reason: c.dead }, toks.length);
      return;
    }
    if (this.scorer.pending + toks.length > this.scorer.maxPending) {
      metrics.skipped.inc({ reason: 'queue_full' }, toks.length);
      this.kill(c, 'queue_full');
      return;
    }
    this.scorer.pending += toks.length;
    for (const tok of toks) c.queue.push({ tok, at });
    c.running ??= this.drain(c);
  }

  /** Marks a choice as no longer scored; its queued tokens count as skipped for `reason`. */
  private kill(c: Choice, reason: SkipReason | 'closed'): void {
    if (c.dead) return;
    c.dead = reason;
    if (c.queue.length > 0) {
      if (reason !== 'closed') this.scorer.opts.metrics.skipped.inc({ reason }, c.queue.length);
      this.scorer.pending -= c.queue.length;
      c.queue = [];
    }
  }

  private async drain(c: Choice): Promise<void> {
    const { metrics, log, onRecord } = this.scorer.opts;
    const { engine } = this.scorer.services;
    while (c.queue.length > 0 && !c.dead) {
      const batch = c.queue;
      c.queue = [];
      let records: TokenRecord[];
      try {
        c.session ??= engine.openScoring(this.promptIds);
        records = await (await c.session).extend(batch.map((q) => q.tok.id));
      } catch (e) {
        this.scorer.pending -= batch.length;
        const reason: SkipReason = e instanceof InvalidInputError ? 'context_exceeded' : 'scoring_failed';
        metrics.skipped.inc({ reason }, batch.length);
        log.warn({ err: e, request_id: this.requestId, reason }, 'shadow scoring stopped for a choice');
        this.kill(c, reason);
        break;
      }
      this.scorer.pending -= batch.length;
      if (c.dead === 'closed') break;
      const now = performance.now();
      records.forEach((r, i) => {
        const q = batch[i]!;
        c.scored++;
        metrics.lag.observe((now - q.at) / 1000);
        const up = q.tok.upstream;
        if (up?.logprob !== undefined) metrics.logprobGap.observe(r.logprob - up.logprob);
        if (up?.topLogprobs && up.topLogprobs.length > 0) {
          metrics.upstreamEntropyLowerBound.observe(
            up.topLogprobs.reduce((h, lp) => h - Math.exp(lp) * lp, 0),
          );
        }
        this.rt.token(r);
        onRecord?.(this.requestId, c.index, r, up);
      });
    }
    c.running = null;
  }
}
