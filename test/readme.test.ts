// The README works as written: every command line in its ```sh blocks is run (or named below as
// needing what a test cannot have), the OpenAI SDK snippet runs against the server `npm start`
// starts, and the neuron addresses it calls planted are the demo model's planted ones.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/wait.ts';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { demoModelDir } from '../src/demo/index.ts';

const ROOT = resolve(import.meta.dirname, '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** Fenced blocks of one language (also indented ones inside list items), dedented. */
function blocks(lang: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`^( *)\`\`\`${lang}\\n([\\s\\S]*?)^\\1\`\`\``, 'gm');
  for (const m of README.matchAll(re)) {
    const indent = m[1]!.length;
    out.push(
      m[2]!
        .split('\n')
        .map((l) => l.slice(indent))
        .join('\n'),
    );
  }
  return out;
}

/** Command lines: continuation lines joined, comment lines dropped. */
const commandLines = (): string[] =>
  blocks('sh').flatMap((b) =>
    b
      .replace(/\\\n\s*/g, '')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#')),
  );

/** Lines a test cannot run, and why. Anything else in a sh block must be run below. */
const NOT_RUN: [RegExp, string][] = [
  [/^npm ci$/, 'installs from the registry (network)'],
  [
    /^bash \.ci\/install-system-deps\.sh && npm ci && npm test$/,
    'installs system packages and runs this suite',
  ],
  [/^ONNXRUNTIME_NODE_INSTALL=cuda12 /, 'downloads the CUDA provider (network, GPU host)'],
  [/serve --device cuda/, 'needs an NVIDIA GPU'],
];
const SERVER = /^(?:npm ci && )?npm start -- --port 8080$/;
const QUERY = /^curl -s http:\/\/127\.0\.0\.1:8080\//;
const MONITOR = /^node -e .*\/v1\/monitor\/stream/;
const CLI = /^\.\/bin\/confidence-sidecar\.js /;
const BENCH = /^npm run bench -- /;

