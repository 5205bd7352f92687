// TEST DOUBLE. A small deterministic stand-in for the ONNX engine, so the HTTP server's tests do
// not depend on model loading: it implements the Engine contract (plus the catalogue and tokenizer
// the server reads) with a word-level vocabulary and a scripted continuation. It follows the
// real engine's rules where the server relies on them: stop strings via the runtime's StopMatcher
// (held-back text released as trailingText), the abort signal checked before every step, the
// interventions callback consulted before every step and applied to the catalogued neurons'
// activations through the real compileInterventions, EOS never yielded.

import type {
  GenerateRequest,
  GeneratedToken,
  GenerationSummary,
  NeuronIntervention,
  ScoredPosition,
  ScoringSession,
  TokenSignals,
} from '../../src/runtime/types.ts';
import type { ModelSpec } from '../../src/model/types.ts';
import { compileInterventions, parseNeuronAddress } from '../../src/monitor/interventions.ts';
import { StopMatcher } from '../../src/runtime/stop-matcher.ts';
import type { ServerEngine } from '../../src/server/app.ts';

const SPECIAL = ['<bos>', '<eos>'];
const WORDS = [' the', ' moon', ' is', ' bright', ' and', ' cold', ' over', ' sea', '.', '\n', ' é'];
const CHARS = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
const VOCAB = [...SPECIAL, ...WORDS, ...CHARS];
const BOS = 0;
const EOS = 1;

/** The continuation every prompt gets, cycled from a prompt-dependent offset. */
const SCRIPT = [' the', ' moon', ' is', ' bright', ' and', ' cold', ' over', ' the', ' sea', '.', '\n'].map(
  (w) => VOCAB.indexOf(w),
);

