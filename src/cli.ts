// The `confidence-sidecar` command line. Each command is a small function; user errors (bad
// flags, unusable model folders) print one line and exit 2, bugs print their stack and exit 1.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isUserError, InvalidInputError } from './errors.ts';
import { runGenerate, runScore } from './commands/generate.ts';
import { runDemoModel } from './commands/demo-model.ts';
import { runAnalyze, runCountUnigrams } from './commands/analyze.ts';
import { runServe } from './commands/serve.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON: Options = {
  model: { type: 'string' },
  device: { type: 'string', default: 'cpu' },
  catalogue: { type: 'string' },
  unigram: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

interface Command {
  summary: string;
  usage: string;
  options: Options;
  run: (values: Record<string, unknown>) => Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  generate: {
    summary: 'generate a completion and (with --json) its per-token confidence signals',
    usage:
      'generate [--model DIR] --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] ' +
      '[--seed S] [--stop STR]... [--intervene L.I=MODE[:V]]... [--json] [--catalogue FILE] [--device cpu|cuda|auto]',
    options: {
      ...COMMON,
      prompt: { type: 'string' },
      'max-tokens': { type: 'string', default: '64' },
      temperature: { type: 'string', default: '0' },
      'top-p': { type: 'string', default: '1' },
      'top-k': { type: 'string', default: '0' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      intervene: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
    },
    run: runGenerate,
  },
  score: {
    summary: 'teacher-forced pass: per-position entropy, norm scale, next-token logprob',
    usage: 'score [--model DIR] (--text TEXT | --ids JSON_ARRAY) [--json] [--activations] [--intervene ...]',
    options: {
      ...COMMON,
      text: { type: 'string' },
      ids: { type: 'string' },
      json: { type: 'boolean', default: false },
      activations: { type: 'boolean', default: false },
      intervene: { type: 'string', multiple: true },
    },
    run: runScore,
  },
  'demo-model': {
    summary: 'write the built-in demo model (GPT-2 tokenizer, planted entropy and frequency neurons)',
    usage: 'demo-model --out DIR [--size tiny|small|gpt2-small]',
    options: { out: { type: 'string' }, size: { type: 'string', default: 'tiny' }, help: { type: 'boolean', short: 'h' } },
    run: runDemoModel,
  },
  analyze: {
    summary: 'find entropy and token-frequency neurons (weights + calibration + causal verification)',
    usage:
      'analyze [--model DIR] [--corpus FILE]... [--unigram FILE] [--k K] [--top N] [--out catalogue.json] ' +
      '[--chunk N] [--max-chunks N] [--causal-positions N] [--random N] [--seed S]',
    options: {
      ...COMMON,
      corpus: { type: 'string', multiple: true },
      k: { type: 'string' },
      top: { type: 'string', default: '10' },
      out: { type: 'string' },
      chunk: { type: 'string', default: '128' },
      'max-chunks': { type: 'string', default: '32' },
      'causal-positions': { type: 'string', default: '128' },
      random: { type: 'string', default: '20' },
      seed: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
    },
    run: runAnalyze,
  },
  'count-unigrams': {
    summary: "count token frequencies of a corpus with the model's tokenizer",
    usage: 'count-unigrams [--model DIR] --corpus FILE... --out unigram.json',
    options: { ...COMMON, corpus: { type: 'string', multiple: true }, out: { type: 'string' } },
    run: runCountUnigrams,
  },
  serve: {
    summary: 'run the OpenAI-compatible sidecar server with confidence telemetry',
    usage:
      'serve [--model DIR] [--host H] [--port 8080] [--catalogue FILE] [--device D] [--max-concurrency N] ' +
      '[--max-queue N] [--served-model-name NAME] [--kv-cache-mb 1024] [--max-prefill-tokens 256] [--intra-op-threads N]',
    options: {
      ...COMMON,
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8080' },
      // Generations run batched (one forward pass per step for all of them): up to 16 share a step.
      'max-concurrency': { type: 'string', default: '16' },
      'max-queue': { type: 'string', default: '64' },
      'kv-cache-mb': { type: 'string' },
      'max-prefill-tokens': { type: 'string' },
      'intra-op-threads': { type: 'string' },
      'served-model-name': { type: 'string' },
    },
    run: runServe,
  },
};

function usage(): string {
  const lines = ['usage: confidence-sidecar <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(15)} ${c.summary}`);
  lines.push('', 'Run `confidence-sidecar <command> --help` for its options.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`confidence-sidecar: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  try {
    let values: Record<string, unknown>;
    try {
      ({ values } = parseArgs({ args: rest, options: cmd.options, strict: true, allowPositionals: false }));
    } catch (e) {
      throw new InvalidInputError(`${(e as Error).message}\nusage: confidence-sidecar ${cmd.usage}`);
    }
    if (values.help) {
      process.stdout.write(`usage: confidence-sidecar ${cmd.usage}\n`);
      return 0;
    }
    await cmd.run(values);
    return 0;
  } catch (e) {
    if (isUserError(e)) {
      process.stderr.write(`confidence-sidecar ${name}: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`confidence-sidecar ${name}: internal error\n${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

// serve resolves once it has shut down after SIGINT/SIGTERM, so every command ends here.
process.exit(await main(process.argv.slice(2)));
