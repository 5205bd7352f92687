// Continuous batching inside the worker. The loop runs back to back while there is work:
//  1. admit waiting sequences while their KV reservation (prompt + max_tokens tokens) fits the
//     budget and the batch has a free slot;
//  2. run one queued whole-sequence job (engine.score, calibration) between steps;
//  3. prefill: up to maxPrefillTokens prompt tokens of sequences outside the batch, on their own
//     caches, so a long prompt never stalls the decoding rows for more than one chunk;
//  4. change the batch composition when needed (join prefilled rows, drop finished ones, park rows
//     idle for a while) with one compacting copy;
//  5. one session.run for every row that can advance: a generating row needs credit (its consumer
//     is keeping up), a scoring row needs a token to score. Rows that cannot advance stay in the
//     batch with a masked column until they are parked.
// Every row feeds exactly one token per step and reads one distribution, so greedy, sampled and
// teacher-forced rows mix freely.

import * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../model/types.ts';
import { UserError } from '../errors.ts';
import { KvBatch, emptyOwn, type KvShape, type RowSource } from './kv-batch.ts';
import { Rng } from './sampling.ts';
import { sequenceLogitsFor } from './logits-processors.ts';
import { rowFromGraph, rowFromLogits, type Row } from './row-results.ts';
import { SIGNAL_TOP_K } from '../model/onnx/last-layer-hook.ts';
import type { IvUpdate, StartMessage, StepResult, StepStats, WorkerEvent } from './protocol.ts';
import { InterventionFeeds, int64, pastName, presentName, SIGNAL_OUTPUTS } from './step-feeds.ts';

/** Idle steps after which a row in the batch is moved out (its column costs compute). */
const PARK_AFTER_IDLE_STEPS = 4;

export interface LoopConfig {
  session: ort.InferenceSession;
  spec: ModelSpec;
  instrumented: boolean;
  watch: number[];
  logPFreq: Float32Array | null;
  /** The graph's unigram_log_prob input: log p_freq, or zeros when unknown (KL then unused). */
  unigram: ort.Tensor;
  kvCacheBytes: number;
  maxBatch: number;
  maxPrefillTokens: number;
  emit: (e: WorkerEvent) => void;
}

export class BatchLoop {
  private readonly shape: KvShape;
  private readonly bytesPerToken: number;
  private readonly waiting: Row[] = [];
  private readonly admitted = new Map<number, Row>();
  private readonly batch: KvBatch;
  /** Rows of the batch, in batch order. */
  private batchRows: Row[] = [];
  private readonly jobs: (() => Promise<void>)[] = [];
  private reservedBytes = 0;
  private wake: (() => void) | null = null;
  private readonly iv: InterventionFeeds;
  private closing: Promise<void> | null = null;
  private stopped: (() => void) | null = null;

  constructor(private readonly c: LoopConfig) {
    const { spec } = c;
    this.shape = { tensors: 2 * spec.nLayers, kvHeads: spec.nKvHeads, headDim: spec.headDim };
    this.bytesPerToken = 2 * spec.nLayers * spec.nKvHeads * spec.headDim * 4;
    this.batch = new KvBatch(this.shape);
    this.iv = new InterventionFeeds(spec.dMlp);
    void this.run();
  }

  start(m: StartMessage): void {
    if (this.admitted.has(m.seqId) || this.waiting.some((r) => r.id === m.seqId)) {
      throw new Error(`sequence ${m.seqId} already exists`);
    }
    // Scoring sequences grow with the stream; reserve their prompt plus what generation would.
    const tokens = m.prompt.length + (m.mode === 'generate' ? m.maxTokens : Math.min(256, this.c.spec.maxPositions));
    const reserved = tokens * this.bytesPerToken;
    if (reserved > this.c.kvCacheBytes) {
      throw new UserError(
        `this request needs ${(reserved / 2 ** 20).toFixed(1)} MiB of KV cache (${tokens} tokens) and the ` +
          `server's --kv-cache-mb allows ${(this.c.kvCacheBytes / 2 ** 20).toFixed(1)} MiB`,
      );
    }
    this.waiting.push({
      id: m.seqId,
      mode: m.mode,
      sampler: { params: { temperature: m.temperature, topK: m.topK, topP: m.topP }, rng: new Rng(m.seed) },
      logits: m.mode === 'generate' ? sequenceLogitsFor(m.logits, m.temperature, this.c.spec.eosTokenIds, m.prompt) : null,
      topLogprobs: m.topLogprobs,
      maxTokens: m.maxTokens,
      eos: new Set(m.eos),
      toFeed: [...m.prompt],
      forced: [],
      produced: 0,
      credit: m.credit,
      iv: m.iv,
      own: null,
      len: 0,
      reserved,
      idle: 0,
      stopped: false,
    });
    this.poke();
  }

  credit(seqId: number, n: number): void {
    const r = this.find(seqId);
    if (r) r.credit += n;
    this.poke();
  }

