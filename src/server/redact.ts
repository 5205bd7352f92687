// What of a request may reach the log. Credentials never do: a token sent as ?token= (the monitor
// stream allows it for browsers, and clients send it to HTTP routes too) is replaced in every
// logged URL, and the credential headers are redacted by the logger. Nothing a client sends is
// logged at unbounded length.

import type { FastifyRequest } from 'fastify';

/** Query parameters whose values are secrets. */
const SECRET_PARAMS =
  /([?&](?:token|access_token|api[_-]?key|key|password|secret|auth|authorization)=)[^&#]*/gi;

/** Longest URL written to the log. */
const MAX_LOGGED_URL = 512;

export function redactUrl(url: string): string {
  const redacted = url.replace(SECRET_PARAMS, '$1[REDACTED]');
  return redacted.length <= MAX_LOGGED_URL
    ? redacted
    : `${redacted.slice(0, MAX_LOGGED_URL)}... (${redacted.length} characters)`;
}

/** pino paths of headers that carry credentials, wherever a header object gets logged. */
export const REDACTED_LOG_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
];

/** fastify's request serializer, with the URL redacted and bounded. */
export function serializeRequest(req: FastifyRequest): Record<string, unknown> {
  return {
    method: req.method,
    url: redactUrl(req.url),
    host: typeof req.host === 'string' ? req.host.slice(0, 256) : undefined,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}
