// The command line explains itself and fails politely, run as a user runs it (child processes of
// bin/confidence-sidecar.js, and `npm start`): --help for the program and for every command names
// each flag with its type, default and environment variable and shows examples; --version is
// package.json's; every flag error is one line with exit 2; a closed stdout ends the command
// quietly; `npm start` passes SIGTERM on so the server does not outlive it.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createConnection } from 'node:net';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { COMMANDS, main } from '../src/cli.ts';
import { typeLabel } from '../src/commands/flags.ts';
import { fixture } from './helpers/shared.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BIN = resolve(ROOT, 'bin/confidence-sidecar.js');

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * main() in this process, its stdout and stderr captured: the parsing and help paths start no
 * engine, and a child process per case would cost seconds each on a loaded machine.
 */
async function inProcess(args: string[], env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
  }
}
afterEach(() => vi.restoreAllMocks());

/** commander wraps help at 80 columns; compare with whitespace collapsed. */
const flat = (s: string) => s.replace(/\s+/g, ' ');

describe('--help and --version', () => {
  it('the program lists every command with its one-line purpose', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const c of COMMANDS) {
      expect(flat(r.stdout)).toContain(`${c.name} [options] ${c.summary}`);
    }
  });

  it('no command at all: the help on stderr and exit 2', async () => {
    const r = await inProcess([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: confidence-sidecar');
  });

  for (const c of COMMANDS) {
    it(`${c.name} --help: every flag with type, default and env var, and examples`, async () => {
      const r = await inProcess([c.name, '--help']);
      expect(r.code).toBe(0);
      const text = flat(r.stdout);
      expect(text).toContain(c.summary);
      for (const f of c.flags) {
        expect(text).toContain(`--${f.name}`);
        expect(text).toContain(`[${typeLabel(f)}]`);
        if (f.default !== undefined) expect(text).toContain(`default: ${JSON.stringify(f.default)}`);
        if (f.env) expect(text).toContain(`env: ${f.env}`);
      }
      expect(c.examples.length).toBeGreaterThan(0);
      for (const e of c.examples) {
        expect(e.startsWith(`confidence-sidecar ${c.name}`)).toBe(true);
        expect(r.stdout).toContain(`$ ${e}`);
      }
    });
  }

  it('--version is the package version', () => {
    const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8'));
    const r = cli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });
});

