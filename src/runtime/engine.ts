// The generation engine: tokenization, the decode loop, stop handling, cancellation and the
// assembly of per-token signals. Inference itself runs in the worker (see worker.ts).
//
// Concurrency: every generate() call drives its own sequence one step at a time; the worker
// serves steps in arrival order, so concurrent generations interleave token by token.

import type { CalibrationEngine } from '../monitor/analysis.ts';
import type {
  Engine,
  GenerateRequest,
  GeneratedToken,
  GenerationSummary,
  NeuronIntervention,
  ScoredPosition,
  ScoringSession,
  TokenRecord,
  FinishReason,
} from './types.ts';
import type { ModelSpec } from '../model/types.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { InvalidInputError } from '../errors.ts';
import { compileInterventions } from '../monitor/interventions.ts';
import { RepeatTracker } from '../monitor/repeat.ts';
import { StopMatcher } from './stop-matcher.ts';
import type { InferenceWorker } from './worker-client.ts';
import type { InitResult } from './protocol.ts';

/** The neurons whose activations every token reports, by role, as `LAYER.INDEX` addresses. */
export type { WatchedNeurons } from '../monitor/neurons.ts';
import type { WatchedNeurons } from '../monitor/neurons.ts';

export interface EngineParts {
  spec: ModelSpec;
  modelId: string;
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
  private readonly worker: InferenceWorker;
  /** Watched addresses in the order the worker reports them (entropy first, then frequency). */
  private readonly watchOrder: { address: string; role: 'entropy' | 'frequency' }[];

