// 405 Method Not Allowed: a known path asked with the wrong method is told which methods it takes
// (Allow header, RFC 9110), through the error catalogue; an unknown path stays 404. Against the
// real HTTP server (buildServer) with its real route table, and the pattern matching by hand.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RouteMethods } from '../src/server/route-methods.ts';
import { startServer, type TestServer } from './helpers/server.ts';

describe('RouteMethods', () => {
  it('matches parameters and wildcards segment by segment', () => {
    const r = new RouteMethods();
    r.add(['GET', 'HEAD'], '/v1/interventions/:id');
    r.add('DELETE', '/v1/interventions/:id');
    r.add('POST', '/v1/interventions');
    r.add('GET', '/console/*');
    expect(r.allowed('/v1/interventions/abc')).toEqual(['DELETE', 'GET', 'HEAD']);
    expect(r.allowed('/v1/interventions')).toEqual(['POST']);
    expect(r.allowed('/v1/interventions/abc/def')).toEqual([]);
    expect(r.allowed('/console/app.js')).toEqual(['GET']);
    expect(r.allowed('/v1/interventionsX')).toEqual([]);
  });
});

describe('wrong method on a known path', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(async () => {
    await s?.close();
  });

  for (const [method, path, allow] of [
    ['GET', '/v1/completions', 'POST'],
    ['DELETE', '/v1/chat/completions', 'POST'],
    ['POST', '/healthz', 'GET, HEAD'],
    ['PUT', '/v1/models', 'GET, HEAD'],
  ] as const) {
    it(`${method} ${path} -> 405, Allow: ${allow}`, async () => {
      const res = await fetch(`${s.url}${path}?x=1`, { method });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe(allow);
      const body = (await res.json()) as { error: { code: string; type: string; message: string } };
      expect(body.error.code).toBe('method_not_allowed');
      expect(body.error.type).toBe('invalid_request_error');
      expect(body.error.message).toContain(allow);
    });
  }

  it('an unknown path is still 404 route_not_found, with no Allow header', async () => {
    const res = await fetch(`${s.url}/v1/nope`, { method: 'DELETE' });
    expect(res.status).toBe(404);
    expect(res.headers.get('allow')).toBeNull();
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('route_not_found');
  });
});
