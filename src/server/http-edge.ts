// Refusals that happen before fastify has a request to route: Node's HTTP parser errors
// (clientError), `Expect:` headers Node cannot honour (checkExpectation), and upgrade requests.
// They answer in the same OpenAI error shape as everything else, written straight to the socket.
//
// Upgrades: once any 'upgrade' listener exists, Node hands every request that carries
// `Connection: Upgrade` (curl --http2 sends `Upgrade: h2c` on plain HTTP) to that listener
// instead of the router. Only the monitor stream upgrades; every other such request is served as
// the ordinary HTTP request it also is (HTTP/1.1 lets a server ignore an Upgrade offer).

import { IncomingMessage, ServerResponse, STATUS_CODES, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ApiError, type ErrorCode } from './errors.ts';

/** A complete HTTP/1.1 response carrying `e` in the error shape, ending the connection. */
export function rawErrorResponse(e: ApiError, extraHeaders: Record<string, string> = {}): string {
  const body = JSON.stringify(e.toBody());
  const headers: Record<string, string> = {
    connection: 'close',
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    ...e.headers,
    ...extraHeaders,
  };
  if (e.status === 401) headers['www-authenticate'] = 'Bearer';
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\n${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** Writes the refusal (if the socket can still take it) and closes the socket. */
export function refuseSocket(socket: Duplex, e: ApiError): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.end(rawErrorResponse(e));
  else socket.destroy();
}

const PARSER_ERRORS: Record<string, [ErrorCode, string]> = {
  HPE_HEADER_OVERFLOW: ['headers_too_large', 'The request headers are too large.'],
  ERR_HTTP_REQUEST_TIMEOUT: ['request_timeout', 'The request took too long to arrive.'],
  ERR_HTTP_HEADERS_TIMEOUT: ['request_timeout', 'The request headers took too long to arrive.'],
  HPE_INVALID_CONTENT_LENGTH: ['invalid_http_request', 'The Content-Length header is not valid.'],
  HPE_UNEXPECTED_CONTENT_LENGTH: [
    'invalid_http_request',
    'Content-Length and Transfer-Encoding cannot both be sent.',
  ],
  HPE_INVALID_TRANSFER_ENCODING: ['invalid_http_request', 'The Transfer-Encoding header is not valid.'],
  HPE_INVALID_CHUNK_SIZE: ['invalid_http_request', 'The chunked request body is malformed.'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: ['invalid_http_request', 'The chunked request body is malformed.'],
};

/** Maps a Node HTTP parser error to the catalogue; anything unlisted is a malformed request. */
export function parserErrorToApiError(err: { code?: string }): ApiError {
  const known = err.code ? PARSER_ERRORS[err.code] : undefined;
  if (known) return new ApiError(known[0], known[1]);
  return new ApiError('invalid_http_request', 'The request is not valid HTTP/1.1.');
}

/** fastify's clientErrorHandler: called for parser errors on a connection. */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  // A reset connection has no one to answer; a response already under way cannot be replaced.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || socket.destroyed || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  refuseSocket(socket, parserErrorToApiError(err));
}

/** Node answers an `Expect:` other than 100-continue with a bare 417; this one has a body. */
export function answerExpectation(_req: IncomingMessage, res: ServerResponse): void {
  const e = new ApiError('expectation_failed', 'Only "Expect: 100-continue" is supported.');
  const body = JSON.stringify(e.toBody());
  res.writeHead(e.status, { 'content-type': 'application/json; charset=utf-8', connection: 'close' });
  res.end(body);
}

/** Bodies larger than this on an Upgrade request are refused (fastify's own limit is lower). */
const MAX_UPGRADE_BODY = 64 * 1024 * 1024;

/**
 * Serves an upgrade request that is not for the monitor stream as a plain request: Node has
 * detached its parser, so the body (Content-Length bytes, from `head` then the socket) is fed
 * into the request by hand and the connection closes after the response.
 */
export function serveUpgradeAsRequest(
  server: Server,
  req: IncomingMessage,
  duplex: Duplex,
  head: Buffer,
): void {
  const socket = duplex as Socket;
  socket.on('error', () => socket.destroy());
  const rawLength = req.headers['content-length'];
  const length = rawLength === undefined ? 0 : Number(rawLength);
  if (req.headers['transfer-encoding'] !== undefined || !Number.isSafeInteger(length) || length < 0) {
    refuseSocket(
      socket,
      new ApiError(
        'invalid_http_request',
        'A request that offers an Upgrade must send its body with a Content-Length.',
      ),
    );
    return;
  }
  if (length > MAX_UPGRADE_BODY) {
    refuseSocket(socket, new ApiError('request_too_large', 'The request body is too large.'));
    return;
  }
  // Node has already ended `req` (an upgrade has no body for it): a fresh message carries one.
  const message = new IncomingMessage(socket);
  Object.assign(message, {
    method: req.method,
    url: req.url,
    headers: req.headers,
    rawHeaders: req.rawHeaders,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
  });
  const res = new ServerResponse(message);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  res.on('finish', () => {
    res.detachSocket(socket);
    socket.end();
  });
  let pending = length;
  const feed = (chunk: Buffer) => {
    if (pending <= 0) return;
    const part = chunk.subarray(0, pending);
    pending -= part.length;
    message.push(part);
    if (pending === 0) finish();
  };
  // complete: an IncomingMessage destroyed (auto, once read) while incomplete destroys its socket.
  const finish = () => {
    socket.off('data', feed);
    message.complete = true;
    message.push(null);
  };
  if (pending === 0) finish();
  else {
    if (head.length > 0) feed(head);
    if (pending > 0) socket.on('data', feed);
  }
  server.emit('request', message, res);
}
