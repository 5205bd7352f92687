// The relay: one client request forwarded to the upstream through a pooled keep-alive undici
// client, and the upstream's status, headers and body sent back unchanged, chunk by chunk as they
// arrive. Faults before the first byte get an HTTP error in OpenAI's shape (502 unreachable, 504
// timeouts); after it, an SSE stream ends with an in-stream error event (vLLM's shape, see
// docs/PROXY.md) and [DONE], a JSON body is cut off. A client that hangs up aborts the upstream
// request at once. Every fault is counted (llm_upstream_errors_total{kind}) and logged.

import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { context, defaultTextMapSetter, SpanKind, trace, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { FastifyBaseLogger } from 'fastify';
import type { Dispatcher } from 'undici';
type DispatchController = Dispatcher.DispatchController;
import { ApiError } from '../server/errors.ts';
import type { ProxyMetrics, UpstreamErrorKind } from './metrics.ts';
import type { BodyTap } from './tap.ts';

export interface Timeouts {
  /** TCP connect to the upstream (set on the pool; listed here for the docs' sake). */
  connectMs: number;
  /** From sending the request to the upstream's response headers. */
  firstByteMs: number;
  /** Between two body chunks. */
  idleMs: number;
  /** The whole exchange, headers to last byte (0 = none). */
  totalMs: number;
}

export interface RelayDeps {
  pool: Dispatcher;
  upstream: URL;
  timeouts: Timeouts;
  metrics: ProxyMetrics;
  tracer: Tracer;
  /** Replaces the client's Authorization when set (--upstream-api-key-env). */
  apiKey: string | null;
}

export interface RelayRequest {
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer | null;
  /** performance.now() when the request arrived (for the overhead the proxy adds). */
  arrivedMs: number;
  log: FastifyBaseLogger;
  /** The request's SERVER span (scored routes), parent of the upstream CLIENT span. */
  span?: Span;
  /** Where the scorer gets the body; made once the upstream's headers are known. */
  tap?: (status: number, headers: IncomingHttpHeaders) => BodyTap | null;
}

export type RelayOutcome = 'success' | 'aborted' | 'error';

/** RFC 9110 §7.6.1 connection-specific headers, never forwarded (plus host, content-length: undici sets them). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  'host',
  'content-length',
  'http2-settings',
]);

function forwardable(
  headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>,
  keepLength: boolean,
) {
  const listed = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || listed.has(k)) continue;
    if (HOP_BY_HOP.has(k) && !(keepLength && k === 'content-length')) continue;
    out[k] = v;
  }
  return out;
}

const w3c = new W3CTraceContextPropagator();
const CLIENT_GONE = new Error('the client closed the connection');
const TOTAL_TIMEOUT = new Error('the total timeout ran out');

/** What went wrong, from undici's error codes. */
function classify(err: unknown, aborted: Error | null, headersSeen: boolean): UpstreamErrorKind {
  if (aborted) return aborted === TOTAL_TIMEOUT ? 'total_timeout' : 'client_abort';
  const code = (err as { code?: string }).code;
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return 'connect_timeout';
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'first_byte_timeout';
  if (code === 'UND_ERR_BODY_TIMEOUT') return 'idle_timeout';
  return headersSeen ? 'dropped' : 'unreachable';
}

function beforeFirstByte(kind: UpstreamErrorKind, t: Timeouts): ApiError {
  switch (kind) {
    case 'connect_timeout':
      return new ApiError(
        'upstream_timeout',
        `The upstream did not accept a connection within ${t.connectMs} ms.`,
      );
    case 'first_byte_timeout':
      return new ApiError('upstream_timeout', `The upstream sent no response within ${t.firstByteMs} ms.`);
    case 'total_timeout':
      return new ApiError('upstream_timeout', `The upstream did not finish within ${t.totalMs} ms.`);
    default:
      return new ApiError('upstream_unreachable', 'The upstream could not be reached.');
  }
}

function inStreamError(kind: UpstreamErrorKind, t: Timeouts): ApiError {
  if (kind === 'idle_timeout')
    return new ApiError(
      'upstream_timeout',
      `The upstream sent nothing for ${t.idleMs} ms; the stream was ended.`,
    );
  if (kind === 'total_timeout')
    return new ApiError(
      'upstream_timeout',
      `The upstream did not finish within ${t.totalMs} ms; the stream was ended.`,
    );
  return new ApiError(
    'upstream_stream_failed',
    'The upstream connection failed in the middle of the response.',
  );
}

/** How the upstream exchange ended, as the dispatch handler saw it. */
type Ending = { ok: true } | { ok: false; err: Error };

/** Relays one request; resolves when the client's response has ended, with how it ended. */
export async function relay(deps: RelayDeps, req: RelayRequest, res: ServerResponse): Promise<RelayOutcome> {
  const { metrics, timeouts: t } = deps;
  const headers = forwardable(req.headers, false);
  if (deps.apiKey) headers.authorization = `Bearer ${deps.apiKey}`;
  const parent = req.span ? trace.setSpan(context.active(), req.span) : context.active();
  const span = deps.tracer.startSpan(
    req.method,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        'http.request.method': req.method,
        'server.address': deps.upstream.hostname,
        'server.port': Number(deps.upstream.port || (deps.upstream.protocol === 'https:' ? 443 : 80)),
        'url.full': deps.upstream.origin + req.url,
      },
    },
    parent,
  );
  // The client's own traceparent is replaced by ours, whose parent it is: one trace end to end.
  if (req.span) w3c.inject(trace.setSpan(parent, span), headers, defaultTextMapSetter);

  let headersSeen = false;
  let isSse = false;
  /** The last two chunks written, to tell whether the client's stream stopped inside an event. */
  let last: Buffer | null = null;
  let beforeLast: Buffer | null = null;
  let tap: BodyTap | null = null;
  let controller: DispatchController | null = null;
  let abortReason: Error | null = null;
  const chunkOverhead = metrics.overhead.labels('chunk');
  const abort = (reason: Error) => {
    if (abortReason) return;
    abortReason = reason;
    controller?.abort(reason);
  };
  const onClientClose = () => {
    if (!res.writableFinished) abort(CLIENT_GONE);
  };
  res.on('close', onClientClose);
  const total = t.totalMs > 0 ? setTimeout(() => abort(TOTAL_TIMEOUT), t.totalMs) : null;
  const sent = performance.now();

  // undici's dispatch handler is the lowest-overhead path: each body chunk is written to the
  // client in the callback that delivers it, and backpressure pauses the upstream socket.
  const ending = await new Promise<Ending>((resolve) => {
    deps.pool.dispatch(
      {
        origin: deps.upstream.origin,
        path: req.url,
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body: req.body && req.body.length > 0 ? req.body : null,
        headersTimeout: t.firstByteMs,
        bodyTimeout: t.idleMs,
      },
      {
        onRequestStart(c) {
          controller = c;
          if (abortReason) c.abort(abortReason);
        },
        onResponseStart(c, status, upHeaders) {
          if (status < 200) return; // 1xx informational: the final response follows
          const gotHeaders = performance.now();
          headersSeen = true;
          metrics.upstreamTtfb.observe((gotHeaders - sent) / 1000);
          metrics.upstreamRequests.inc({ code: String(status) });
          span.setAttribute('http.response.status_code', status);
          if (status >= 400) {
            metrics.upstreamErrors.inc({ kind: 'status' });
            req.log.info(
              { upstream_status: status },
              'upstream answered with an error status; passed through',
            );
          }
          isSse = String(upHeaders['content-type'] ?? '').includes('text/event-stream');
          try {
            tap = status < 400 ? (req.tap?.(status, upHeaders) ?? null) : null;
          } catch (err) {
            req.log.warn({ err }, 'shadow scoring could not read this response; relaying unscored');
          }
          const out = forwardable(upHeaders, true);
          const before = sent - req.arrivedMs;
          out['x-confidence-sidecar-overhead-ms'] = (before + (performance.now() - gotHeaders)).toFixed(3);
          res.writeHead(status, out);
          // Node holds the headers until the first body write; the upstream sent them, so do we.
          res.flushHeaders();
          metrics.overhead.observe(
            { stage: 'first_byte' },
            (before + (performance.now() - gotHeaders)) / 1000,
          );
        },
        onResponseData(c, chunk) {
          const at = performance.now();
          if (!res.write(chunk)) {
            c.pause();
            res.once('drain', () => c.resume());
          }
          chunkOverhead.observe((performance.now() - at) / 1000);
          beforeLast = last;
          last = chunk;
          // The scorer reads what the client already has; its failures are its own.
          if (tap) {
            try {
              tap.chunk(chunk);
            } catch (err) {
              tap = null;
              req.log.warn({ err }, 'shadow scoring failed on this response; relaying unscored');
            }
          }
        },
        onResponseEnd() {
          resolve({ ok: true });
        },
        onResponseError(_c, err) {
          resolve({ ok: false, err });
        },
      },
    );
  });
  if (total) clearTimeout(total);
  res.off('close', onClientClose);

  if (ending.ok) {
    res.end();
    span.end();
    await (tap as BodyTap | null)?.end();
    return 'success';
  }
  const err = ending.err;
  const kind = classify(err, abortReason, headersSeen);
  metrics.upstreamErrors.inc({ kind });
  if (!headersSeen) metrics.upstreamRequests.inc({ code: 'error' });
  span.recordException(err);
  span.setStatus({ code: 2, message: kind });
  span.end();
  if (kind === 'client_abort') {
    req.log.info({ kind }, 'client went away; upstream request aborted');
    res.destroy();
    return 'aborted';
  }
  req.log.warn({ kind, err }, 'upstream fault');
  if (!headersSeen) {
    const e = beforeFirstByte(kind, t);
    const body = JSON.stringify(e.toBody());
    res.writeHead(e.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
    return 'error';
  }
  if (isSse && !res.writableEnded && !res.destroyed) {
    // An event cut off mid-way is closed first, so the error event parses on its own.
    const tail = Buffer.concat([beforeLast ?? Buffer.alloc(0), last ?? Buffer.alloc(0)])
      .subarray(-4)
      .toString('latin1');
    const sep = tail === '' || /(\n\n|\r\r|\r\n\r\n)$/.test(tail) ? '' : '\n\n';
    res.end(`${sep}data: ${JSON.stringify(inStreamError(kind, t).toBody())}\n\ndata: [DONE]\n\n`);
  } else res.destroy();
  return 'error';
}
