// The scorer's view of a relayed response body: the relay hands it each chunk after writing it to
// the client. A compressed body (gzip, deflate, br) is decoded here, for scoring only: the client
// gets the encoded bytes. An SSE body is parsed event by event as it arrives; a JSON body is
// collected (up to MAX_JSON_BYTES) and read whole at its end.

import { createBrotliDecompress, createGunzip, createInflate, type Gunzip } from 'node:zlib';
import { interpretBody, interpretEvent } from './openai-stream.ts';
import type { ShadowRequest } from './shadow.ts';
import { SseParser } from './sse-parser.ts';

/** A complete response larger than this is relayed unscored rather than held in memory. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;

export interface BodyTap {
  chunk(b: Uint8Array): void;
  /** The body ended completely; resolves when what it held has reached the scorer. */
  end(): Promise<void>;
}

function decoder(encoding: string | undefined): Gunzip | null {
  switch ((encoding ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'deflate':
      return createInflate();
    case 'br':
      return createBrotliDecompress() as unknown as Gunzip;
    default:
      return null;
  }
}

export function bodyTap(
  shadow: ShadowRequest,
  contentType: string,
  contentEncoding: string | undefined,
): BodyTap {
  const sse = contentType.toLowerCase().includes('text/event-stream');
  let onPlain: (b: Uint8Array) => void;
  let onPlainEnd: () => void;
  if (sse) {
    const parser = new SseParser();
    onPlain = (b) => {
      for (const ev of parser.push(b)) shadow.feed(interpretEvent(ev));
    };
    onPlainEnd = () => {
      for (const ev of parser.end()) shadow.feed(interpretEvent(ev));
    };
  } else {
    const parts: Buffer[] = [];
    let size = 0;
    onPlain = (b) => {
      size += b.byteLength;
      if (size <= MAX_JSON_BYTES) parts.push(Buffer.from(b));
    };
    onPlainEnd = () => {
      if (size > MAX_JSON_BYTES) return;
      const choices = interpretBody(Buffer.concat(parts).toString('utf8'));
      if (choices) shadow.feed({ kind: 'chunk', choices });
    };
  }
  const z = decoder(contentEncoding);
  if (!z) {
    return {
      chunk: onPlain,
      end: async () => onPlainEnd(),
    };
  }
  z.on('data', (b: Buffer) => onPlain(b));
  // A corrupt encoded body is the upstream's business; the scorer just sees it end.
  const done = new Promise<void>((resolve) => {
    z.once('end', resolve);
    z.once('error', resolve);
  }).then(onPlainEnd);
  return {
    chunk: (b) => z.write(b),
    end: () => {
      z.end();
      return done;
    },
  };
}
