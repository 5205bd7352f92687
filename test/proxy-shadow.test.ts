// Shadow scoring's guarantees around the relay: a gzip-encoded upstream body is relayed encoded and
// decoded for scoring only; a scorer that falls behind skips (and counts) tokens without touching
// the client's bytes; a local model that fails to load leaves the relay working (fail-open) and
// /readyz saying so; a tokenizer that disagrees with the upstream's tokens is counted and the text
// re-tokenized.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRequest, startProxy, until } from './helpers/proxy.ts';
import { recordingEngine } from './helpers/recording-scorer.ts';
import type { ServerEngine } from '../src/server/app.ts';

const event = (content: string, logprobs?: unknown) =>
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, ...(logprobs ? { logprobs } : {}) }] })}\n\n`;
const WORDS = Array.from({ length: 200 }, (_, i) => ` word${i}`);
const STREAM = WORDS.map((w) => event(w)).join('') + 'data: [DONE]\n\n';

let upstream: Server;
let url: string;

beforeAll(async () => {
  upstream = createServer(async (req, res) => {
    for await (const _ of req);
    const mode = req.headers['x-mode'];
    if (mode === 'gzip') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      const z = gzipSync(STREAM);
      // Compressed bytes in small pieces: the decoder sees partial gzip blocks.
      for (let i = 0; i < z.length; i += 37) res.write(z.subarray(i, i + 37));
      return res.end();
    }
    if (mode === 'alien-tokens') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // A token whose bytes (an invalid UTF-8 lone continuation byte pair) no local token has.
      res.write(event(' hello', { content: [{ token: ' hello', bytes: [0xff, 0xfe, 0xfd], logprob: -1 }] }));
      return res.end(event(' world') + 'data: [DONE]\n\n');
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const w of WORDS) {
      res.write(event(w));
      await new Promise((r) => setImmediate(r));
    }
    res.end('data: [DONE]\n\n');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await new Promise((r) => upstream?.close(r));
});

const body = { model: 'm', messages: [{ role: 'user', content: 'Hi' }], stream: true };
const metric = async (proxyUrl: string, series: string) => {
  const line = (await (await fetch(`${proxyUrl}/metrics`)).text())
    .split('\n')
    .find((l) => l.startsWith(series + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
};

describe('shadow scoring around the relay', () => {
  it('relays a gzip body encoded and scores its decoded text', async () => {
    const engine = recordingEngine();
    const p = await startProxy(url, engine);
    try {
      const r = await rawRequest(`${p.url}/v1/chat/completions`, body, {
        'x-mode': 'gzip',
        'x-request-id': 'gz',
      });
      expect(r.headers['content-encoding']).toBe('gzip');
      expect(r.bytes.equals(gzipSync(STREAM))).toBe(true);
      await until(() => p.finished.has('gz'), 'scoring');
      const ids = p.records
        .get('gz')!
        .get(0)!
        .map((s) => s.record.tokenId);
      expect(engine.decode(ids)).toBe(WORDS.join(''));
    } finally {
      await p.close();
    }
  });

  it('skips and counts tokens when the scorer falls behind, never the client', async () => {
    // 50 ms per extend and room for 20 queued tokens: the stream outruns the scorer.
    const engine = recordingEngine('gpt2-tiny-random', 50);
    const p = await startProxy(url, engine, { maxPendingTokens: 20 });
    try {
      const r = await rawRequest(`${p.url}/v1/chat/completions`, body, { 'x-request-id': 'slow' });
      expect(r.bytes.toString()).toBe(STREAM);
      await until(() => p.finished.has('slow'), 'scoring');
      const scored = p.records.get('slow')?.get(0)?.length ?? 0;
      const skipped = await metric(p.url, 'llm_shadow_skipped_tokens_total{reason="queue_full"}');
      expect(skipped).toBeGreaterThan(0);
      // Every token was either scored or counted as skipped.
      expect(scored + skipped).toBe(engine.encode(WORDS.join(''), { addSpecialTokens: false }).length);
      expect(await metric(p.url, 'llm_shadow_lag_seconds_count')).toBe(scored);
    } finally {
      await p.close();
    }
  });

  it('fails open when the local model cannot load', async () => {
    const failing = Promise.reject(new Error('no such model')) as Promise<ServerEngine>;
    failing.catch(() => undefined);
    const p = await startProxy(url, failing);
    try {
      const r = await rawRequest(`${p.url}/v1/chat/completions`, body);
      expect(r.bytes.toString()).toBe(STREAM);
      const ready = await (await fetch(`${p.url}/readyz`)).json();
      expect(ready).toMatchObject({ status: 'ready', scoring: { state: 'failed', error: 'no such model' } });
      const neurons = await fetch(`${p.url}/v1/neurons`);
      expect(neurons.status).toBe(503);
    } finally {
      await p.close();
    }
  });

  it('counts a tokenizer disagreement and scores the re-tokenized text', async () => {
    const engine = recordingEngine();
    const p = await startProxy(url, engine);
    try {
      await rawRequest(`${p.url}/v1/chat/completions`, body, {
        'x-mode': 'alien-tokens',
        'x-request-id': 'alien',
      });
      await until(() => p.finished.has('alien'), 'scoring');
      const ids = p.records
        .get('alien')!
        .get(0)!
        .map((s) => s.record.tokenId);
      expect(ids).toEqual(engine.encode(' hello world', { addSpecialTokens: false }));
      expect(await metric(p.url, 'llm_shadow_tokenizer_mismatch_total')).toBe(1);
    } finally {
      await p.close();
    }
  });
});
