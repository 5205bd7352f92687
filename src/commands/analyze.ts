// `analyze` and `count-unigrams`.

import { resolve } from 'node:path';
import { InvalidInputError } from '../errors.ts';
import { defaultUnigramFile } from '../runtime/index.ts';
import { analyzeModel } from '../monitor/analysis.ts';
import { formatCatalogueTable, writeCatalogue } from '../monitor/catalogue.ts';
import { corpusChunks } from '../monitor/analysis.ts';
import { countUnigrams, writeUnigramFile } from '../monitor/frequency.ts';
import { numberFlag, requiredString } from './options.ts';
import { setupEngine } from './setup.ts';
import { ProgressBar } from './progress.ts';
import { MODEL_FLAGS, type CommandSpec, type Flag } from './flags.ts';

/** `analyze`'s flags. (No --json: the catalogue file from --out is the machine-readable result.) */
export const ANALYZE_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  { name: 'corpus', type: 'path', arg: 'FILE', repeatable: true, help: 'calibration text; without one the catalogue is from the weights alone (no causal check)' },
  { name: 'k', type: 'integer', min: 1, help: 'null-space dimension for entropy neurons; default: from the model' },
  { name: 'top', type: 'integer', min: 1, default: 10, help: 'neurons to keep per kind' },
  { name: 'out', type: 'path', arg: 'FILE', help: 'write the catalogue (JSON) here' },
  { name: 'chunk', type: 'integer', min: 2, default: 128, help: 'tokens per calibration chunk' },
  { name: 'max-chunks', type: 'integer', min: 1, default: 32, help: 'most calibration chunks' },
  { name: 'causal-positions', type: 'integer', min: 1, default: 128, help: 'positions for the causal check' },
  { name: 'random', type: 'integer', min: 0, default: 20, help: 'random neurons for the baseline' },
  { name: 'seed', type: 'integer', min: 0, default: 0, help: 'seed for the random baseline' },
];

export const analyzeCommand: CommandSpec = {
  name: 'analyze',
  summary: 'find entropy and token-frequency neurons (weights + calibration + causal verification)',
  flags: ANALYZE_FLAGS,
  examples: [
    'confidence-sidecar analyze --top 5',
    'confidence-sidecar analyze --model ./my-model --corpus corpus.txt --out catalogue.json',
  ],
  run: (values) => runAnalyze(values),
};

export const COUNT_UNIGRAMS_FLAGS: Flag[] = [
  ...MODEL_FLAGS,
  { name: 'corpus', type: 'path', arg: 'FILE', repeatable: true, required: true, help: 'text to count' },
  { name: 'out', type: 'path', arg: 'FILE', required: true, help: 'unigram counts file to write' },
];

export const countUnigramsCommand: CommandSpec = {
  name: 'count-unigrams',
  summary: "count token frequencies of a corpus with the model's tokenizer",
  flags: COUNT_UNIGRAMS_FLAGS,
  examples: ['confidence-sidecar count-unigrams --model ./my-model --corpus corpus.txt --out unigram.json'],
  run: (values) => runCountUnigrams(values),
};

export async function runAnalyze(values: Record<string, unknown>): Promise<void> {
  const corpus = ((values.corpus as string[] | undefined) ?? []).map((f) => resolve(f));
  const top = numberFlag(values, 'top', { min: 1, integer: true })!;
  const k = numberFlag(values, 'k', { min: 1, integer: true });
  const chunkTokens = numberFlag(values, 'chunk', { min: 2, integer: true })!;
  const maxChunks = numberFlag(values, 'max-chunks', { min: 1, integer: true })!;
  const randomCount = numberFlag(values, 'random', { min: 0, integer: true })!;
  const seed = numberFlag(values, 'seed', { min: 0, integer: true })!;
  // The catalogue is what we are building: start the engine without one.
  const { source, engine } = await setupEngine(values, { withoutCatalogue: true });
  try {
    if (k !== undefined && k > source.spec.dModel) throw new InvalidInputError(`--k must be <= d_model (${source.spec.dModel})`, 'k');
    const bar = new ProgressBar(process.stderr);
    const result = await analyzeModel(source, engine, {
      corpusFiles: corpus,
      unigramFile: (values.unigram as string | undefined) ?? defaultUnigramFile(source.dir),
      k,
      top,
      chunkTokens,
      maxChunks,
      causalPositions: numberFlag(values, 'causal-positions', { min: 1, integer: true })!,
      randomCount,
      seed,
      progress: (stage, done, total) => bar.update(stage, done, total),
    });
    bar.done();
    const c = result.catalogue;
    process.stdout.write(formatCatalogueTable(c) + '\n');
    if (result.baselineMedianFraction !== null) {
      process.stdout.write(
        `\nrandom baseline: ${c.baseline?.count ?? 0} neurons, median norm-mediated fraction ` +
          `${result.baselineMedianFraction.toFixed(3)}\n`,
      );
    }
    process.stdout.write(`unigram counts: ${result.unigramSource}\n`);
    if (values.out) {
      writeCatalogue(resolve(values.out as string), c);
      process.stderr.write(`wrote ${resolve(values.out as string)}\n`);
    }
  } finally {
    await engine.close();
  }
}

export async function runCountUnigrams(values: Record<string, unknown>): Promise<void> {
  const corpus = (values.corpus as string[] | undefined) ?? [];
  if (corpus.length === 0) throw new InvalidInputError('--corpus FILE is required (one or more)', 'corpus');
  const out = resolve(requiredString(values, 'out'));
  const { source, engine } = await setupEngine(values, { withoutCatalogue: true });
  try {
    const chunks = corpusChunks(engine, corpus.map((f) => resolve(f)), Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    const ids = chunks.flat();
    const counts = countUnigrams(ids, source.spec.vocabSize);
    writeUnigramFile(out, {
      counts: Array.from(counts),
      tokenizer: `${source.dir}/tokenizer.json`,
      synthetic: false,
      description: `token counts of ${corpus.join(', ')} tokenized with the model's tokenizer`,
      tokens: ids.length,
    });
    process.stderr.write(`counted ${ids.length} tokens into ${out}\n`);
  } finally {
    await engine.close();
  }
}
