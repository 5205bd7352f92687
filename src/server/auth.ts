// Bearer-token checks for the admin routes (interventions) and, optionally, the inference routes.
// Both sides are hashed first so timingSafeEqual always compares equal-length digests: the time
// taken reveals neither the token's length nor how many leading characters a guess got right.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(headers: IncomingHttpHeaders): string | null {
  const value = headers.authorization;
  if (typeof value !== 'string') return null;
  const match = /^Bearer\s+(.+)$/i.exec(value.trim());
  return match ? match[1]!.trim() : null;
}

/** Whether `presented` equals `expected`, in time independent of where they differ. */
export function tokensMatch(presented: string | null, expected: string): boolean {
  if (presented === null) return false;
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * A check for one secret; `null` secret = the routes are open. Returns whether the request may
 * pass. `queryToken` is for WebSocket clients (browsers cannot set headers on an upgrade).
 */
export function makeTokenCheck(
  secret: string | null,
): (headers: IncomingHttpHeaders, queryToken?: string | null) => boolean {
  if (secret === null) return () => true;
  return (headers, queryToken = null) => tokensMatch(bearerToken(headers) ?? queryToken, secret);
}
