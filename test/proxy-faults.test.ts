// Every upstream fault of proxy mode against a fault-injecting upstream: unreachable (502), no
// first byte in time (504), an error status (passed through with its body), a drop or an idle
// stall mid-stream (an in-stream error event, then [DONE] and a clean end), a drop inside an event,
// the total timeout, and a client that hangs up before the first byte and mid-stream (the upstream
// request is aborted at once, its scoring stopped). Each is counted by kind; at the end no socket
// is left open.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest, startProxy, until, type TestProxy } from './helpers/proxy.ts';
import { recordingEngine, type RecordingEngine } from './helpers/recording-scorer.ts';

const chunk = (content: string) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let upstream: Server;
let proxy: TestProxy;
let engine: RecordingEngine;
/** Upstream requests that closed before their response finished, by fault. */
const upstreamClosed = new Map<string, number>();

const FAULTS: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void> | void> = {
  hang: () => undefined,
  status: (_req, res) => {
    res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
    res.end(
      '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}',
    );
  },
  drop: async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(chunk('Hello'));
    res.write(chunk(' world'));
    await sleep(50);
    res.socket?.destroy();
  },
  'drop-mid-event': async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(chunk('Hello') + 'data: {"id":"c","choi');
    await sleep(50);
    res.socket?.destroy();
  },
  idle: (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(chunk('Hello'));
  },
  slow: async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < 100 && !res.destroyed; i++) {
      res.write(chunk(` t${i}`));
      await sleep(50);
    }
    res.end();
  },
};

async function listen(s: Server): Promise<string> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

beforeAll(async () => {
  upstream = createServer((req, res) => {
    const fault = String(req.headers['x-fault']);
    res.on('close', () => {
      if (!res.writableFinished) upstreamClosed.set(fault, (upstreamClosed.get(fault) ?? 0) + 1);
    });
    req.resume();
    req.on('end', () => void FAULTS[fault]!(req, res));
  });
  engine = recordingEngine('gpt2-tiny-random', 30);
  proxy = await startProxy(await listen(upstream), engine, {
    timeouts: { firstByteMs: 300, idleMs: 300, totalMs: 1500 },
  });
});

afterAll(async () => {
  await proxy?.close();
  await new Promise((r) => upstream?.close(r));
});

const chatBody = { model: 'm', messages: [{ role: 'user', content: 'Hi' }], stream: true };

describe('faults before the first byte', () => {
  it('unreachable upstream -> 502 in OpenAI shape, counted', async () => {
    const dead = createServer();
    const url = await listen(dead);
    await new Promise((r) => dead.close(r));
    const p = await startProxy(url, null);
    try {
      const r = await rawRequest(`${p.url}/v1/chat/completions`, chatBody);
      expect(r.status).toBe(502);
      expect(JSON.parse(r.bytes.toString()).error).toMatchObject({
        code: 'upstream_unreachable',
        type: 'server_error',
      });
      expect(await metric(p.url, 'llm_upstream_errors_total{kind="unreachable"}')).toBe(1);
      expect(await metric(p.url, 'llm_upstream_requests_total{code="error"}')).toBe(1);
    } finally {
      await p.close();
    }
  });

  it('no first byte in time -> 504, and the upstream request is closed', async () => {
    const r = await rawRequest(`${proxy.url}/v1/chat/completions`, chatBody, { 'x-fault': 'hang' });
    expect(r.status).toBe(504);
    expect(JSON.parse(r.bytes.toString()).error.code).toBe('upstream_timeout');
    await until(() => upstreamClosed.get('hang') === 1, 'upstream request closed');
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="first_byte_timeout"}')).toBe(1);
  });

  it('an upstream error status is passed through with its body and headers', async () => {
    const r = await rawRequest(`${proxy.url}/v1/chat/completions`, chatBody, { 'x-fault': 'status' });
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('3');
    expect(r.bytes.toString()).toBe(
      '{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}',
    );
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="status"}')).toBe(1);
    expect(await metric(proxy.url, 'llm_upstream_requests_total{code="429"}')).toBe(1);
  });

  it('a client that hangs up while waiting aborts the upstream request at once', async () => {
    const ac = new AbortController();
    const pending = request(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fault': 'hang', 'x-request-id': 'gone-early' },
      body: JSON.stringify(chatBody),
      signal: ac.signal,
    }).catch((e: Error) => e);
    await sleep(100);
    ac.abort();
    expect(await pending).toBeInstanceOf(Error);
    // Well before the 300 ms first-byte timeout would have closed it.
    await until(() => upstreamClosed.get('hang') === 2, 'upstream aborted', 250);
    await until(() => proxy.finished.has('gone-early'), 'scoring stopped');
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="client_abort"}')).toBe(1);
  });
});

