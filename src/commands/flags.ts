// One declaration per flag, read by cli.ts to build the commander command and its --help: name,
// type, default, environment variable, help text and bounds. Each command file exports a
// CommandSpec with its flags table, so adding a flag is one line in that table.
//
// Values reach a command's run() keyed by the flag's own (kebab-case) name, already parsed and
// checked: integers and numbers are numbers within their bounds, choices one of the choices,
// repeatable flags arrays. A bad value is an InvalidInputError (one line, exit 2) at parse time.

import { InvalidInputError } from '../errors.ts';

export type FlagType = 'string' | 'path' | 'integer' | 'number' | 'boolean' | 'choice';

export interface Flag {
  /** Long name without the dashes, e.g. "max-tokens". */
  name: string;
  type: FlagType;
  help: string;
  /** Placeholder in --help (default from the type: N, X, DIR/FILE, TEXT). */
  arg?: string;
  default?: string | number | boolean;
  /** Environment variable that supplies the value when the flag is absent. */
  env?: string;
  choices?: readonly string[];
  min?: number;
  max?: number;
  exclusiveMin?: boolean;
  /** May be given several times; run() gets an array. */
  repeatable?: boolean;
  required?: boolean;
  short?: string;
}

export interface CommandSpec {
  name: string;
  /** One line: what the command is for. */
  summary: string;
  flags: Flag[];
  /** Full command lines, shown under "Examples" in --help. */
  examples: string[];
  /** Extra --help paragraph (environment that is not a flag, where output goes). */
  notes?: string;
  run(values: Record<string, unknown>): Promise<void>;
}

/** CONFIDENCE_SIDECAR_<NAME>: the environment variable of a configuration flag. */
export const envOf = (name: string) => `CONFIDENCE_SIDECAR_${name.toUpperCase().replace(/-/g, '_')}`;

/** Flags every model-using command takes. */
export const MODEL_FLAGS: Flag[] = [
  {
    name: 'model',
    type: 'path',
    arg: 'DIR',
    help: 'model folder (safetensors checkpoint or ONNX export); the built-in tiny demo model when absent',
    env: envOf('model'),
  },
  {
    name: 'device',
    type: 'choice',
    choices: ['cpu', 'cuda', 'auto'],
    default: 'cpu',
    help: 'ONNX Runtime execution provider',
    env: envOf('device'),
  },
  {
    name: 'dtype',
    type: 'choice',
    choices: ['fp32', 'fp16', 'int8', 'int4'],
    default: 'fp32',
    help:
      'weight type of graphs built from checkpoints: int8 (CPU decode ~1.5x, signals within ~0.02 nats) or int4 ' +
      '(smallest; ~0.1 nats) quantize every layer but the last MLP and the unembedding, which stay fp32; ' +
      'fp16 is for --device cuda (slower than fp32 on CPU). Exports run in their own dtype. README "Choosing a dtype"',
    env: envOf('dtype'),
  },
  {
    name: 'quantize-last-layer',
    type: 'boolean',
    help: 'with int8/int4 (or fp16): store the last layer\'s MLP and the unembedding in that dtype too (faster, smaller; the signals lose fidelity)',
    env: envOf('quantize-last-layer'),
  },
  {
    name: 'intra-op-threads',
    type: 'integer',
    min: 1,
    env: envOf('intra-op-threads'),
    help: "onnxruntime's threads inside one operator; default: every core (1 can be faster for tiny models on a busy host)",
  },
  {
    name: 'catalogue',
    type: 'path',
    arg: 'FILE',
    help: 'neuron catalogue (from `analyze --out`); default: computed from the weights and cached',
    env: envOf('catalogue'),
  },
  {
    name: 'unigram',
    type: 'path',
    arg: 'FILE',
    help: 'unigram counts (from `count-unigrams`); default: unigram.json in the model folder',
    env: envOf('unigram'),
  },
];

/** Servers' log verbosity (pino levels); probes and scrapes log only at debug and below. */
export const LOG_LEVEL_FLAG: Flag = {
  name: 'log-level',
  type: 'choice',
  choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
  default: 'info',
  env: envOf('log-level'),
  help: 'JSON log verbosity on stdout; /healthz, /readyz and /metrics requests are logged only at debug or trace',
};

/** The type as --help writes it, with its bounds. */
export function typeLabel(f: Flag): string {
  const bounds: string[] = [];
  if (f.min !== undefined) bounds.push(`${f.exclusiveMin ? '>' : '>='} ${f.min}`);
  if (f.max !== undefined) bounds.push(`<= ${f.max}`);
  const base = f.type === 'choice' ? `one of ${f.choices!.join('|')}` : f.type;
  const label = bounds.length ? `${base} ${bounds.join(', ')}` : base;
  return f.repeatable ? `${label}, repeatable` : label;
}

export function placeholder(f: Flag): string {
  if (f.arg) return f.arg;
  switch (f.type) {
    case 'integer':
      return 'N';
    case 'number':
      return 'X';
    case 'path':
      return 'PATH';
    case 'choice':
      return 'NAME';
    default:
      return 'TEXT';
  }
}

/** Parses and checks one value of `f` (from the command line or its environment variable). */
export function parseFlagValue(f: Flag, raw: string, from = `--${f.name}`): string | number {
  if (f.type === 'integer' || f.type === 'number') {
    const v = Number(raw);
    const what = f.type === 'integer' ? 'an integer' : 'a number';
    if (raw.trim() === '' || !Number.isFinite(v) || (f.type === 'integer' && !Number.isInteger(v))) {
      throw new InvalidInputError(`${from} must be ${what}, got "${raw}"`, f.name);
    }
    if (f.min !== undefined && (f.exclusiveMin ? v <= f.min : v < f.min)) {
      throw new InvalidInputError(
        `${from} must be ${f.exclusiveMin ? '>' : '>='} ${f.min}, got ${v}`,
        f.name,
      );
    }
    if (f.max !== undefined && v > f.max)
      throw new InvalidInputError(`${from} must be <= ${f.max}, got ${v}`, f.name);
    return v;
  }
  if (f.type === 'choice' && !f.choices!.includes(raw)) {
    throw new InvalidInputError(`${from} must be one of ${f.choices!.join(', ')}, got "${raw}"`, f.name);
  }
  if (raw === '' && f.type !== 'string') throw new InvalidInputError(`${from} must not be empty`, f.name);
  return raw;
}
