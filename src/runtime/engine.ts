// The generation engine: tokenization, stop handling, cancellation and the assembly of per-token
// records. Inference and the decode loop run in the worker (worker.ts, batch-loop.ts).
//
// Concurrency: the worker batches every running sequence into one forward pass per step and
// streams the results; each generate() call pulls its own sequence's results from a bounded
// buffer (seq-stream.ts), granting the worker credit as its consumer keeps up.

import type { CalibrationEngine } from '../monitor/analysis.ts';
import type {
  Engine,
  GenerateRequest,
  GeneratedToken,
  GenerationSummary,
  NeuronIntervention,
  ScoredPosition,
  ScoringSession,
  FinishReason,
  ReplicaInfo,
} from './types.ts';
import type { ModelSource } from '../model/source.ts';
import type { ModelSpec } from '../model/types.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { InvalidInputError } from '../errors.ts';
import { compileInterventions } from '../monitor/interventions.ts';
import { RepeatTracker } from '../monitor/repeat.ts';
import { StopMatcher } from './stop-matcher.ts';
import type { InferenceWorker } from './worker-client.ts';
import type { InitResult, StepResult, StepStats, WorkerEvent } from './protocol.ts';
import type { TokenSignals } from '../monitor/token-record.ts';
import { CREDIT_BATCH, CREDIT_WINDOW, IvTracker, SeqStream } from './seq-stream.ts';
import { UserError } from '../errors.ts';
import { openScoringSession } from './scoring-session.ts';

/** The neurons whose activations every token reports, by role, as `LAYER.INDEX` addresses. */
export type { WatchedNeurons } from '../monitor/neurons.ts';
import type { WatchedNeurons } from '../monitor/neurons.ts';

export interface EngineParts {
  spec: ModelSpec;
  modelId: string;
  /** What was loaded (the provider comes from the worker's init). */
  source: Pick<ModelSource, 'kind' | 'dtype' | 'quantizeLastLayer'>;
  tokenizer: Tokenizer;
  worker: InferenceWorker;
  watched: WatchedNeurons;
  init: InitResult;
}

let nextSeqId = 1;

export class OnnxEngine implements Engine, CalibrationEngine {
  readonly spec: ModelSpec;
  readonly modelId: string;
  readonly tokenizer: Tokenizer;
  readonly watched: WatchedNeurons;
  readonly provider: 'cpu' | 'cuda';
  readonly replica: ReplicaInfo;
  readonly worker: InferenceWorker;
  /** Watched addresses in the order the worker reports them (entropy first, then frequency). */
  private readonly watchOrder: { address: string; role: 'entropy' | 'frequency' }[];
  private readonly streams = new Map<number, SeqStream>();
  private readonly stepListeners = new Set<(s: StepStats) => void>();
  /** The latest step's figures (batch size, KV bytes, running/waiting sequences). */
  lastStep: StepStats | null = null;
  /** Batch steps run since the engine started. */
  steps = 0;

  constructor(parts: EngineParts) {
    this.spec = parts.spec;
    this.modelId = parts.modelId;
    this.tokenizer = parts.tokenizer;
    this.worker = parts.worker;
    this.watched = parts.watched;
    this.provider = parts.init.provider;
    this.replica = {
      source: parts.source.kind,
      dtype: parts.source.dtype,
      quantizeLastLayer: parts.source.quantizeLastLayer,
      provider: parts.init.provider,
    };
    this.watchOrder = [
      ...parts.watched.entropy.map((address) => ({ address, role: 'entropy' as const })),
      ...parts.watched.frequency.map((address) => ({ address, role: 'frequency' as const })),
    ];
    this.worker.onEvent = (e) => this.dispatch(e);
    this.worker.onDeath = (e) => {
      for (const s of this.streams.values()) s.fail(e);
    };
  }

