// The `confidence-sidecar` command line, on commander. Each command file (src/commands/<cmd>.ts)
// exports a CommandSpec: its one-line purpose, its flags table (src/commands/flags.ts), examples
// and run(); this file turns those into commander commands and owns what every command shares:
// --help / --version, one-line flag errors with exit 2, bugs with their stack and exit 1, and a
// quiet end when stdout's reader goes away (`generate --json | head`).

import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { isUserError } from './errors.ts';
import { outputClosed } from './commands/output.ts';
import { generateCommand, scoreCommand } from './commands/generate.ts';
import { demoModelCommand } from './commands/demo-model.ts';
import { analyzeCommand, countUnigramsCommand } from './commands/analyze.ts';
import { serveCommand } from './commands/serve.ts';
import { proxyCommand } from './commands/proxy.ts';
import {
  parseFlagValue as parseValue,
  placeholder,
  typeLabel,
  type CommandSpec,
  type Flag,
} from './commands/flags.ts';

/** Every command, in --help order. A new command: its file exports a CommandSpec, listed here. */
export const COMMANDS: CommandSpec[] = [
  serveCommand,
  proxyCommand,
  generateCommand,
  scoreCommand,
  analyzeCommand,
  countUnigramsCommand,
  demoModelCommand,
];

const PROGRAM = 'confidence-sidecar';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** commander's messages ("error: ...", a suggestion on a second line) as one line. */
const oneLine = (name: string, text: string) =>
  `${name}: ${text
    .replace(/^error: /, '')
    .trim()
    .replace(/\s*\n\s*/g, ' ')}\n`;

function toOption(f: Flag): Option {
  const flags = `${f.short ? `-${f.short}, ` : ''}--${f.name}${f.type === 'boolean' ? '' : ` <${placeholder(f)}>`}`;
  const o = new Option(flags, `${f.help} [${typeLabel(f)}]`);
  if (f.default !== undefined) o.default(f.default);
  if (f.env) o.env(f.env);
  if (f.required) o.makeOptionMandatory();
  if (f.type !== 'boolean') {
    o.argParser((raw: string, previous: unknown) => {
      const v = parseValue(f, raw);
      return f.repeatable ? [...(Array.isArray(previous) ? previous : []), v] : v;
    });
  }
  return o;
}

function examplesText(spec: CommandSpec): string {
  const lines = ['', 'Examples:', ...spec.examples.map((e) => `  $ ${e}`)];
  if (spec.notes) lines.push('', spec.notes);
  return lines.join('\n');
}

export function buildProgram(state: { command: string } = { command: PROGRAM }): Command {
  const output = (name: string) => ({
    outputError: (text: string, write: (s: string) => void) => write(oneLine(name, text)),
  });
  const program = new Command(PROGRAM)
    .description(
      "An OpenAI-compatible inference server that watches an LLM's confidence-regulation neurons token by token.",
    )
    .version(version(), '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'show this help')
    .exitOverride()
    .configureOutput(output(PROGRAM))
    .showSuggestionAfterError(true)
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        `  $ ${PROGRAM} demo-model --out ./demo`,
        `  $ ${PROGRAM} serve --port 8080`,
        `  $ ${PROGRAM} generate --prompt "The capital of France is" --json`,
        '',
        `Run \`${PROGRAM} COMMAND --help\` for a command's flags.`,
      ].join('\n'),
    );
  for (const spec of COMMANDS) {
    const cmd = program
      .command(spec.name)
      .description(spec.summary)
      .helpOption('-h, --help', 'show this help')
      .exitOverride()
      .configureOutput(output(`${PROGRAM} ${spec.name}`))
      .showSuggestionAfterError(true)
      .allowExcessArguments(false)
      .addHelpText('after', examplesText(spec));
    for (const f of spec.flags) cmd.addOption(toOption(f));
    cmd.action(async (opts: Record<string, unknown>) => {
      state.command = `${PROGRAM} ${spec.name}`;
      // run() reads values by the flags' own names (kebab-case), not commander's camelCase keys.
      const values: Record<string, unknown> = {};
      for (const o of cmd.options) {
        const name = o.long?.replace(/^--/, '');
        if (name) values[name] = opts[o.attributeName()];
      }
      await spec.run(values);
    });
  }
  return program;
}

/** A reader that went away (`| head`) is not an error: stop writing, end quietly. */
function endQuietlyOnEpipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE' && !outputClosed.signal.aborted) throw e;
      // Not process.exit(): the inference worker may be inside onnxruntime, and tearing the process
      // down under it can kill it with a signal. The command stops generating (it watches
      // outputClosed) and closes the engine, and the process ends with 0.
      outputClosed.abort();
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  const state = { command: PROGRAM };
  const known = COMMANDS.find((c) => c.name === argv[0]);
  if (known) state.command = `${PROGRAM} ${known.name}`;
  const program = buildProgram(state);
  if (argv.length === 0) {
    process.stderr.write(program.helpInformation());
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version went to stdout; anything else was written as one line by outputError.
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0
        ? 0
        : 2;
    }
    if (isUserError(e)) {
      process.stderr.write(`${state.command}: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`${state.command}: internal error\n${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

// Only as the program (tests import buildProgram): serve resolves once it has shut down after
// SIGINT/SIGTERM, so every command ends here.
if (process.argv[1] && /confidence-sidecar(\.js)?$|cli\.[tj]s$/.test(process.argv[1])) {
  endQuietlyOnEpipe();
  process.exit(await main(process.argv.slice(2)));
}