describe('faults after the first byte', () => {
  /** The in-stream error the proxy appends, read the way the openai SDK reads it. */
  async function sdkError(fault: string): Promise<{ contents: string[]; error: Error }> {
    const sdk = new OpenAI({
      baseURL: `${proxy.url}/v1`,
      apiKey: 'k',
      maxRetries: 0,
      defaultHeaders: { 'x-fault': fault },
    });
    const contents: string[] = [];
    try {
      const s = await sdk.chat.completions.create({
        model: 'm',
        messages: [{ role: 'user', content: 'Hi' }],
        stream: true,
      });
      for await (const c of s) contents.push(c.choices[0]?.delta.content ?? '');
    } catch (e) {
      return { contents, error: e as Error };
    }
    throw new Error('the stream ended without an error');
  }

  it('a drop mid-stream ends the stream with an error event and [DONE]', async () => {
    const r = await rawRequest(`${proxy.url}/v1/chat/completions`, chatBody, { 'x-fault': 'drop' });
    expect(r.status).toBe(200);
    const text = r.bytes.toString();
    expect(text.startsWith(chunk('Hello') + chunk(' world'))).toBe(true);
    const tail = text.slice((chunk('Hello') + chunk(' world')).length);
    const [event, done, rest] = tail.split('\n\n');
    expect(JSON.parse(event!.slice('data: '.length)).error).toMatchObject({
      code: 'upstream_stream_failed',
      type: 'server_error',
    });
    expect(done).toBe('data: [DONE]');
    expect(rest).toBe('');
    const { contents, error } = await sdkError('drop');
    expect(contents).toEqual(['Hello', ' world']);
    expect(error.message).toMatch(/upstream connection failed/);
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="dropped"}')).toBe(2);
  });

  it('a drop inside an event closes that event before the error event', async () => {
    const r = await rawRequest(`${proxy.url}/v1/chat/completions`, chatBody, { 'x-fault': 'drop-mid-event' });
    const text = r.bytes.toString();
    expect(text.startsWith(chunk('Hello') + 'data: {"id":"c","choi\n\ndata: {"error"')).toBe(true);
    expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
  });

  it('an idle upstream is cut after the idle timeout with an error event', async () => {
    const { contents, error } = await sdkError('idle');
    expect(contents).toEqual(['Hello']);
    expect(error.message).toMatch(/sent nothing for 300 ms/);
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="idle_timeout"}')).toBe(1);
    await until(() => upstreamClosed.get('idle') === 1, 'upstream request closed');
  });

  it('the total timeout ends a stream that never finishes', async () => {
    const { contents, error } = await sdkError('slow');
    expect(contents.length).toBeGreaterThan(3);
    expect(error.message).toMatch(/did not finish within 1500 ms/);
    expect(await metric(proxy.url, 'llm_upstream_errors_total{kind="total_timeout"}')).toBe(1);
  });

  it('a client that hangs up mid-stream aborts the upstream and stops its scoring', async () => {
    const ac = new AbortController();
    const res = await request(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fault': 'slow', 'x-request-id': 'gone-mid' },
      body: JSON.stringify(chatBody),
      signal: ac.signal,
    });
    const it = res.body[Symbol.asyncIterator]();
    await it.next();
    await sleep(120);
    ac.abort();
    const closedBefore = upstreamClosed.get('slow') ?? 0;
    await until(() => (upstreamClosed.get('slow') ?? 0) > closedBefore, 'upstream aborted', 500);
    await until(() => proxy.finished.has('gone-mid'), 'scoring stopped');
    const sessions = engine.sessions.filter((s) => s.closed);
    expect(sessions.length).toBeGreaterThan(0);
  });
});

describe('no leaks', () => {
  it('leaves no upstream or client socket open once idle keep-alives are closed', async () => {
    const conns = () => new Promise<number>((r) => upstream.getConnections((_e, n) => r(n)));
    // Healthy keep-alive connections may stay pooled; every faulted one must be gone.
    expect(await conns()).toBeLessThanOrEqual(2);
    const proxyConns = () => new Promise<number>((r) => proxy.app.server.getConnections((_e, n) => r(n)));
    await proxy.close();
    const deadline = Date.now() + 3000;
    while ((await conns()) > 0 && Date.now() < deadline) await sleep(20);
    expect(await conns()).toBe(0);
    expect(await proxyConns()).toBe(0);
  });
});
