// The inference worker: owns the onnxruntime session and every sequence's KV cache.
//
// Why a worker: InferenceSession.run() is synchronous native work; on the main thread it would
// stall HTTP, WebSocket and /metrics for the whole step. Why the worker samples and computes the
// signals itself: the logits row (50k floats) never has to cross the thread boundary. The decode
// loop lives here too (batch-loop.ts): steps run back to back and stream their results.

import { parentPort } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../model/types.ts';
import { isUserError, UserError } from '../errors.ts';
import { rowSignals } from '../monitor/signals.ts';
import { createSession } from './session.ts';
import { BatchLoop } from './batch-loop.ts';
import type { Envelope, InitMessage, InitResult, Reply, ScoreMessage, ScoreResult, WorkerEvent } from './protocol.ts';

let session: ort.InferenceSession | null = null;
let spec: ModelSpec;
let watch: number[] = [];
let logPFreq: Float32Array | null = null;
let instrumented = false;
let identityScale: Float32Array;
let identityShift: Float32Array;
let loop: BatchLoop | null = null;
let unigram: ort.Tensor;

function emit(e: WorkerEvent): void {
  parentPort!.postMessage(e);
}

async function init(msg: InitMessage): Promise<InitResult> {
  spec = msg.spec;
  watch = msg.watchNeurons;
  logPFreq = msg.logPFreq;
  const { session: s, provider, warning } = await createSession(msg.modelPath, msg.device, msg.intraOpThreads);
  session = s;
  instrumented = s.inputNames.includes(IO.neuronScale);
  identityScale = new Float32Array(spec.dMlp).fill(1);
  identityShift = new Float32Array(spec.dMlp);
  unigram = new ort.Tensor('float32', logPFreq ?? new Float32Array(spec.vocabSize), [spec.vocabSize]);
  loop = new BatchLoop({
    unigram,
    session: s,
    spec,
    instrumented,
    watch,
    logPFreq,
    kvCacheBytes: msg.kvCacheBytes,
    maxBatch: msg.maxBatch,
    maxPrefillTokens: msg.maxPrefillTokens,
    emit,
  });
  return { provider, warning, inputNames: [...s.inputNames], outputNames: [...s.outputNames] };
}

function emptyPast(): Map<string, ort.Tensor> {
  const past = new Map<string, ort.Tensor>();
  for (let l = 0; l < spec.nLayers; l++) {
    const shape = [1, spec.nKvHeads, 0, spec.headDim];
    past.set(IO.pastKey(l), new ort.Tensor('float32', new Float32Array(0), shape));
    past.set(IO.pastValue(l), new ort.Tensor('float32', new Float32Array(0), shape));
  }
  return past;
}

function int64(values: ArrayLike<number>, dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(Array.from(values, (v) => BigInt(v))), dims);
}

/** Runs the graph on `tokens` appended to a cache of `pastLen` positions. */
async function forward(
  tokens: number[],
  past: Map<string, ort.Tensor>,
  pastLen: number,
  keep: number,
  scale: Float32Array | null,
  shift: Float32Array | null,
  fetchResidual: boolean,
): Promise<ort.InferenceSession.OnnxValueMapType> {
  const s = session!;
  const n = tokens.length;
  const feeds: Record<string, ort.Tensor> = {
    [IO.inputIds]: int64(tokens, [1, n]),
    [IO.attentionMask]: int64(new Array(pastLen + n).fill(1), [1, pastLen + n]),
    [IO.positionIds]: int64(
      Array.from({ length: n }, (_, i) => pastLen + i),
      [1, n],
    ),
    [IO.logitsToKeep]: int64([keep], [1]),
  };
  for (const [name, t] of past) feeds[name] = t;
  if (instrumented) {
    // Per-row interventions ([batch, d_mlp]); a whole-sequence pass is one row.
    feeds[IO.neuronScale] = new ort.Tensor('float32', scale ?? identityScale, [1, spec.dMlp]);
    feeds[IO.neuronShift] = new ort.Tensor('float32', shift ?? identityShift, [1, spec.dMlp]);
    feeds[IO.unigramLogProb] = unigram;
  }
  // Fetch only what this call needs: every fetched output is copied out of native memory.
  const fetches: string[] = [IO.logits];
  for (let l = 0; l < spec.nLayers; l++) fetches.push(IO.presentKey(l), IO.presentValue(l));
  if (instrumented) {
    fetches.push(IO.mlpAct, IO.finalNormScale);
    if (fetchResidual) fetches.push(IO.finalResidual);
  }
  return s.run(feeds, fetches);
}