describe('README command lines', () => {
  const lines = commandLines();

  it('every command line is either run here or named as not runnable', () => {
    const uncovered = lines.filter(
      (l) =>
        ![SERVER, QUERY, MONITOR, CLI, BENCH].some((r) => r.test(l)) && !NOT_RUN.some(([r]) => r.test(l)),
    );
    expect(uncovered).toEqual([]);
    expect(lines.filter((l) => SERVER.test(l))).toHaveLength(1);
  });

  // The CLI commands run in a scratch folder that links the checkout's files, so ./demo and
  // unigram.json land there and relative paths (test/fixtures/...) resolve as in a checkout.
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'cs-readme-'));
    for (const f of ['bin', 'src', 'bench', 'test', 'node_modules', 'package.json', 'tsconfig.json']) {
      symlinkSync(join(ROOT, f), join(work, f));
    }
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const runnable = (l: string) => !NOT_RUN.some(([r]) => r.test(l));
  for (const line of lines.filter((l) => CLI.test(l) && runnable(l))) {
    it(line, () => {
      const r = spawnSync('bash', ['-c', line], { cwd: work, encoding: 'utf8', timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/error|\n\s+at /i);
      expect(r.stdout.length + r.stderr.length).toBeGreaterThan(0);
    });
  }

  for (const line of lines.filter((l) => BENCH.test(l))) {
    // A bench run takes minutes; this checks what went wrong before: how npm hands the arguments
    // on and whether bench/run.ts accepts them (it parses strictly and exits before measuring).
    it(`${line} (arguments only)`, () => {
      const r = spawnSync('bash', ['-c', line], {
        cwd: work,
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, CONFIDENCE_SIDECAR_BENCH_PARSE_ONLY: '1' },
      });
      expect(r.status, r.stderr).toBe(0);
      const parsed = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
      const given = [...line.matchAll(/--([a-z-]+) (\S+)/g)].map((m) => [m[1]!, m[2]!]);
      expect(given.length).toBeGreaterThan(0);
      for (const [k, v] of given) expect(parsed[k]).toBe(v);
    });
  }

  describe('the quick start session against `npm start`', () => {
    let server: ChildProcess;
    let port = 0;
    const at = (line: string) => line.replaceAll('127.0.0.1:8080', `127.0.0.1:${port}`);
    beforeAll(async () => {
      // Port 0 instead of 8080 so the test cannot collide with anything on the machine.
      const [cmd, ...args] = lines
        .find((l) => SERVER.test(l))!
        .replace(/^npm ci && /, '') // the install is this checkout's own
        .replace('--port 8080', '--port 0')
        .split(' ');
      server = spawn(cmd!, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      port = await new Promise<number>((res, rej) => {
        let buf = '';
        server.stderr!.on('data', (d) => {
          buf += String(d);
          const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buf);
          if (m) res(Number(m[1]));
        });
        server.on('exit', () => rej(new Error(`npm start exited:\n${buf}`)));
      });
      // Ready once /readyz says so (the model loads after the server listens).
      await waitFor(
        () => fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false),
        'the server to load the model (/readyz 200)',
        120_000,
        200,
      );
    }, 240_000);
    afterAll(async () => {
      server?.kill('SIGTERM');
      await new Promise((r) => server?.on('exit', r));
    });

    it('the WebSocket line prints token events while a query runs', async () => {
      const line = lines.find((l) => MONITOR.test(l))!;
      const ws = spawn('bash', ['-c', at(line).replace('ws://127.0.0.1:8080', `ws://127.0.0.1:${port}`)], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      ws.stdout!.on('data', (d) => (out += String(d)));
      // Wait until it is connected (the hub counts subscribers in /metrics).
      await waitFor(
        async () => /llm_ws_subscribers\{[^}]*\} [1-9]/.test(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()),
        'the README\'s WebSocket client to connect',
        30_000,
        100,
      );
      for (const q of lines.filter((l) => QUERY.test(l))) {
        const r = spawnSync('bash', ['-c', at(q)], { encoding: 'utf8', timeout: 60_000 });
        expect(r.status, `${q}\n${r.stderr}`).toBe(0);
        expect(r.stdout.length, q).toBeGreaterThan(0);
        if (!q.includes('/metrics')) expect(() => JSON.parse(r.stdout), q).not.toThrow();
        expect(r.stdout, q).not.toMatch(/"error"/);
      }
      for (let i = 0; i < 100 && !out.includes('"type":"token"'); i++)
        await new Promise((r) => setTimeout(r, 100));
      ws.kill();
      expect(out).toContain('"type":"token"');
    });

    it('the OpenAI SDK snippet runs and prints the reply and its logprobs', () => {
      const [snippet] = blocks('js');
      // Next to package.json so `openai` resolves from the checkout's node_modules.
      const file = join(ROOT, `.readme-query-${process.pid}.mjs`);
      writeFileSync(file, at(snippet!));
      try {
        const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/\[\s*\[ '[^']*', -?\d/); // the [token, logprob] pairs
      } finally {
        rmSync(file, { force: true });
      }
    });
  });
});

describe('README neuron addresses', () => {
  it('the planted neurons it names are the demo model’s', async () => {
    const planted = JSON.parse(readFileSync(join(await demoModelDir('tiny'), 'planted.json'), 'utf8'));
    const m =
      /planted entropy neurons are `([\d.]+)` and `([\d.]+)`, its\s+token-frequency neurons `([\d.]+)` and `([\d.]+)`/.exec(
        README,
      );
    expect(m).not.toBeNull();
    expect([m![1], m![2]]).toEqual(planted.entropy.slice(0, 2));
    expect([m![3], m![4]]).toEqual(planted.frequency.slice(0, 2));
    expect(planted.entropy).toHaveLength(2);
    expect(planted.frequency).toHaveLength(2);
    // Every address used in an example is a planted one.
    const used = [...README.matchAll(/(?:--intervene |"neuron": ")(\d+\.\d+)/g)].map((x) => x[1]);
    expect(used.length).toBeGreaterThan(0);
    for (const a of used) expect([...planted.entropy, ...planted.frequency]).toContain(a);
  });

  it('states the Node version package.json requires', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const min = /^>=(\d+\.\d+)$/.exec(pkg.engines.node)![1];
    expect(README).toContain(`Requires Node.js ${min} or later`);
  });
});