export interface FakeEngineOptions {
  /** Context length (default 64). */
  maxPositions?: number;
  /** Wait this long before each step, to keep a generation in flight (default 0). */
  stepDelayMs?: number;
  /** Emit EOS after this many tokens (default: never). */
  eosAfter?: number;
  chatTemplate?: string | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class FakeEngine implements ServerEngine {
  readonly modelId = 'fake-moon';
  readonly spec: ModelSpec;
  readonly catalogue = { entropy: ['1.3', '1.7'], frequency: ['1.11'] };
  readonly tokenizer;
  /** Every generate() request, in order (tests inspect the abort signal and parameters). */
  readonly requests: GenerateRequest[] = [];
  private readonly encoder = new TextEncoder();

  constructor(private readonly opts: FakeEngineOptions = {}) {
    this.spec = {
      architecture: 'gpt2',
      modelType: 'fake',
      nLayers: 2,
      dModel: 8,
      nHeads: 2,
      nKvHeads: 2,
      headDim: 4,
      dMlp: 16,
      vocabSize: VOCAB.length,
      maxPositions: opts.maxPositions ?? 64,
      normType: 'layernorm',
      normEps: 1e-5,
      bosTokenId: BOS,
      eosTokenIds: [EOS],
      tiedEmbeddings: true,
    };
    this.tokenizer = {
      chatTemplate: opts.chatTemplate ?? null,
      bosTokenId: BOS,
      eosTokenId: EOS,
      specialTokens: SPECIAL.map((content, id) => ({ id, content })),
      tokenText: (id: number) => VOCAB[id] ?? '',
      tokenBytes: (id: number) => this.encoder.encode(VOCAB[id] ?? ''),
    };
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const ids = opts.addSpecialTokens === false ? [] : [BOS];
    let at = 0;
    while (at < text.length) {
      // Longest vocabulary piece first, so " moon" is one token, "x" a character token.
      let best = -1;
      for (let id = SPECIAL.length; id < VOCAB.length; id++) {
        const piece = VOCAB[id]!;
        if (text.startsWith(piece, at) && (best < 0 || piece.length > VOCAB[best]!.length)) best = id;
      }
      // Characters outside the vocabulary read as '?', one each.
      ids.push(best < 0 ? VOCAB.indexOf('?') : best);
      at += best < 0 ? 1 : VOCAB[best]!.length;
    }
    return ids;
  }

  decode(ids: number[]): string {
    return ids
      .filter((id) => id >= SPECIAL.length)
      .map((id) => VOCAB[id] ?? '')
      .join('');
  }

  /** Signals of step k: a fixed pattern, with the catalogued neurons' activations intervened on. */
  private signals(k: number, active: NeuronIntervention[]): TokenSignals {
    const base = (address: string) => 0.25 * parseNeuronAddress(address)!.index + 0.01 * k;
    const compiled = active.length > 0 ? compileInterventions(active, this.spec.dMlp) : null;
    const act = (address: string) => {
      const i = parseNeuronAddress(address)!.index;
      return compiled ? base(address) * compiled.scale[i]! + compiled.shift[i]! : base(address);
    };
    const entropyNeurons = Object.fromEntries(this.catalogue.entropy.map((a) => [a, act(a)]));
    const frequencyNeurons = Object.fromEntries(this.catalogue.frequency.map((a) => [a, act(a)]));
    // Entropy neurons raise entropy through the norm (REFERENCE.md): mimic that monotonically.
    const push = this.catalogue.entropy.reduce((s, a) => s + (act(a) - base(a)), 0);
    const entropy = 1 + 0.1 * (k % 5) + 0.05 * push;
    return {
      entropy,
      top1Prob: Math.exp(-entropy / 2),
      normScale: 2 - 0.01 * k,
      entropyNeurons,
      frequencyNeurons,
      repeat: k >= SCRIPT.length ? Math.min(k - SCRIPT.length + 1, SCRIPT.length) : 0,
      interventions: active.map((iv) => iv.id),
    };
  }

  async *generate(req: GenerateRequest): AsyncGenerator<GeneratedToken, GenerationSummary> {
    this.requests.push(req);
    const { params } = req;
    if (req.promptIds.length + params.maxTokens > this.spec.maxPositions)
      throw new Error('fake engine: context exceeded');
    const started = performance.now();
    const stops = new StopMatcher(params.stop);
    let finish: GenerationSummary['finishReason'] = 'length';
    let text = '';
    let completion = 0;
    let trailingText = '';
    const offset = req.promptIds.length % SCRIPT.length;
    while (completion < params.maxTokens) {
      if (this.opts.stepDelayMs) await sleep(this.opts.stepDelayMs);
      if (req.signal?.aborted) {
        finish = 'abort';
        break;
      }
      const active = req.interventions?.() ?? [];
      if (this.opts.eosAfter !== undefined && completion >= this.opts.eosAfter) {
        finish = 'stop';
        break;
      }
      const k = completion;
      const tokenId = SCRIPT[(offset + k) % SCRIPT.length]!;
      completion++;
      const { emit, stopped } = stops.push(VOCAB[tokenId]!);
      const ending = stopped || completion >= params.maxTokens;
      const tokenText = ending && !stopped ? emit + stops.flush() : emit;
      text += tokenText;
      const logprob = -0.1 - 0.01 * k;
      const alternatives = [tokenId, ...SCRIPT.filter((id) => id !== tokenId)].slice(0, params.topLogprobs);
      yield {
        source: 'local',
        index: k,
        tokenId,
        text: tokenText,
        logprob,
        ...this.signals(k, active),
        ...(params.topLogprobs > 0
          ? {
              topLogprobs: alternatives.map((id, j) => ({
                tokenId: id,
                text: VOCAB[id]!,
                logprob: logprob - j,
              })),
            }
          : {}),
      };
      if (stopped) {
        finish = 'stop';
        break;
      }
    }
    trailingText = stops.flush();
    text += trailingText;
    const durationS = (performance.now() - started) / 1000;
    return {
      promptTokens: req.promptIds.length,
      completionTokens: completion,
      finishReason: finish,
      text,
      durationS,
      tokensPerS: durationS > 0 ? completion / durationS : 0,
      timeToFirstTokenS: null,
      trailingText,
    };
  }

  async openScoring(): Promise<ScoringSession> {
    throw new Error('FakeEngine has no model to score with');
  }

  async score(ids: number[]): Promise<ScoredPosition[]> {
    return ids.map((tokenId, position) => ({
      position,
      tokenId,
      nextLogprob: null,
      ...this.signals(position, []),
    }));
  }

  async close(): Promise<void> {}
}
