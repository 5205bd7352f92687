// Proxy-mode benchmark (`npm run bench -- --proxy`, or `tsx bench/proxy.ts`). Side by side in one
// run against the same synthetic upstream, interleaved direct / through the proxy:
//   ttfb        time to response headers, per request
//   per-chunk   arrival time minus the upstream's send time (stamped in each chunk) per chunk
//   throughput  bytes/s with 64 concurrent streams of back-to-back chunks
// and the shadow scorer's tokens/s on the GPT-2-small-sized demo model (teacher-forced, one
// token per extend as a stream delivers them, 1 and 8 streams at once) against that model's
// single-stream decode rate. The upstream and the proxy run in their own processes (their own
// event loops), the client in this one; timestamps are epoch-based high-resolution clocks, which
// all processes on one machine share. Targets: ttfb added < 1 ms, per chunk < 0.2 ms (medians),
// throughput >= 0.95x direct, scoring >= 5x decode. Printed, never asserted.

import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { greedyParams } from '../test/helpers/sampling.ts';

const now = () => performance.timeOrigin + performance.now();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- roles run in child processes -------------------------------------------------------------

/** Streams `n` SSE chunks of about `size` bytes, `gap` ms apart, each stamped with its send time. */
async function runUpstream(): Promise<void> {
  const server = createServer(async (req, res) => {
    for await (const _ of req);
    const u = new URL(req.url ?? '/', 'http://x');
    const n = Number(u.searchParams.get('n') ?? 32);
    const gap = Number(u.searchParams.get('gap') ?? 0);
    const pad = 'x'.repeat(Number(u.searchParams.get('size') ?? 200));
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (let i = 0; i < n; i++) {
      if (gap > 0) await sleep(gap);
      const body = JSON.stringify({ choices: [{ index: 0, delta: { content: pad } }], t: now() });
      if (!res.write(`data: ${body}\n\n`)) await new Promise((r) => res.once('drain', r));
    }
    res.end('data: [DONE]\n\n');
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
}

async function runProxyRole(upstream: string): Promise<void> {
  const { buildProxyServer } = await import('../src/proxy/app.ts');
  const app = buildProxyServer({ upstream, engine: null, telemetry: () => null as never });
  await app.listen({ host: '127.0.0.1', port: 0 });
  process.once('SIGINT', () => void app.close().then(() => process.exit(0)));
  process.send!({ port: (app.server.address() as AddressInfo).port });
}

/** The simplest correct relay (node:http request piped to the response): a floor for comparison. */
async function runPipeRole(upstream: string): Promise<void> {
  const { request: httpRequest, Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true });
  const target = new URL(upstream);
  const server = createServer((req, res) => {
    const up = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        path: req.url,
        method: req.method,
        headers: req.headers,
        agent,
      },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
}

function child(args: string[]): Promise<{ proc: ChildProcess; url: string }> {
  const prof =
    process.env.BENCH_PROXY_PROFILE && args.includes('proxy')
      ? ['--cpu-prof', '--cpu-prof-dir=/tmp/proxy-prof']
      : [];
  const proc = fork(fileURLToPath(import.meta.url), args, { execArgv: ['--import', 'tsx', ...prof] });
  return new Promise((resolve, reject) => {
    proc.once('message', (m: { port: number }) => resolve({ proc, url: `http://127.0.0.1:${m.port}` }));
    proc.once('exit', (c) => reject(new Error(`child ${args.join(' ')} exited ${c}`)));
  });
}

// --- client measurements ----------------------------------------------------------------------

/** One streamed request: ttfb (ms) and each chunk's latency (ms) from its upstream stamp. */
async function oneStream(
  pool: Pool,
  path: string,
): Promise<{ ttfb: number; chunks: number[]; bytes: number }> {
  const t0 = performance.now();
  const res = await pool.request({
    path,
    method: 'POST',
    body: '{"model":"m","prompt":"x","stream":true}',
    headers: { 'content-type': 'application/json' },
  });
  const ttfb = performance.now() - t0;
  const chunks: number[] = [];
  let bytes = 0;
  let tail = '';
  for await (const c of res.body as AsyncIterable<Buffer>) {
    const at = now();
    bytes += c.length;
    // Per-chunk latency from the stamps of the events this network chunk completed.
    const text = tail + c.toString('latin1');
    const events = text.split('\n\n');
    tail = events.pop()!;
    for (const e of events) {
      const m = /"t":([0-9.]+)/.exec(e);
      if (m) chunks.push(at - Number(m[1]));
    }
  }
  return { ttfb, chunks, bytes };
}

async function latency(direct: Pool, proxied: Pool, reps: number) {
  const r = {
    direct: { ttfb: [] as number[], chunk: [] as number[] },
    proxy: { ttfb: [] as number[], chunk: [] as number[] },
  };
  const path = '/v1/completions?n=16&gap=2&size=200';
  for (let i = 0; i < 5; i++) await Promise.all([oneStream(direct, path), oneStream(proxied, path)]); // warm-up
  for (let i = 0; i < reps; i++) {
    for (const [name, pool] of [
      ['direct', direct],
      ['proxy', proxied],
    ] as const) {
      const s = await oneStream(pool, path);
      r[name].ttfb.push(s.ttfb);
      r[name].chunk.push(...s.chunks);
    }
  }
  return r;
}

async function throughput(pool: Pool, streams: number, path: string): Promise<number> {
  const t0 = performance.now();
  const all = await Promise.all(Array.from({ length: streams }, () => oneStream(pool, path)));
  const s = (performance.now() - t0) / 1000;
  return all.reduce((n, x) => n + x.bytes, 0) / s;
}

export async function scoring(): Promise<void> {
  const { demoModelDir } = await import('../src/demo/index.ts');
  const { createEngine } = await import('../src/runtime/index.ts');
  const engine = await createEngine({
    model: await demoModelDir('gpt2-small'),
    watched: { entropy: [], frequency: [] },
  });
  const prompt = engine.encode(
    'Once upon a time there was a little dog who lived in a small house by the sea.',
  );
  const N = Number(process.env.BENCH_SCORE_TOKENS ?? 16);
  const ids = Array.from({ length: N }, (_, i) => prompt[i % prompt.length]!);
  const decode = async () => {
    const t0 = performance.now();
    let n = 0;
    const params = greedyParams(N);
    for await (const _ of engine.generate({ promptIds: prompt, params })) n++;
    return n / ((performance.now() - t0) / 1000);
  };
  /** `streams` sessions at once, each fed `per` tokens per extend (1 = as a stream delivers them). */
  const score = async (streams: number, per: number) => {
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: streams }, async () => {
        const s = await engine.openScoring(prompt);
        for (let i = 0; i < N; i += per) await s.extend(ids.slice(i, i + per));
        await s.close();
      }),
    );
    return (streams * N) / ((performance.now() - t0) / 1000);
  };
  await decode(); // warm-up
  const dm = await decode();
  const rows: [string, number][] = [
    ['1 stream, 1 token/extend', await score(1, 1)],
    ['4 streams, 1 token/extend', await score(4, 1)],
    [`1 stream, ${N} tokens/extend`, await score(1, N)],
  ];
  await engine.close();
  console.log(
    `  shadow scoring, GPT-2-small-sized demo model, ${N} completion tokens after a ${prompt.length}-token prompt:`,
  );
  console.log(`    single-stream decode                 ${dm.toFixed(1).padStart(8)} tok/s`);
  for (const [what, v] of rows)
    console.log(
      `    scoring, ${what.padEnd(29)}${v.toFixed(1).padStart(8)} tok/s  (${(v / dm).toFixed(2)}x decode; target >= 5x)`,
    );
}