  feed(seqId: number, tokens: number[]): void {
    const r = this.find(seqId);
    if (r) r.forced.push(...tokens);
    this.poke();
  }

  setIv(seqId: number, iv: IvUpdate): void {
    const r = this.find(seqId);
    if (r && iv.version > r.iv.version) r.iv = iv;
    this.poke();
  }

  stop(seqId: number): void {
    const at = this.waiting.findIndex((r) => r.id === seqId);
    if (at >= 0) this.waiting.splice(at, 1);
    const r = this.admitted.get(seqId);
    if (r) r.stopped = true;
    this.poke();
  }

  /** Runs `fn` between two steps (the session is not re-entrant). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.jobs.push(() => fn().then(resolve, reject));
      this.poke();
    });
  }

  private find(seqId: number): Row | undefined {
    return this.admitted.get(seqId) ?? this.waiting.find((r) => r.id === seqId);
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Ends the loop after the step in flight: no native call is running once this resolves. */
  shutdown(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => (this.stopped = resolve));
    this.poke();
    return this.closing;
  }

  private async run(): Promise<void> {
    for (;;) {
      if (this.closing) {
        this.stopped?.();
        return;
      }
      let worked = false;
      try {
        worked = await this.iteration();
      } catch (e) {
        this.failBatch(e as Error);
        worked = true;
      }
      // Let control messages in between steps (session.run may resolve without a macrotask).
      if (worked) await new Promise<void>((r) => setImmediate(r));
      else await new Promise<void>((r) => (this.wake = r));
    }
  }

  private async iteration(): Promise<boolean> {
    this.admit();
    let worked = false;
    const job = this.jobs.shift();
    if (job) {
      await job();
      worked = true;
    }
    worked = (await this.prefill()) || worked;
    this.recompose();
    return (await this.step()) || worked;
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.admitted.size < this.c.maxBatch) {
      const r = this.waiting[0]!;
      if (this.admitted.size > 0 && this.reservedBytes + r.reserved > this.c.kvCacheBytes) break;
      this.waiting.shift();
      r.own = emptyOwn(this.shape);
      this.admitted.set(r.id, r);
      this.reservedBytes += r.reserved;
    }
  }

  private release(r: Row): void {
    if (!this.admitted.delete(r.id)) return;
    this.reservedBytes -= r.reserved;
    r.own = null;
  }

  private runnable(r: Row): boolean {
    if (r.stopped || r.toFeed.length !== 1) return false;
    if (r.mode === 'score') return r.forced.length > 0;
    return r.credit > 0 && r.produced < r.maxTokens;
  }

  /** Prompt chunks on the rows' own caches; the last prompt token is left for the batch step. */
  private async prefill(): Promise<boolean> {
    let budget = this.c.maxPrefillTokens;
    let worked = false;
    for (const r of this.admitted.values()) {
      if (budget <= 0) break;
      if (r.stopped || !r.own || r.toFeed.length <= 1) continue;
      const n = Math.min(budget, r.toFeed.length - 1);
      const tokens = r.toFeed.slice(0, n);
      const feeds: Record<string, ort.Tensor> = {
        [IO.inputIds]: int64(tokens, [1, n]),
        [IO.attentionMask]: int64(new Array<number>(r.len + n).fill(1), [1, r.len + n]),
        [IO.positionIds]: int64(
          tokens.map((_, i) => r.len + i),
          [1, n],
        ),
        [IO.logitsToKeep]: int64([1], [1]),
      };
      for (let i = 0; i < this.shape.tensors; i++) feeds[pastName(i)] = r.own.tensors[i]!;
      if (this.c.instrumented) Object.assign(feeds, this.iv.feeds([r]), { [IO.unigramLogProb]: this.c.unigram });
      const fetches = Array.from({ length: this.shape.tensors }, (_, i) => presentName(i));
      let out: ort.InferenceSession.OnnxValueMapType;
      try {
        out = await this.c.session.run(feeds, fetches);
      } catch (e) {
        this.c.emit({ event: 'seq-error', seqId: r.id, message: (e as Error).message, userError: false });
        r.stopped = true;
        this.release(r);
        continue;
      } finally {
        this.iv.forget();
      }
      if (r.stopped) continue;
      r.own = { tensors: fetches.map((f) => out[f]!), len: r.len + n };
      r.len += n;
      r.toFeed.splice(0, n);
      budget -= n;
      worked = true;
    }
    return worked;
  }

  /** Joins, leaves, parking and compaction, in one copy. */
  private recompose(): void {
    for (const r of this.admitted.values()) if (r.stopped && r.own) this.release(r);
    const rows = this.batchRows;
    const keep = rows.filter((r) => !r.stopped && !(r.idle >= PARK_AFTER_IDLE_STEPS && !this.runnable(r)));
    const joining: Row[] = [];
    for (const r of this.admitted.values()) {
      if (keep.length + joining.length >= this.c.maxBatch) break;
      if (r.own && this.runnable(r)) joining.push(r);
    }
    const longest = Math.max(0, ...keep.map((r) => r.len), ...joining.map((r) => r.len));
    // Columns masked in every row (finished rows' history, long-idle rows) cost compute on each step.
    const wasteful = this.batch.T > 2 * longest + 32;
    if (keep.length === rows.length && joining.length === 0 && !wasteful) return;
    const sources: RowSource[] = [];
    rows.forEach((r, b) => {
      if (keep.includes(r)) sources.push({ batchRow: b });
      else if (r.stopped) this.release(r);
      else r.own = this.batch.extract(b);
    });
    for (const r of joining) sources.push({ own: r.own! });
    this.batch.rebuild(sources);
    for (const r of joining) r.own = null;
    this.batchRows = [...keep, ...joining];
    for (const r of this.batchRows) r.idle = 0;
  }

  private async step(): Promise<boolean> {
    const rows = this.batchRows;
    const active = rows.map((r) => this.runnable(r));
    if (!active.some((a) => a)) return false;
    const { spec, instrumented } = this.c;
    const B = rows.length;
    for (const r of rows) {
      if (r.len + 1 > spec.maxPositions) throw new UserError(`context length exceeded: the model allows ${spec.maxPositions}`);
    }
    const feeds: Record<string, ort.Tensor> = {
      [IO.inputIds]: int64(
        rows.map((r, b) => (active[b] ? r.toFeed[0]! : 0)),
        [B, 1],
      ),
      [IO.attentionMask]: this.batch.stepMask(active),
      [IO.positionIds]: int64(
        rows.map((r) => r.len),
        [B, 1],
      ),
      [IO.logitsToKeep]: int64([1], [1]),
    };
    for (let i = 0; i < this.shape.tensors; i++) feeds[pastName(i)] = this.batch.past[i]!;
    if (instrumented) Object.assign(feeds, this.iv.feeds(rows), { [IO.unigramLogProb]: this.c.unigram });
    // The versions this step runs under: a control message may change a row's interventions while
    // session.run is awaited, and a result must name what was actually applied.
    const versions = rows.map((r) => r.iv.version);
    // Greedy rows take token and signals from the graph's signal outputs; only sampled and
    // teacher-forced rows (and top_logprobs beyond the graph's k) read their logits row.
    const needsRow = (r: Row) =>
      !instrumented ||
      r.mode === 'score' ||
      r.sampler.params.temperature > 0 ||
      r.topLogprobs > SIGNAL_TOP_K ||
      r.logits?.adjusts === true;
    const fetchLogits = rows.some((r, b) => active[b] && needsRow(r));
    const fetches: string[] = fetchLogits ? [IO.logits] : [];
    for (let i = 0; i < this.shape.tensors; i++) fetches.push(presentName(i));
    if (instrumented) fetches.push(IO.mlpAct, IO.finalNormScale, ...SIGNAL_OUTPUTS);
    const t0 = performance.now();
    const out = await this.c.session.run(feeds, fetches);
    const runS = (performance.now() - t0) / 1000;
    this.batch.advance(
      Array.from({ length: this.shape.tensors }, (_, i) => out[presentName(i)]!),
      active,
    );
    const results: StepResult[] = [];
    rows.forEach((r, b) => {
      if (!active[b]) {
        r.idle++;
        return;
      }
      r.idle = 0;
      r.len++;
      const res = instrumented ? rowFromGraph(this.c, out, r, b, needsRow(r)) : rowFromLogits(this.c, out, r, b);
      res.ivVersion = versions[b]!;
      r.toFeed = [res.tokenId];
      if (r.mode === 'generate') {
        r.produced++;
        r.credit--;
        res.done = r.eos.has(res.tokenId) || r.produced >= r.maxTokens;
        if (res.done) r.stopped = true;
      }
      results.push(res);
    });
    this.c.emit({ event: 'rows', results, stats: this.stats(results.length, runS) });
    return true;
  }

  stats(batch: number, runS: number): StepStats {
    let kvBytes = this.batch.bytes;
    for (const r of this.admitted.values()) if (r.own) kvBytes += r.len * this.bytesPerToken;
    return {
      batch,
      kvBytes,
      kvReservedBytes: this.reservedBytes,
      running: this.admitted.size,
      waiting: this.waiting.length,
      runS,
    };
  }

  /** A failed batch step fails every row in it (the cache is no longer trustworthy). */
  private failBatch(e: Error): void {
    const userError = e instanceof UserError;
    for (const r of this.batchRows) {
      r.stopped = true;
      this.c.emit({ event: 'seq-error', seqId: r.id, message: e.message, userError });
    }
    for (const r of this.batchRows) this.release(r);
    this.batchRows = [];
    this.batch.rebuild([]);
  }
}
