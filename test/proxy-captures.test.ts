// Every recorded stream of /work/shared/sse-captures replayed by a test upstream, cut into network
// chunks at awkward places (inside lines, inside multi-byte characters), through the proxy: the
// client receives the upstream's bytes exactly, and the shadow scorer recovers each choice's
// completion text exactly. The expected text comes from a second, deliberately naive reading of
// the whole file (split on blank lines, JSON.parse every data line).

import { createServer, type Server } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awkwardCuts, split, toCrlf } from './helpers/sse-cuts.ts';
import { rawRequest, startProxy, until, type TestProxy } from './helpers/proxy.ts';
import { recordingEngine, type RecordingEngine } from './helpers/recording-scorer.ts';
import { sharedDir } from './helpers/shared.ts';

const dir = join(sharedDir(), 'sse-captures');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.sse'))
  .sort();

/** The naive reading: per choice index, the concatenated content (chat) or text (legacy). */
function expectedTexts(bytes: Buffer): { texts: Map<number, string>; legacy: boolean } {
  const texts = new Map<number, string>();
  let legacy = false;
  for (const block of bytes.toString('utf8').split('\n\n')) {
    for (const line of block.split('\n')) {
      const m = /^data: ?(.*)$/.exec(line);
      if (!m || m[1] === '[DONE]') continue;
      const body = JSON.parse(m[1]!);
      for (const c of body.choices ?? []) {
        const piece = typeof c.text === 'string' ? c.text : (c.delta?.content ?? '');
        if (typeof c.text === 'string') legacy = true;
        texts.set(c.index, (texts.get(c.index) ?? '') + (typeof piece === 'string' ? piece : ''));
      }
    }
  }
  return { texts, legacy };
}

let upstream: Server;
let upstreamUrl: string;
let proxy: TestProxy;
let engine: RecordingEngine;

beforeAll(async () => {
  // Replays the capture named in x-replay, cut where x-cut-seed says, a write per chunk with a
  // turn of the event loop between them so they leave as separate TCP segments.
  upstream = createServer(async (req, res) => {
    for await (const _ of req);
    const name = String(req.headers['x-replay']);
    let bytes: Uint8Array = readFileSync(join(dir, name));
    if (req.headers['x-crlf'] === '1') bytes = toCrlf(bytes);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (const chunk of split(bytes, awkwardCuts(bytes, Number(req.headers['x-cut-seed'])))) {
      res.write(chunk);
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const a = upstream.address();
  if (!a || typeof a === 'string') throw new Error('no port');
  upstreamUrl = `http://127.0.0.1:${a.port}`;
  engine = recordingEngine();
  proxy = await startProxy(upstreamUrl, engine);
});

afterAll(async () => {
  await proxy?.close();
  await new Promise((r) => upstream?.close(r));
});

describe('recorded streams through the proxy', () => {
  it('has all 25 captures', () => expect(files.length).toBe(25));
  for (const [i, f] of files.entries()) {
    for (const crlf of [false, true]) {
      it(`${f}${crlf ? ' (CRLF)' : ''}: bytes relayed exactly, completion text recovered exactly`, async () => {
        let original: Buffer = readFileSync(join(dir, f));
        if (crlf) original = Buffer.from(toCrlf(original));
        const { texts, legacy } = expectedTexts(readFileSync(join(dir, f)));
        const id = `cap-${i}-${crlf ? 'crlf' : 'lf'}`;
        const path = legacy ? '/v1/completions' : '/v1/chat/completions';
        const body = legacy
          ? { model: 'm', prompt: 'Once upon a time', stream: true }
          : { model: 'm', messages: [{ role: 'user', content: 'Hello' }], stream: true };
        const sessionsBefore = engine.sessions.length;
        const res = await rawRequest(`${proxy.url}${path}`, body, {
          'x-replay': f,
          'x-cut-seed': String(i + 7),
          'x-request-id': id,
          ...(crlf ? { 'x-crlf': '1' } : {}),
        });
        expect(res.status).toBe(200);
        expect(res.bytes.equals(original)).toBe(true);
        await until(() => proxy.finished.has(id), `scoring of ${id}`);
        const sessions = engine.sessions.slice(sessionsBefore);
        const byChoice = proxy.records.get(id) ?? new Map();
        for (const [choice, text] of texts) {
          if (text === '') continue;
          const records = byChoice.get(choice)!;
          const ids = records.map((r: { record: { tokenId: number } }) => r.record.tokenId);
          expect(engine.decode(ids)).toBe(text);
          // Aligned on the upstream's tokens (logprobs) or re-tokenized: re-tokenized streams get
          // exactly the ids tokenizing the whole text gives.
          if (!records.some((r: { upstream?: unknown }) => r.upstream))
            expect(ids).toEqual(engine.encode(text, { addSpecialTokens: false }));
        }
        const scoredChoices = [...texts.values()].filter((t) => t !== '').length;
        expect(sessions.length).toBe(scoredChoices);
        expect(sessions.every((s) => s.closed)).toBe(true);
      });
    }
  }
});
