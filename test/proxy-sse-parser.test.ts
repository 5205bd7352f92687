// The proxy's SSE parser: hand-derived cases from the EventSource rules, and every recorded stream
// of /work/shared/sse-captures parsed whole, byte by byte, cut awkwardly and with CRLF line ends;
// the event count must match the count INDEX.md states for each capture (its own auto-check).

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SseParser, type SseEvent } from '../src/proxy/sse-parser.ts';
import { interpretEvent } from '../src/proxy/openai-stream.ts';
import { awkwardCuts, split, toCrlf } from './helpers/sse-cuts.ts';
import { sharedDir } from './helpers/shared.ts';

const enc = new TextEncoder();

function parseChunks(chunks: Uint8Array[]): SseEvent[] {
  const p = new SseParser();
  const out: SseEvent[] = [];
  for (const c of chunks) out.push(...p.push(c));
  out.push(...p.end());
  return out;
}
const parseText = (...parts: string[]) => parseChunks(parts.map((s) => enc.encode(s)));

describe('SseParser, hand-derived cases', () => {
  it('dispatches at a blank line, strips one leading space, keeps the rest', () => {
    expect(parseText('data: a\n\ndata:b\n\ndata:  c\n\n')).toEqual([
      { event: 'message', data: 'a' },
      { event: 'message', data: 'b' },
      { event: 'message', data: ' c' },
    ]);
  });
  it('joins data lines with LF; event and id fields; comments ignored', () => {
    const p = new SseParser();
    const evs = [
      ...p.push(enc.encode(': keep-alive\nevent: error\nid: 7\ndata: x\ndata: y\n\n')),
      ...p.end(),
    ];
    expect(evs).toEqual([{ event: 'error', data: 'x\ny', id: '7' }]);
    expect(p.comments).toBe(1);
  });
  it('accepts LF, CR and CRLF line ends, a CRLF split between chunks included', () => {
    expect(parseText('data: a\r', '\n\r', '\ndata: b\r\rdata: c\n\n')).toEqual([
      { event: 'message', data: 'a' },
      { event: 'message', data: 'b' },
      { event: 'message', data: 'c' },
    ]);
  });
  it('reassembles a multi-byte character split across chunks', () => {
    const bytes = enc.encode('data: {"t":"°😊"}\n\n');
    const evs = parseChunks(split(bytes, [14, 15, 16, 17, 18]));
    expect(evs).toEqual([{ event: 'message', data: '{"t":"°😊"}' }]);
  });
  it('drops a leading BOM, reads a field with no colon, dispatches nothing for blank events', () => {
    expect(parseText('\ufeffdata\n\n\n\nevent: x\n\n')).toEqual([{ event: 'message', data: '' }]);
  });
  it('dispatches an unterminated last event at the end of the stream', () => {
    expect(parseText('data: a\n\ndata: b')).toEqual([
      { event: 'message', data: 'a' },
      { event: 'message', data: 'b' },
    ]);
  });
});

describe('openai-stream interpretation', () => {
  const ev = (data: string, event = 'message') => interpretEvent({ event, data });
  it('reads chat deltas, legacy text, [DONE], errors in both shapes', () => {
    expect(ev('[DONE]')).toEqual({ kind: 'done' });
    expect(ev('{"choices":[{"index":1,"delta":{"content":"hi"},"finish_reason":"stop"}]}')).toEqual({
      kind: 'chunk',
      choices: [{ index: 1, text: 'hi', finishReason: 'stop' }],
    });
    expect(
      ev(
        '{"choices":[{"index":0,"text":"x","logprobs":{"tokens":["x"],"token_logprobs":[-0.5],"top_logprobs":[{"x":-0.5,"y":-1}]}}]}',
      ),
    ).toEqual({
      kind: 'chunk',
      choices: [{ index: 0, text: 'x', tokens: [{ token: 'x', logprob: -0.5, topLogprobs: [-0.5, -1] }] }],
    });
    expect(ev('{"error":{"message":"boom"}}', 'error')).toEqual({ kind: 'error', message: 'boom' });
    expect(ev('{"error":{"message":"boom","code":500}}')).toEqual({ kind: 'error', message: 'boom' });
    expect(ev('{"choices":[],"usage":{"total_tokens":3}}')).toEqual({ kind: 'chunk', choices: [] });
    expect(ev('not json')).toEqual({ kind: 'other' });
  });
});

/** "N data events" for each capture, from INDEX.md's table. */
function indexCounts(dir: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of readFileSync(join(dir, 'INDEX.md'), 'utf8').split('\n')) {
    const file = /^\| \d+ \| `([^`]+\.sse)`/.exec(line)?.[1];
    const n = /(\d+) data events/.exec(line)?.[1];
    if (file && n) m.set(file, Number(n));
  }
  return m;
}

describe('SseParser on the recorded streams', () => {
  const dir = join(sharedDir(), 'sse-captures');
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sse'))
    .sort();
  const counts = indexCounts(dir);
  it('finds the 25 captures and their counts', () => {
    expect(files.length).toBe(25);
    for (const f of files) expect(counts.has(f), f).toBe(true);
  });
  for (const [i, f] of files.entries()) {
    it(`${f}: same events whole, byte by byte, cut awkwardly, with CRLF`, () => {
      const bytes = new Uint8Array(readFileSync(join(dir, f)));
      const whole = parseChunks([bytes]);
      // INDEX counts the data events other than [DONE].
      expect(whole.filter((e) => e.data !== '[DONE]').length).toBe(counts.get(f));
      expect(parseChunks(split(bytes, awkwardCuts(bytes, i + 1)))).toEqual(whole);
      expect(parseChunks(split(toCrlf(bytes), awkwardCuts(toCrlf(bytes), i + 100)))).toEqual(whole);
      if (bytes.length < 20_000) expect(parseChunks([...bytes].map((b) => Uint8Array.of(b)))).toEqual(whole);
    });
  }
});