async function score(msg: ScoreMessage): Promise<ScoreResult> {
  const n = msg.ids.length;
  if (n > spec.maxPositions) {
    throw new UserError(`context length exceeded: ${n} tokens, the model allows ${spec.maxPositions}`);
  }
  const withSignals = msg.signals !== false;
  const out = await forward(msg.ids, emptyPast(), 0, withSignals ? n : 1, msg.scale, msg.shift, msg.residuals);
  const logits = out[IO.logits]!.data as Float32Array;
  const V = spec.vocabSize;
  const res: ScoreResult = {
    entropy: new Float64Array(n),
    top1Prob: new Float64Array(n),
    normScale: new Float64Array(n).fill(NaN),
    nextLogprob: new Float64Array(n).fill(NaN),
    unigramKl: logPFreq ? new Float64Array(n) : null,
    watched: new Float32Array(n * watch.length),
    mlpAct: null,
    residual: null,
  };
  for (let p = 0; withSignals && p < n; p++) {
    const row = logits.subarray(p * V, (p + 1) * V);
    const next = p + 1 < n ? msg.ids[p + 1]! : -1;
    const sig = rowSignals(row, { token: next, topN: 0, logPFreq });
    res.entropy[p] = sig.entropy;
    res.top1Prob[p] = sig.top1Prob;
    if (next >= 0) res.nextLogprob[p] = sig.tokenLogprob;
    if (res.unigramKl) res.unigramKl[p] = sig.unigramKl ?? NaN;
  }
  if (instrumented) {
    const scale = out[IO.finalNormScale]!.data as Float32Array;
    res.normScale.set(scale);
    const act = out[IO.mlpAct]!.data as Float32Array;
    for (let p = 0; p < n; p++) {
      for (let j = 0; j < watch.length; j++) res.watched[p * watch.length + j] = act[p * spec.dMlp + watch[j]!]!;
    }
    if (msg.activations) res.mlpAct = act;
    if (msg.residuals) res.residual = out[IO.finalResidual]!.data as Float32Array;
  }
  return res;
}

function theLoop(): BatchLoop {
  if (!loop) throw new Error('the worker is not initialised');
  return loop;
}

async function handle(env: Envelope): Promise<unknown> {
  const m = env.body;
  switch (m.type) {
    case 'init':
      return init(m);
    case 'start':
      return theLoop().start(m);
    case 'score':
      // Whole-sequence passes run between two batch steps.
      return theLoop().exclusive(() => score(m));
    case 'credit':
      return theLoop().credit(m.seqId, m.n);
    case 'feed':
      return theLoop().feed(m.seqId, m.tokens);
    case 'iv':
      return theLoop().setIv(m.seqId, m.iv);
    case 'stop':
      return theLoop().stop(m.seqId);
    case 'shutdown':
      // Terminating the thread while onnxruntime runs aborts the process (a Napi::Error escapes
      // native code): let the step in flight finish, then release the session.
      await loop?.shutdown();
      await session?.release();
      session = null;
      return null;
  }
}

// Envelope id 0 is a control message: no reply (its sequence's stream reports any failure).
parentPort!.on('message', (env: Envelope) => {
  void handle(env).then(
    (result) => {
      if (env.id !== 0) parentPort!.postMessage({ id: env.id, ok: true, result } satisfies Reply);
    },
    (e: unknown) => {
      const err = e as Error;
      if (env.id === 0) return;
      const reply: Reply = { id: env.id, ok: false, error: { message: err.message, userError: isUserError(e), stack: err.stack } };
      parentPort!.postMessage(reply);
    },
  );
});
