// The interventions API (admin token): live changes to last-layer neurons that every generation
// picks up from its next token. An intervention with request_id applies to that request only
// (the one sent with that X-Request-Id) and is removed when it ends. Interventions declared in the
// --interventions file are listed with source "file" and cannot be deleted here (409): the file is
// their one source of truth. Past --max-interventions live ones, creating answers 429.

import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.ts';
import {
  CreateInterventionRequest,
  DeletedIntervention,
  InterventionIdParams,
  InterventionList,
  InterventionView,
} from '../schemas.ts';
import { auditIntervention, interventionView } from './audit.ts';
import type { ServerContext } from './context.ts';

function notFound(id: string): ApiError {
  return new ApiError('intervention_not_found', `No intervention with id '${id}'.`, 'id');
}

export function registerInterventionRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const admin = { onRequest: ctx.requireAdmin };

  app.post<{ Body: CreateInterventionRequest }>(
    '/v1/interventions',
    { ...admin, schema: { body: CreateInterventionRequest, response: { 201: InterventionView } } },
    async (request, reply) => {
      const { registry } = ctx.ready();
      const b = request.body;
      const iv = registry.add({
        neuron: b.neuron,
        neurons: b.neurons,
        mode: b.mode,
        value: b.value,
        ttlS: b.ttl_s,
        requestId: b.request_id,
      });
      auditIntervention(request.log, 'create', iv, 'api', request.ip);
      return reply.code(201).send(interventionView(iv));
    },
  );

  app.get('/v1/interventions', { ...admin, schema: { response: { 200: InterventionList } } }, async () => ({
    object: 'list' as const,
    data: ctx.ready().registry.list().map(interventionView),
  }));

  app.get<{ Params: { id: string } }>(
    '/v1/interventions/:id',
    { ...admin, schema: { params: InterventionIdParams, response: { 200: InterventionView } } },
    async (request) => {
      const iv = ctx.ready().registry.get(request.params.id);
      if (!iv) throw notFound(request.params.id);
      return interventionView(iv);
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/interventions/:id',
    { ...admin, schema: { params: InterventionIdParams, response: { 200: DeletedIntervention } } },
    async (request) => {
      const { registry } = ctx.ready();
      const iv = registry.get(request.params.id);
      if (!iv) throw notFound(request.params.id);
      registry.assertApiMayRemove(iv);
      if (!registry.remove(iv.id)) throw notFound(request.params.id);
      auditIntervention(request.log, 'delete', iv, 'api', request.ip);
      return {
        id: iv.id,
        object: 'intervention.deleted' as const,
        deleted: true as const,
        intervention: interventionView(iv),
      };
    },
  );

  app.delete(
    '/v1/interventions',
    { ...admin, schema: { response: { 200: InterventionList } } },
    async (request) => {
      // The file's interventions stay: the file is where they are managed.
      const removed = ctx.ready().registry.clear((iv) => iv.source !== 'file');
      for (const iv of removed) auditIntervention(request.log, 'delete', iv, 'api', request.ip);
      return { object: 'list' as const, data: removed.map(interventionView) };
    },
  );
}