describe('flag errors: one line, exit 2', () => {
  const cases: [string[], RegExp, Record<string, string>?][] = [
    [
      ['generate', '--prompt', 'x', '--max-tokens', '-1'],
      /^confidence-sidecar generate: --max-tokens must be >= 1, got -1$/,
    ],
    [['generate', '--prompt', 'x', '--max-tokens', '1.5'], /--max-tokens must be an integer, got "1.5"/],
    [['generate', '--prompt', 'x', '--temperature', 'hot'], /--temperature must be a number/],
    [['generate', '--prompt', 'x', '--device', 'gpu'], /--device must be one of cpu, cuda, auto/],
    [['generate', '--prompt', 'x', '--jsn'], /unknown option '--jsn' \(Did you mean --json\?\)/],
    [['generate'], /required option '--prompt <TEXT>' not specified/],
    [['generate', '--prompt', 'x', 'extra'], /too many arguments/],
    // analyze --json used to be accepted and ignored.
    [['analyze', '--json'], /^confidence-sidecar analyze: unknown option '--json'$/],
    [['serve', '--port', '70000'], /--port must be <= 65535/],
    [['serve', '--unknown-fields', 'maybe'], /--unknown-fields must be one of reject, ignore/],
    [['serve'], /--port must be an integer, got "eighty"/, { CONFIDENCE_SIDECAR_PORT: 'eighty' }],
    [['demo-model', '--out', '/tmp/x', '--size', 'huge'], /--size must be one of tiny, small, gpt2-small/],
    [['frobnicate'], /^confidence-sidecar: unknown command 'frobnicate'$/],
  ];
  it('as a real process too: --max-tokens -1 is one line and exit 2', () => {
    const r = cli(['generate', '--prompt', 'x', '--max-tokens', '-1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('confidence-sidecar generate: --max-tokens must be >= 1, got -1\n');
  });
  for (const [args, message, env] of cases) {
    it(args.join(' ') + (env ? ` with ${Object.keys(env).join(',')}` : ''), async () => {
      const r = await inProcess(args, env);
      expect(r.code, r.stderr).toBe(2);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(r.stdout).toBe('');
    });
  }
});

describe('running', () => {
  it('an environment variable stands in for its flag', () => {
    const args = ['score', '--text', 'The moon', '--json'];
    const viaFlag = cli([...args, '--model', fixture('aidreams260K-onnx')]);
    const viaEnv = cli(args, { CONFIDENCE_SIDECAR_MODEL: fixture('aidreams260K-onnx') });
    expect(viaFlag.code).toBe(0);
    expect(viaEnv.stdout).toBe(viaFlag.stdout);
  });

  it('generate --frequency-penalty: each token line names the adjustment once a token was seen', () => {
    const args = [
      'generate',
      '--model',
      fixture('aidreams260K-onnx'),
      '--prompt',
      'The moon',
      '--max-tokens',
      '4',
      '--json',
    ];
    const r = cli([...args, '--frequency-penalty', '1.5']);
    expect(r.code, r.stderr).toBe(0);
    const tokens = r.stdout
      .trim()
      .split('\n')
      .slice(0, -1)
      .map((l) => JSON.parse(l));
    // Nothing is counted before the first completion token, so the first row is the model's own.
    expect(tokens.map((t) => t.adjustments)).toEqual([
      undefined,
      ['frequency_penalty'],
      ['frequency_penalty'],
      ['frequency_penalty'],
    ]);
    const plain = cli(args);
    const plainTokens = plain.stdout
      .trim()
      .split('\n')
      .slice(0, -1)
      .map((l) => JSON.parse(l));
    // The first token and its signals are unchanged; the signals are the raw row's throughout.
    expect(tokens[0].token_id).toBe(plainTokens[0].token_id);
    expect(tokens[0].entropy).toBe(plainTokens[0].entropy);
  });

  it('generate --json | head -1 ends quietly when the reader goes away', async () => {
    const child = spawn(
      process.execPath,
      // 250 JSON lines are far more than a pipe buffers (64 KiB), so writes continue after the close.
      [
        BIN,
        'generate',
        '--model',
        fixture('gpt2-tiny-random-onnx'),
        '--prompt',
        'The moon',
        '--max-tokens',
        '250',
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const first = await new Promise<string>((res, rej) => {
      let buf = '';
      child.on('exit', () => rej(new Error(`generate exited before its first line:\n${stderr}`)));
      child.stdout.on('data', (d) => {
        buf += String(d);
        if (buf.includes('\n')) res(buf.split('\n')[0]!);
      });
    });
    child.stdout.destroy();
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    expect(JSON.parse(first)).toHaveProperty('token_id');
    expect(code).toBe(0);
    expect(stderr).not.toMatch(/EPIPE|Error|\n\s+at /);
  });

  it('npm start forwards SIGTERM: the server stops with npm', async () => {
    const npm = spawn('npm', ['start', '--', '--model', fixture('aidreams260K-onnx'), '--port', '0'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const url = await new Promise<URL>((res, rej) => {
      let buf = '';
      npm.stderr.on('data', (d) => {
        buf += String(d);
        const m = /listening on (http:\/\/\S+)/.exec(buf);
        if (m) res(new URL(m[1]!));
      });
      npm.on('exit', () => rej(new Error(`npm start exited early:\n${buf}`)));
    });
    const port = Number(url.port);
    const accepts = () =>
      new Promise<boolean>((res) => {
        const s = createConnection({ host: '127.0.0.1', port }, () => {
          s.destroy();
          res(true);
        });
        s.on('error', () => res(false));
      });
    expect(await accepts()).toBe(true);
    npm.kill('SIGTERM');
    await new Promise((res) => npm.on('exit', res));
    // The server (npm's child) has shut down too: nothing listens on its port any more.
    let open = true;
    for (let i = 0; i < 50 && open; i++) {
      open = await accepts();
      if (open) await new Promise((r) => setTimeout(r, 200));
    }
    expect(open).toBe(false);
  });
});
