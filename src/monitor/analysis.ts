// The `analyze` pipeline: weight metrics for every last-layer neuron, calibration over a text
// corpus (mean activations and activation quantiles, unigram counts), causal verification of the
// candidates against random last-layer neurons (mean ablation, total vs direct effect), and the
// causal screen of every last-layer neuron (screen.ts: clamped to a high quantile).
//
// Calibration follows the paper's recipe at small scale: the corpus is tokenized with the model's
// tokenizer and cut into fixed-length chunks (each prefixed with BOS when the model has one; BOS
// included, a chunk never exceeds the model's context);
// BOS, EOS and newline positions are excluded from every statistic.

import { readFileSync } from 'node:fs';
import { InvalidInputError } from '../errors.ts';
import type { ModelSource } from '../model/source.ts';
import { buildCatalogue, type Catalogue } from './catalogue.ts';
import { causalEffects, randomBaseline, withCleanLogits, type CausalData } from './causal.ts';
import { activationQuantiles, screenNeurons } from './screen.ts';
import { countUnigrams, frequencyDirection, frequencyScores, readUnigramFile } from './frequency.ts';
import { identityOf } from './catalogue-loader.ts';
import { computeWeightMetrics, defaultK, unembedStats } from './weight-metrics.ts';
import { processWeights } from './weight-processing.ts';
import { neuronIndexOf } from './neurons.ts';

export interface AnalyzeOptions {
  corpusFiles: string[];
  unigramFile?: string;
  k?: number;
  top: number;
  chunkTokens: number;
  maxChunks: number;
  /** Positions used for causal verification (spread evenly over the corpus). */
  causalPositions: number;
  randomCount: number;
  seed: number;
  /** Clamp quantile of the causal screen (default SCREEN_QUANTILE). */
  screenQuantile?: number;
  progress?: (stage: string, done: number, total: number) => void;
}

export interface AnalyzeResult {
  catalogue: Catalogue;
  /** Median norm-mediated fraction over the random baseline (null without a corpus). */
  baselineMedianFraction: number | null;
  unigramSource: 'file' | 'corpus' | 'none';
}

/**
 * What `analyze` needs from a running model: tokenization, and one teacher-forced forward pass per
 * calibration chunk that returns the last layer's activations and the final residuals. The runtime's
 * engine implements it; the monitor never sees the worker or its protocol.
 */
export interface CalibrationEngine {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** The text of one vocabulary entry (to exclude newline tokens from calibration). */
  tokenText(id: number): string;
  /** Forward pass over `ids` without the unembedding: [n, d_mlp] activations and [n, d_model] residuals. */
  activationsAndResiduals(ids: number[]): Promise<{ mlpAct: Float32Array; residual: Float32Array }>;
}

