// Server-sent events the way OpenAI streams: `data: <json>\n\n` per chunk, `data: [DONE]` at the
// end, and on a failure after the headers went out an error object in the same shape as an HTTP
// error body (OpenAI's SDKs raise it), then the end of the stream.
//
// The events go through a PassThrough handed to reply.send(), so fastify still writes the headers
// set on the reply (X-Request-Id), logs the response and ends it. The PassThrough buffers
// without limit once the socket backs up, so the producer asks writable() before the next token.

import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { ApiError } from '../errors.ts';

export class SseStream {
  private readonly stream = new PassThrough();

  constructor(reply: FastifyReply) {
    reply
      .code(200)
      .header('content-type', 'text/event-stream; charset=utf-8')
      .header('cache-control', 'no-cache')
      // Reverse proxies (nginx) buffer responses unless told not to; tokens must arrive as made.
      .header('x-accel-buffering', 'no')
      .send(this.stream);
  }

  /** False once the client has gone (fastify destroys the stream when the socket closes). */
  get open(): boolean {
    return !this.stream.destroyed && !this.stream.writableEnded;
  }

  /**
   * Resolves true once the stream can take more (at once unless the socket is backed up), false
   * when the client read nothing for `timeoutMs` or went away.
   */
  writable(timeoutMs: number): Promise<boolean> {
    const stream = this.stream;
    if (!this.open) return Promise.resolve(false);
    if (!stream.writableNeedDrain) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        stream.off('drain', onDrain);
        stream.off('close', onClose);
        resolve(ok);
      };
      const onDrain = () => done(true);
      const onClose = () => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      stream.on('drain', onDrain);
      stream.on('close', onClose);
    });
  }

  send(event: object): void {
    if (this.open) this.stream.write(`data: ${JSON.stringify(event)}\n\n`);
  }

  done(): void {
    if (!this.open) return;
    this.stream.write('data: [DONE]\n\n');
    this.stream.end();
  }

  fail(error: ApiError): void {
    if (!this.open) return;
    this.stream.write(`data: ${JSON.stringify(error.toBody())}\n\n`);
    this.stream.end();
  }
}
