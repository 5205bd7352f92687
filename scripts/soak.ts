// npm run soak -- [--streams 64] [--duration 60] [--ws 16] [--max-requests 100000] [--model DIR]
//
// The standing reliability soak (issue 11): starts the sidecar as a child process on loopback and
// drives it for a bounded time with N concurrent streaming clients (readers, slow readers,
// non-readers, random disconnects), WebSocket subscribers (a third of them paused), interventions
// added and removed, and a /healthz probe every 50 ms. Prints requests done, errors by kind, 429s,
// p50/p99 time to first token and inter-token latency, /healthz p99 and max, the server's RSS at
// start / peak / after, monitor events dropped and sockets open at the end; the targets (0 errors
// other than 429, /healthz p99 < 100 ms and max < 500 ms, RSS after within 10% of start) are
// checked and printed. Stops by itself: at the duration, or the request cap, whichever first.

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, setGlobalDispatcher } from 'undici';
import WebSocket from 'ws';

const { values } = parseArgs({
  options: {
    streams: { type: 'string', default: '64' },
    duration: { type: 'string', default: '60' },
    ws: { type: 'string', default: '16' },
    'max-requests': { type: 'string', default: '100000' },
    model: { type: 'string' },
  },
});
const STREAMS = Number(values.streams);
const DURATION_MS = Number(values.duration) * 1000;
const WS_SUBSCRIBERS = Number(values.ws);
const MAX_REQUESTS = Number(values['max-requests']);
const ADMIN = 'soak-admin';
// Our own connection pool, so that its idle keep-alive connections can be closed before the
// server's open sockets are counted.
const agent = new Agent({ keepAliveTimeout: 1000 });
setGlobalDispatcher(agent);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (a: number, b: number) => a + Math.random() * (b - a);

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
function openSockets(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

// ---------------------------------------------------------------- the server
const bin = fileURLToPath(new URL('../bin/confidence-sidecar.js', import.meta.url));
const args = [
  bin,
  'serve',
  '--host',
  '127.0.0.1',
  '--port',
  '0',
  '--max-concurrency',
  '4',
  '--max-queue',
  '32',
];
if (values.model) args.push('--model', values.model);
const child = spawn(process.execPath, args, {
  env: { ...process.env, CONFIDENCE_SIDECAR_ADMIN_TOKEN: ADMIN },
  stdio: ['ignore', 'ignore', 'pipe'],
});
const hardStop = setTimeout(() => child.kill('SIGKILL'), DURATION_MS + 180_000);
hardStop.unref();
const url = await new Promise<string>((resolve, reject) => {
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c;
    const m = /listening on (http:\/\/\S+)/.exec(err);
    if (m) resolve(m[1]!);
  });
  child.on('exit', (code) => reject(new Error(`server exited (${code}): ${err.slice(-2000)}`)));
});
for (;;) {
  const r = await fetch(`${url}/readyz`).catch(() => null);
  if (r?.status === 200) break;
  await sleep(200);
}
const model = ((await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] }).data[0]!.id;
const layer = ((await (await fetch(`${url}/v1/neurons`)).json()) as { layer: number }).layer;
await sleep(1000);
const rssStart = rssMiB(child.pid!);
const socketsStart = openSockets(child.pid!);
let rssPeak = rssStart;

// ---------------------------------------------------------------- the load
const stats = {
  done: 0,
  started: 0,
  r429: 0,
  errors: new Map<string, number>(),
  ttft: [] as number[],
  itl: [] as number[],
};
const error = (kind: string) => stats.errors.set(kind, (stats.errors.get(kind) ?? 0) + 1);
const deadline = Date.now() + DURATION_MS;
const running = () => Date.now() < deadline && stats.started < MAX_REQUESTS;

type Behaviour = 'reader' | 'slow' | 'nonreader' | 'disconnect';
function behaviour(): Behaviour {
  const x = Math.random();
  return x < 0.6 ? 'reader' : x < 0.75 ? 'slow' : x < 0.85 ? 'nonreader' : 'disconnect';
}