/** Each neuron is clamped to this quantile of its own activations over the calibration positions. */
export const SCREEN_QUANTILE = 0.99;

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Tokenizes the corpus and cuts it into chunks of at most `chunkTokens` tokens (BOS not counted). */
export function corpusChunks(
  engine: CalibrationEngine,
  files: string[],
  chunkTokens: number,
  maxChunks: number,
): number[][] {
  const chunks: number[][] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new InvalidInputError(
        `--corpus ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
        'corpus',
      );
    }
    const ids = engine.encode(text, { addSpecialTokens: false });
    for (let at = 0; at < ids.length && chunks.length < maxChunks; at += chunkTokens) {
      const piece = ids.slice(at, at + chunkTokens);
      if (piece.length >= 2) chunks.push(piece);
    }
  }
  if (chunks.length === 0)
    throw new InvalidInputError('the corpus has no text to calibrate on (need at least 2 tokens)', 'corpus');
  return chunks;
}

export async function analyzeModel(
  source: ModelSource,
  engine: CalibrationEngine,
  opts: AnalyzeOptions,
): Promise<AnalyzeResult> {
  const spec = source.spec;
  const progress = opts.progress ?? (() => undefined);
  progress('weight metrics', 0, 1);
  const weights = source.lastLayerWeights();
  const processed = processWeights(weights);
  const stats = unembedStats(processed.unembed, weights.dModel, weights.vocabSize);
  const metrics = computeWeightMetrics(weights, { k: opts.k ?? defaultK(weights.dModel), processed, stats });
  progress('weight metrics', 1, 1);

  const excluded = new Set<number>([
    ...(spec.bosTokenId !== null ? [spec.bosTokenId] : []),
    ...spec.eosTokenIds,
  ]);
  for (let id = 0; id < spec.vocabSize; id++) {
    if (engine.tokenText(id).includes('\n')) excluded.add(id);
  }

  // Calibration pass: one teacher-forced forward per chunk.
  // BOS takes one position of the context: a chunk of chunkTokens must still fit.
  const room = spec.maxPositions - (spec.bosTokenId !== null ? 1 : 0);
  const chunkTokens = Math.min(opts.chunkTokens, room);
  if (opts.corpusFiles.length && chunkTokens < 2)
    throw new InvalidInputError(
      `the model's context (${spec.maxPositions} positions) is too short to calibrate on`,
      'chunk',
    );
  const chunks = opts.corpusFiles.length
    ? corpusChunks(engine, opts.corpusFiles, chunkTokens, opts.maxChunks)
    : [];
  const dMlp = spec.dMlp;
  const d = spec.dModel;
  const actSum = new Float64Array(dMlp);
  // Every counted position's activations, for the screen's clamp quantiles (n x d_mlp float32:
  // 50 MB at GPT-2 small with the default 32 x 128 tokens).
  const countedActs: Float32Array[] = [];
  let counted = 0;
  const allIds: number[] = [];
  const totalPositions = chunks.reduce((s, c) => s + c.length - 1, 0);
  const stride = Math.max(1, totalPositions / Math.max(1, opts.causalPositions));
  const causalAct: number[] = [];
  const causalRes: number[] = [];
  const causalNext: number[] = [];
  let seen = 0;
  let nextPick = 0;
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c]!;
    allIds.push(...chunk);
    const ids = spec.bosTokenId !== null ? [spec.bosTokenId, ...chunk] : chunk;
    const r = await engine.activationsAndResiduals(ids);
    for (let p = 0; p < ids.length; p++) {
      if (excluded.has(ids[p]!)) continue;
      for (let i = 0; i < dMlp; i++) actSum[i] += r.mlpAct[p * dMlp + i]!;
      countedActs.push(r.mlpAct.slice(p * dMlp, (p + 1) * dMlp));
      counted++;
      // Causal positions need a next token that is itself a real token.
      const next = p + 1 < ids.length ? ids[p + 1]! : -1;
      if (next < 0 || excluded.has(next)) continue;
      if (seen++ >= nextPick && causalNext.length < opts.causalPositions) {
        nextPick += stride;
        causalNext.push(next);
        for (let i = 0; i < dMlp; i++) causalAct.push(r.mlpAct[p * dMlp + i]!);
        for (let k = 0; k < d; k++) causalRes.push(r.residual[p * d + k]!);
      }
    }
    progress('calibration', c + 1, chunks.length);
  }
  const means = counted ? Float64Array.from(actSum, (s) => s / counted) : null;

  // Unigram counts: --unigram wins; else the model folder's unigram.json (the caller passes it
  // as unigramFile); else counts of the corpus itself.
  let counts: Float64Array | null = null;
  let unigramSource: AnalyzeResult['unigramSource'] = 'none';
  if (opts.unigramFile) {
    counts = readUnigramFile(opts.unigramFile, spec.vocabSize).counts;
    unigramSource = 'file';
  } else if (allIds.length) {
    counts = countUnigrams(allIds, spec.vocabSize);
    unigramSource = 'corpus';
  }
  const freq = counts ? frequencyDirection(counts) : null;
  const freqScores = freq ? frequencyScores(processed, freq.f, stats) : null;

  let catalogue = buildCatalogue({
    model: identityOf(source),
    layer: weights.layer,
    metrics,
    freqScores,
    calibrationMeans: means,
    top: opts.top,
    corpus: chunks.length
      ? {
          description: `${opts.corpusFiles.join(', ')}: ${chunks.length} chunks of <= ${chunkTokens} tokens`,
          tokens: counted,
          synthetic: false,
        }
      : null,
  });
  if (!means || causalNext.length === 0) return { catalogue, baselineMedianFraction: null, unigramSource };

  // Causal verification of the candidates, then a random baseline, on the same positions.
  // Clean logits once, for the verification, the baseline and the screen.
  const data: CausalData = withCleanLogits({
    weights,
    residuals: Float64Array.from(causalRes),
    nextIds: causalNext,
    mlpAct: Float32Array.from(causalAct),
    ...(freq ? { fHat: freq.fHat } : {}),
  });
  const candidates = [
    ...new Set([...catalogue.entropy, ...catalogue.frequency].map(neuronIndexOf)),
  ];
  progress('causal verification', 0, 2);
  const effects = causalEffects(
    data,
    candidates.map((index) => ({ index, ablateTo: means[index]! })),
  );
  progress('causal verification', 1, 2);
  const baseline = randomBaseline(data, {
    count: opts.randomCount,
    seed: opts.seed,
    exclude: candidates,
    ablateTo: (i) => means[i]!,
  });
  progress('causal verification', 2, 2);

  progress('causal screen', 0, 1);
  const allActs = new Float32Array(counted * dMlp);
  countedActs.forEach((row, j) => allActs.set(row, j * dMlp));
  const quantile = opts.screenQuantile ?? SCREEN_QUANTILE;
  const screen = screenNeurons(data, {
    quantile,
    clampTo: activationQuantiles(allActs, dMlp, quantile),
    verify: 2 * opts.top,
    top: opts.top,
    extra: catalogue.entropy.map(neuronIndexOf),
  });
  progress('causal screen', 1, 1);
  catalogue = buildCatalogue({
    model: catalogue.model,
    layer: weights.layer,
    metrics,
    freqScores,
    calibrationMeans: means,
    top: opts.top,
    corpus: catalogue.corpus,
    verification: effects,
    baseline,
    screen,
  });
  const fractions = baseline.neurons
    .map((e) => e.normMediatedFraction)
    .filter((f): f is number => f !== null);
  return { catalogue, baselineMedianFraction: median(fractions), unigramSource };
}