export async function benchProxy(opts: { reps?: number; scoring?: boolean } = {}): Promise<void> {
  const up = await child(['--role', 'upstream']);
  const px = await child(['--role', 'proxy', '--upstream', up.url]);
  const pp = await child(['--role', 'pipe', '--upstream', up.url]);
  const direct = new Pool(up.url, { connections: 128 });
  const proxied = new Pool(px.url, { connections: 128 });
  const piped = new Pool(pp.url, { connections: 128 });
  try {
    console.log('\nproxy mode (numbers are noisy: the machine is shared)');
    const l = await latency(direct, proxied, opts.reps ?? 40);
    const row = (what: string, d: number[], p: number[], target: string) =>
      console.log(
        `  ${what.padEnd(29)} direct ${median(d).toFixed(3).padStart(8)} ms   proxy ${median(p).toFixed(3).padStart(8)} ms   added ${(median(p) - median(d)).toFixed(3).padStart(7)} ms  (${target})`,
      );
    row('time to first byte', l.direct.ttfb, l.proxy.ttfb, 'target < 1 ms');
    row('per-chunk latency', l.direct.chunk, l.proxy.chunk, 'target < 0.2 ms');
    const lp = await latency(direct, piped, opts.reps ?? 40);
    row('ttfb, node:http pipe', lp.direct.ttfb, lp.proxy.ttfb, 'baseline relay, same setup');
    row('chunk, node:http pipe', lp.direct.chunk, lp.proxy.chunk, 'baseline relay, same setup');
    const mb = (x: number) => (x / 1e6).toFixed(1).padStart(7);
    for (const [label, path] of [
      ['paced (5 ms/chunk)', '/v1/completions?n=100&gap=5&size=300'],
      ['unpaced (saturating)', '/v1/completions?n=400&gap=0&size=1000'],
    ] as const) {
      const td: number[] = [];
      const tp: number[] = [];
      const tb: number[] = [];
      for (let i = 0; i < 3; i++) {
        td.push(await throughput(direct, 64, path));
        tp.push(await throughput(proxied, 64, path));
        tb.push(await throughput(piped, 64, path));
      }
      const [d, p, b] = [median(td), median(tp), median(tb)];
      console.log(
        `  64 streams, ${label.padEnd(21)} direct ${mb(d)} MB/s   proxy ${mb(p)} MB/s = ${(p / d).toFixed(3)}x (target >= 0.95x)   node:http pipe ${mb(b)} MB/s = ${(b / d).toFixed(3)}x`,
      );
    }
  } finally {
    await direct.close();
    await proxied.close();
    await piped.close();
    pp.proc.kill();
    up.proc.kill();
    px.proc.kill('SIGINT');
  }
  if (opts.scoring !== false) await scoring();
}

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    upstream: { type: 'string' },
    reps: { type: 'string' },
    'no-scoring': { type: 'boolean' },
    'only-scoring': { type: 'boolean' },
  },
  strict: false,
});
if (values.role === 'upstream') await runUpstream();
else if (values.role === 'proxy') await runProxyRole(String(values.upstream));
else if (values.role === 'pipe') await runPipeRole(String(values.upstream));
else if (values['only-scoring'] === true) await scoring();
else if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1])
  await benchProxy({ reps: values.reps ? Number(values.reps) : 40, scoring: values['no-scoring'] !== true });