async function oneStream(): Promise<void> {
  const kind = behaviour();
  const abort = new AbortController();
  const chat = Math.random() < 0.5;
  const body = chat
    ? {
        model,
        messages: [{ role: 'user', content: 'The moon' }],
        max_tokens: Math.round(rand(8, 64)),
        stream: true,
        confidence: true,
      }
    : { model, prompt: 'Once upon a time', max_tokens: Math.round(rand(8, 64)), stream: true, logprobs: 2 };
  stats.started++;
  const t0 = performance.now();
  if (kind === 'disconnect') setTimeout(() => abort.abort(), rand(50, 1500));
  try {
    const res = await fetch(`${url}/v1/${chat ? 'chat/completions' : 'completions'}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: abort.signal,
    });
    if (res.status === 429) {
      stats.r429++;
      await res.body?.cancel();
      await sleep(rand(50, 250));
      return;
    }
    if (res.status !== 200) {
      error(`http_${res.status}_${((await res.json()) as { error?: { code?: string } }).error?.code}`);
      return;
    }
    if (kind === 'nonreader') {
      // Reads nothing for a while, then goes away (the server must not hold its output meanwhile).
      await sleep(rand(1000, 5000));
      abort.abort();
      return;
    }
    const reader = res.body!.getReader();
    let last = t0;
    let first = true;
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const now = performance.now();
      text += new TextDecoder().decode(value);
      if (first) stats.ttft.push(now - t0);
      else stats.itl.push(now - last);
      first = false;
      last = now;
      if (kind === 'slow') await sleep(rand(20, 80));
    }
    if (text.includes('"error"')) error('stream_error_event');
    else if (!text.includes('[DONE]')) error('stream_incomplete');
    stats.done++;
  } catch (e) {
    if (abort.signal.aborted) {
      stats.done++;
      return;
    }
    error(`network_${(e as Error).name}`);
  }
}

async function streamSlot(): Promise<void> {
  while (running()) await oneStream();
}

const healthz: number[] = [];
async function probe(): Promise<void> {
  while (running()) {
    const t0 = performance.now();
    const r = await fetch(`${url}/healthz`).catch(() => null);
    if (r?.status !== 200) error('healthz_failed');
    else await r.text();
    healthz.push(performance.now() - t0);
    rssPeak = Math.max(rssPeak, rssMiB(child.pid!));
    await sleep(50);
  }
}

async function interventions(): Promise<void> {
  const auth = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };
  const live: string[] = [];
  while (running()) {
    if (live.length < 8 && Math.random() < 0.6) {
      const r = await fetch(`${url}/v1/interventions`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({
          neuron: `${layer}.${Math.floor(rand(0, 16))}`,
          mode: 'scale',
          value: rand(0.5, 1.5),
          ttl_s: rand(1, 5),
        }),
      });
      if (r.status === 201) live.push(((await r.json()) as { id: string }).id);
      else error(`intervention_create_${r.status}`);
    } else if (live.length > 0) {
      const id = live.splice(Math.floor(rand(0, live.length)), 1)[0]!;
      const r = await fetch(`${url}/v1/interventions/${id}`, {
        method: 'DELETE',
        headers: { authorization: auth.authorization },
      });
      // 404: it expired first (its TTL), which is fine.
      if (r.status !== 200 && r.status !== 404) error(`intervention_delete_${r.status}`);
      else await r.text();
    }
    await sleep(rand(100, 500));
  }
}

const subscribers: WebSocket[] = [];
for (let i = 0; i < WS_SUBSCRIBERS; i++) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/monitor/stream?token=${ADMIN}`);
  ws.on('error', () => error('ws_error'));
  // A third never read: their events must be dropped, not buffered without bound.
  if (i % 3 === 0) ws.on('open', () => (ws as unknown as { _socket: { pause(): void } })._socket.pause());
  subscribers.push(ws);
}

console.log(
  `soak: ${STREAMS} streams, ${WS_SUBSCRIBERS} WebSocket subscribers, ${DURATION_MS / 1000} s against ${url} (${model})`,
);
await Promise.all([...Array.from({ length: STREAMS }, streamSlot), probe(), interventions()]);
for (const ws of subscribers) ws.terminate();

// ---------------------------------------------------------------- after
const metrics = await (await fetch(`${url}/metrics`)).text();
await agent.close();
await sleep(5000);
const rssAfter = rssMiB(child.pid!);
const socketsEnd = openSockets(child.pid!);
const dropped = [...metrics.matchAll(/^llm_ws_events_dropped_total\{[^}]*\} (\S+)$/gm)].reduce(
  (n, m) => n + Number(m[1]),
  0,
);
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));

const errorsOther = [...stats.errors.values()].reduce((a, b) => a + b, 0);
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
console.log(`requests started ${stats.started}, done ${stats.done}, 429s ${stats.r429}`);
console.log(`errors (other than 429): ${errorsOther} ${JSON.stringify(Object.fromEntries(stats.errors))}`);
console.log(
  `TTFT ms p50 ${f(pct(stats.ttft, 50))} p99 ${f(pct(stats.ttft, 99))}; ITL ms p50 ${f(pct(stats.itl, 50))} p99 ${f(pct(stats.itl, 99))}`,
);
console.log(
  `/healthz ms p50 ${f(pct(healthz, 50))} p99 ${f(pct(healthz, 99))} max ${f(Math.max(...healthz))} (${healthz.length} probes)`,
);
console.log(
  `server RSS MiB start ${f(rssStart)} peak ${f(rssPeak)} after ${f(rssAfter)} (${f((rssAfter / rssStart - 1) * 100)}%)`,
);
console.log(
  `monitor events dropped ${dropped}; server sockets open: start ${socketsStart}, end ${socketsEnd}`,
);
const targets = [
  ['0 errors other than 429', errorsOther === 0],
  ['/healthz p99 < 100 ms', pct(healthz, 99) < 100],
  ['/healthz max < 500 ms', Math.max(...healthz) < 500],
  ['RSS after within 10% of start', Math.abs(rssAfter / rssStart - 1) <= 0.1],
  ['no sockets left open', socketsEnd <= socketsStart],
] as const;
for (const [name, ok] of targets) console.log(`${ok ? 'PASS' : 'MISS'} ${name}`);