  private dispatch(e: WorkerEvent): void {
    if (e.event === 'seq-error') {
      this.streams.get(e.seqId)?.fail(e.userError ? new UserError(e.message) : new Error(e.message));
      return;
    }
    for (const r of e.results) this.streams.get(r.seqId)?.push(r);
    this.steps++;
    this.lastStep = e.stats;
    for (const l of this.stepListeners) l(e.stats);
  }

  /** Calls `listener` after every batch step (for metrics); returns the unsubscribe function. */
  onStep(listener: (s: StepStats) => void): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  /** Opens a stream for a new sequence id; the caller must `closeStream` it. */
  /** For scoring-session.ts. */
  openStream(iv: IvTracker): { seqId: number; stream: SeqStream } {
    const seqId = nextSeqId++;
    // Interventions are read again whenever a result arrives, so a change reaches the worker
    // while the consumer may still be busy with earlier tokens.
    const stream = new SeqStream(() => {
      const upd = iv.poll();
      if (upd) this.worker.control({ type: 'iv', seqId, iv: upd });
    });
    this.streams.set(seqId, stream);
    return { seqId, stream };
  }

  /** For scoring-session.ts. */
  closeStream(seqId: number): void {
    this.worker.control({ type: 'stop', seqId });
    this.streams.delete(seqId);
  }

