// The cases of the bad-input suite (test/bad-input.test.ts), by category. Requests are built
// when a case runs, from the engine under test (set with useEngine).

import type { ServerEngine } from '../../src/server/app.ts';
import { httpText } from './raw-http.ts';

export const ADMIN = 'bad-input-admin';
export const KEY = 'bad-input-key';
export const key = { authorization: `Bearer ${KEY}` };
export const admin = { authorization: `Bearer ${ADMIN}` };
export const json = { 'content-type': 'application/json' };

export interface Case {
  name: string;
  /** The raw request text (built once the server and model are known). */
  request: () => string;
  status: number;
  /** The error code; null for a case that must succeed (status < 300). */
  code: string | null;
}

export const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  405: 'invalid_request_error',
  413: 'invalid_request_error',
  414: 'invalid_request_error',
  415: 'invalid_request_error',
  417: 'invalid_request_error',
  426: 'invalid_request_error',
  431: 'invalid_request_error',
};

export let engine: ServerEngine;
export const useEngine = (e: ServerEngine) => (engine = e);

export const model = () => engine.modelId;
export const lastLayer = () => engine.spec.nLayers - 1;
export const post = (path: string, body: unknown, headers: Record<string, string> = key) =>
  httpText('POST', path, { ...json, ...headers }, typeof body === 'string' ? body : JSON.stringify(body));
export const completion = (extra: Record<string, unknown>) => ({
  model: model(),
  prompt: 'The moon',
  max_tokens: 1,
  ...extra,
});
export const chat = (extra: Record<string, unknown>) => ({
  model: model(),
  messages: [{ role: 'user', content: 'hi' }],
  max_tokens: 1,
  ...extra,
});

export const cases: Case[] = [];
export const add = (name: string, request: () => string, status: number, code: string | null) =>
  cases.push({ name, request, status, code });