  constructor(parts: EngineParts) {
    this.spec = parts.spec;
    this.modelId = parts.modelId;
    this.tokenizer = parts.tokenizer;
    this.worker = parts.worker;
    this.watched = parts.watched;
    this.provider = parts.init.provider;
    this.watchOrder = [
      ...parts.watched.entropy.map((address) => ({ address, role: 'entropy' as const })),
      ...parts.watched.frequency.map((address) => ({ address, role: 'frequency' as const })),
    ];
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

  private checkIds(ids: number[]): void {
    if (ids.length === 0) throw new InvalidInputError('the prompt is empty: at least one token is needed', 'prompt');
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.spec.vocabSize) {
        throw new InvalidInputError(`token id ${id} is outside the vocabulary (0..${this.spec.vocabSize - 1})`, 'prompt');
      }
    }
  }

  private splitWatched(values: ArrayLike<number>, offset = 0): { entropy: Record<string, number>; frequency: Record<string, number> } {
    const entropy: Record<string, number> = {};
    const frequency: Record<string, number> = {};
    this.watchOrder.forEach((w, j) => {
      (w.role === 'entropy' ? entropy : frequency)[w.address] = values[offset + j]!;
    });
    return { entropy, frequency };
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
    const seqId = nextSeqId++;
    const started = performance.now();
    let firstTokenAt: number | null = null;
    await this.worker.open({
      seqId,
      temperature: params.temperature,
      topK: params.topK,
      topP: params.topP,
      // Without a seed, draw one so that unseeded requests still differ from each other.
      seed: params.seed ?? Math.floor(Math.random() * 2 ** 32),
      topLogprobs: params.topLogprobs,
      ...(params.logits ? { logits: params.logits } : {}),
    });
    const eos = new Set([
      ...(params.stopAtEos === false ? [] : this.spec.eosTokenIds),
      ...(params.logits?.stopTokenIds ?? []),
    ]);
    // The prompt gives the decoder its left context (SentencePiece-style leading spaces).
    const decoder = this.tokenizer.createStreamDecoder(req.promptIds);
    const stops = new StopMatcher(params.stop);
    const repeat = new RepeatTracker();
    for (const id of req.promptIds) repeat.push(id);
    const ids = [...req.promptIds];
    let text = '';
    let completion = 0;
    let finish: FinishReason = 'length';
    let feed = req.promptIds;
    let lastKey = '';
    let trailingText = '';
    let scale: Float32Array | null = null;
    let shift: Float32Array | null = null;
    try {
      while (completion < params.maxTokens) {
        if (req.signal?.aborted) {
          finish = 'abort';
          break;
        }
        const active: NeuronIntervention[] = req.interventions?.() ?? [];
        // Recompile the graph inputs only when the active set changes.
        const key = active.map((iv) => `${iv.id}:${iv.neuron}:${iv.mode}:${iv.value}`).join('|');
        if (key !== lastKey) {
          lastKey = key;
          if (active.length === 0) scale = shift = null;
          else ({ scale, shift } = compileInterventions(active, this.spec.dMlp));
        }
        const r = await this.worker.step({ seqId, tokens: feed, scale, shift });
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
        const { emit, stopped } = stops.push(delta);
        const tokenText = last && !stopped ? emit + stops.flush() : emit;
        text += tokenText;
        const neurons = this.splitWatched(r.watched);
        const token: GeneratedToken = {
          source: 'local',
          index: completion - 1,
          tokenId: r.tokenId,
          text: tokenText,
          logprob: r.logprob,
          entropy: r.entropy,
          top1Prob: r.top1Prob,
          normScale: r.normScale,
          entropyNeurons: neurons.entropy,
          frequencyNeurons: neurons.frequency,
          ...(r.unigramKl !== null ? { unigramKl: r.unigramKl } : {}),
          repeat: rep,
          interventions: active.map((iv) => iv.id),
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
        feed = [r.tokenId];
      }
      // Ended by EOS or abort: anything held back (an incomplete character, a possible stop
      // string) is final now.
      const tail = stops.push(decoder.flush());
      trailingText = tail.stopped ? tail.emit : tail.emit + stops.flush();
      if (tail.stopped) finish = 'stop';
      text += trailingText;
    } finally {
      await this.worker.close(seqId).catch(() => undefined);
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
   * Scoring sessions. This first version rescores the whole sequence on every extend (O(n^2) over a
   * stream); the batched worker replaces it with a KV-cache extension.
   */
  async openScoring(
    promptIds: number[],
    opts: { interventions?: () => NeuronIntervention[] } = {},
  ): Promise<ScoringSession> {
    this.checkIds(promptIds);
    const ids = [...promptIds];
    const decoder = this.tokenizer.createStreamDecoder(promptIds);
    let closed = false;
    let completion = 0;
    return {
      extend: async (tokenIds: number[]) => {
        if (closed) throw new Error('scoring session is closed');
        if (tokenIds.length === 0) return [];
        const from = ids.length;
        ids.push(...tokenIds);
        this.checkIds(ids);
        if (ids.length > this.spec.maxPositions) {
          throw new InvalidInputError(
            `the sequence (${ids.length} tokens) exceeds this model's context of ${this.spec.maxPositions}`,
            'prompt',
          );
        }
        const scored = await this.score(ids, { interventions: opts.interventions?.() ?? [] });
        // The record of token ids[p] is the distribution at p - 1 that predicted it; repeat is the
        // suffix match ending at the token itself (as in generate).
        return tokenIds.map((tokenId, j): TokenRecord => {
          const at = scored[from + j - 1]!;
          return {
            source: 'shadow',
            index: completion++,
            tokenId,
            text: decoder.push(tokenId),
            logprob: at.nextLogprob!,
            entropy: at.entropy,
            top1Prob: at.top1Prob,
            normScale: at.normScale,
            entropyNeurons: at.entropyNeurons,
            frequencyNeurons: at.frequencyNeurons,
            ...(at.unigramKl !== undefined ? { unigramKl: at.unigramKl } : {}),
            repeat: scored[from + j]!.repeat,
            interventions: at.interventions,
          };
        });
      },
      close: async () => {
        closed = true;
      },
    };
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
    await this.worker.terminate();
  }
}