  /** The neurons reported on every token (the server's view of the catalogue). */
  get catalogue(): WatchedNeurons {
    return this.watched;
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { addSpecialTokens: opts.addSpecialTokens ?? true });
  }

  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: true });
  }

  /** For scoring-session.ts. */
  checkIds(ids: number[]): void {
    if (ids.length === 0) throw new InvalidInputError('the prompt is empty: at least one token is needed', 'prompt');
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.spec.vocabSize) {
        throw new InvalidInputError(`token id ${id} is outside the vocabulary (0..${this.spec.vocabSize - 1})`, 'prompt');
      }
    }
  }

  /** For scoring-session.ts. */
  splitWatched(values: ArrayLike<number>, offset = 0): { entropy: Record<string, number>; frequency: Record<string, number> } {
    const entropy: Record<string, number> = {};
    const frequency: Record<string, number> = {};
    this.watchOrder.forEach((w, j) => {
      (w.role === 'entropy' ? entropy : frequency)[w.address] = values[offset + j]!;
    });
    return { entropy, frequency };
  }

  /**
   * The signal fields of a token record, from the worker's result for the step that produced (or
   * scored) the token: one derivation for generated and shadow tokens alike.
   */
  stepSignals(r: StepResult, ivIds: string[]): Omit<TokenSignals, 'repeat'> & { logprob: number } {
    const neurons = this.splitWatched(r.watched);
    return {
      logprob: r.logprob,
      entropy: r.entropy,
      top1Prob: r.top1Prob,
      normScale: r.normScale,
      entropyNeurons: neurons.entropy,
      frequencyNeurons: neurons.frequency,
      ...(r.unigramKl !== null ? { unigramKl: r.unigramKl } : {}),
      interventions: ivIds,
    };
  }

  async *generate(req: GenerateRequest): AsyncGenerator<GeneratedToken, GenerationSummary> {
    const { params } = req;
    this.checkIds(req.promptIds);
    if (!Number.isInteger(params.maxTokens) || params.maxTokens < 1) {
      throw new InvalidInputError('max_tokens must be a positive integer', 'max_tokens');
    }
    if (req.promptIds.length + params.maxTokens > this.spec.maxPositions) {
      throw new InvalidInputError(
        `this model's maximum context length is ${this.spec.maxPositions} tokens; the prompt has ` +
          `${req.promptIds.length} and max_tokens asks for ${params.maxTokens} more`,
        'max_tokens',
      );
    }
    const started = performance.now();
    let firstTokenAt: number | null = null;
    const eos = new Set([
      ...(params.stopAtEos === false ? [] : this.spec.eosTokenIds),
      ...(params.logits?.stopTokenIds ?? []),
    ]);
    const iv = new IvTracker(req.interventions, this.spec.dMlp);
    const firstIv = iv.poll()!;
    // Lockstep (no lookahead) while the interventions are a feedback loop on the tokens' own records
    // (confidence targets): token k+1 is computed only after the consumer has seen token k.
    const lockstep = () => req.lockstep?.() === true;
    let outstanding = lockstep() ? 1 : CREDIT_WINDOW;
    const { seqId, stream } = this.openStream(iv);
    try {
      await this.worker.start({
        seqId,
        mode: 'generate',
        prompt: req.promptIds,
        temperature: params.temperature,
        topK: params.topK,
        topP: params.topP,
        // Without a seed, draw one so that unseeded requests still differ from each other.
        seed: params.seed ?? Math.floor(Math.random() * 2 ** 32),
        topLogprobs: params.topLogprobs,
        ...(params.logits ? { logits: params.logits } : {}),
        maxTokens: params.maxTokens,
        eos: [...eos],
        credit: outstanding,
        iv: firstIv,
      });
    } catch (e) {
      this.streams.delete(seqId);
      throw e;
    }
    // The prompt gives the decoder its left context (SentencePiece-style leading spaces).
    const decoder = this.tokenizer.createStreamDecoder(req.promptIds);
    const stops = new StopMatcher(params.stop);
    const repeat = new RepeatTracker();
    for (const id of req.promptIds) repeat.push(id);
    const ids = [...req.promptIds];
    let text = '';
    let completion = 0;
    let finish: FinishReason = 'length';
    let trailingText = '';
    let pulled = 0;
    try {
      while (completion < params.maxTokens) {
        if (req.signal?.aborted) {
          finish = 'abort';
          break;
        }
        const r = await stream.next(req.signal);
        if (r === null) continue; // aborted while waiting: the check above ends the loop
        outstanding--;
        // Taking a result is the consumer pulling: give the worker room for more.
        if (!lockstep() && ++pulled % CREDIT_BATCH === 0) {
          this.worker.control({ type: 'credit', seqId, n: CREDIT_BATCH });
          outstanding += CREDIT_BATCH;
        }
        const upd = iv.poll();
        if (upd) this.worker.control({ type: 'iv', seqId, iv: upd });
        if (firstTokenAt === null) firstTokenAt = performance.now();
        if (eos.has(r.tokenId)) {
          finish = 'stop';
          break;
        }
        completion++;
        ids.push(r.tokenId);
        const rep = repeat.push(r.tokenId);
        // On the last token, release what the decoder and the stop matcher still hold.
        const last = completion >= params.maxTokens || req.signal?.aborted === true;
        const delta = decoder.push(r.tokenId) + (last ? decoder.flush() : '');
        // vLLM: stop strings end a completion only from min_tokens on (like EOS, masked until then).
        const { emit, stopped } = stops.push(delta, completion >= (params.logits?.minTokens ?? 0));
        const tokenText = last && !stopped ? emit + stops.flush() : emit;
        text += tokenText;
        const token: GeneratedToken = {
          source: 'local',
          index: completion - 1,
          tokenId: r.tokenId,
          text: tokenText,
          ...this.stepSignals(r, iv.idsFor(r.ivVersion)),
          repeat: rep,
          ...(r.adjustments.length > 0 ? { adjustments: r.adjustments } : {}),
          ...(params.topLogprobs > 0
            ? {
                topLogprobs: r.topLogprobs.map(([tokenId, logprob]) => ({
                  tokenId,
                  logprob,
                  text: this.tokenizer.tokenText(tokenId),
                })),
              }
            : {}),
        };
        yield token;
        if (stopped) {
          finish = 'stop';
          break;
        }
        if (lockstep()) {
          // The consumer is back for the next token, so it has seen this one: the interventions it
          // implies go to the worker before the one step of credit that computes the next token.
          const next = iv.poll();
          if (next) this.worker.control({ type: 'iv', seqId, iv: next });
          if (outstanding <= 0) {
            this.worker.control({ type: 'credit', seqId, n: 1 });
            outstanding = 1;
          }
        }
      }
      // Ended by EOS or abort: anything held back (an incomplete character, a possible stop
      // string) is final now.
      const tail = stops.push(decoder.flush());
      trailingText = tail.stopped ? tail.emit : tail.emit + stops.flush();
      if (tail.stopped) finish = 'stop';
      text += trailingText;
    } finally {
      this.closeStream(seqId);
    }
    const durationS = (performance.now() - started) / 1000;
    const decodeS = firstTokenAt === null ? 0 : (performance.now() - firstTokenAt) / 1000;
    return {
      promptTokens: req.promptIds.length,
      completionTokens: completion,
      finishReason: finish,
      text,
      durationS,
      // Decode throughput: tokens after the first over the time after the first (prefill excluded).
      tokensPerS: completion > 1 && decodeS > 0 ? (completion - 1) / decodeS : 0,
      timeToFirstTokenS: firstTokenAt === null ? null : (firstTokenAt - started) / 1000,
      trailingText,
    };
  }

  async score(
    ids: number[],
    opts: { activations?: boolean; interventions?: NeuronIntervention[]; residuals?: boolean } = {},
  ): Promise<ScoredPosition[]> {
    this.checkIds(ids);
    const ivs = opts.interventions ?? [];
    const compiled = ivs.length ? compileInterventions(ivs, this.spec.dMlp) : null;
    const r = await this.worker.score({
      ids,
      scale: compiled?.scale ?? null,
      shift: compiled?.shift ?? null,
      activations: opts.activations ?? false,
      residuals: opts.residuals ?? false,
    });
    const tracker = new RepeatTracker();
    const reps = ids.map((id) => tracker.push(id));
    const W = this.watchOrder.length;
    return ids.map((tokenId, p) => {
      const neurons = this.splitWatched(r.watched, p * W);
      const pos: ScoredPosition = {
        position: p,
        tokenId,
        entropy: r.entropy[p]!,
        top1Prob: r.top1Prob[p]!,
        normScale: r.normScale[p]!,
        nextLogprob: Number.isNaN(r.nextLogprob[p]!) ? null : r.nextLogprob[p]!,
        entropyNeurons: neurons.entropy,
        frequencyNeurons: neurons.frequency,
        ...(r.unigramKl ? { unigramKl: r.unigramKl[p]! } : {}),
        repeat: reps[p]!,
        interventions: ivs.map((iv) => iv.id),
      };
      if (r.mlpAct) pos.mlpAct = Array.from(r.mlpAct.subarray(p * this.spec.dMlp, (p + 1) * this.spec.dMlp));
      return pos;
    });
  }

  /**
   * Scoring sessions: the sequence lives in the worker's batch like a generation (scoring-session.ts).
   */
  openScoring(promptIds: number[], opts: { interventions?: () => NeuronIntervention[] } = {}): Promise<ScoringSession> {
    return openScoringSession(this, promptIds, opts);
  }

  /** Raw teacher-forced pass for the monitor's calibration and causal analysis. */
  async scoreRaw(ids: number[], opts: { activations: boolean; residuals: boolean; signals?: boolean }) {
    this.checkIds(ids);
    return this.worker.score({ ids, scale: null, shift: null, ...opts });
  }

  /** The monitor's CalibrationEngine: `analyze` drives the model through these two. */
  tokenText(id: number): string {
    return this.tokenizer.tokenText(id);
  }

  async activationsAndResiduals(ids: number[]): Promise<{ mlpAct: Float32Array; residual: Float32Array }> {
    const r = await this.scoreRaw(ids, { activations: true, residuals: true, signals: false });
    return { mlpAct: r.mlpAct!, residual: r.residual! };
  }

  async close(): Promise<void> {
    for (const s of this.streams.values()) s.fail(new Error('the engine is closed'));
    await this.worker.terminate();
  }
}
