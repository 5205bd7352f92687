// Which methods each registered route answers, so a request for a known path with the wrong method
// gets 405 Method Not Allowed with an Allow header (RFC 9110 15.5.6) instead of fastify's default
// 404: a client that sends GET to /v1/completions learns it has the method wrong, not the path.
// Fed by fastify's onRoute hook, which also reports the HEAD routes it adds for every GET.

import { ApiError, echo } from './errors.ts';
import { redactUrl } from './redact.ts';

interface RoutePattern {
  pattern: RegExp;
  methods: Set<string>;
}

/** A fastify route URL (`/v1/interventions/:id`, `/console/*`) as an anchored regex over raw paths. */
function compile(url: string): RegExp {
  const parts = url.split(/(:[A-Za-z0-9_]+|\*)/).map((part) => {
    if (part === '*') return '.*';
    if (part.startsWith(':')) return '[^/]+';
    return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  return new RegExp(`^${parts.join('')}/?$`);
}

export class RouteMethods {
  private readonly routes = new Map<string, RoutePattern>();

  add(method: string | string[], url: string): void {
    let route = this.routes.get(url);
    if (!route) this.routes.set(url, (route = { pattern: compile(url), methods: new Set() }));
    for (const m of Array.isArray(method) ? method : [method]) route.methods.add(m.toUpperCase());
  }

  /** The methods some route answers at `path` (without its query), sorted; empty when none. */
  allowed(path: string): string[] {
    const methods = new Set<string>();
    for (const r of this.routes.values()) if (r.pattern.test(path)) for (const m of r.methods) methods.add(m);
    return [...methods].sort();
  }
}

/** The refusal for a request no route took: 405 with Allow when the path exists, else 404. */
export function unroutedError(routes: RouteMethods, method: string, path: string): ApiError {
  const allow = routes.allowed(path).join(', ');
  if (allow)
    return new ApiError(
      'method_not_allowed',
      `${echo(method, 16)} is not allowed here; use ${allow}.`,
      null,
      { allow },
    );
  return new ApiError('route_not_found', `Unknown route: ${echo(method, 16)} ${echo(redactUrl(path))}`);
}
