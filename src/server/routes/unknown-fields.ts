// `--unknown-fields ignore`: vLLM clients send fields this server does not know (vLLM's many
// extensions); by default they get a 400 naming the field, as OpenAI answers, so a typo never
// passes as a default. An operator who prefers vLLM's leniency gets them dropped before validation
// instead, each named in a warning log line and counted (llm_request_fields_ignored_total).
// Only top-level fields are dropped: a nested unknown field (inside a message) is still a 400.

import type { preValidationHookHandler } from 'fastify';
import type { TObject } from '@sinclair/typebox';
import type { Endpoint } from '../telemetry/index.ts';
import type { ServerContext } from './context.ts';

/** The hooks a generation route adds for the operator's unknown-fields policy (none for 'reject'). */
export function unknownFieldsHooks(
  ctx: ServerContext,
  schema: TObject,
  endpoint: Endpoint,
): { preValidation?: preValidationHookHandler } {
  if (ctx.unknownFields !== 'ignore') return {};
  const known = new Set(Object.keys(schema.properties));
  return {
    preValidation: async (request) => {
      const body = request.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
      const record = body as Record<string, unknown>;
      const dropped = Object.keys(record).filter((k) => !known.has(k));
      if (dropped.length === 0) return;
      for (const k of dropped) delete record[k];
      request.log.warn(
        { ignored_fields: dropped },
        'ignored unknown request fields (--unknown-fields ignore)',
      );
      ctx.telemetry()?.fieldsIgnored?.(endpoint, dropped.length);
    },
  };
}
