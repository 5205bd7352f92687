// GET /v1/models and /v1/models/:model: the one model this sidecar serves, as OpenAI lists models.

import type { FastifyInstance } from 'fastify';
import { ModelIdParams, ModelList, ModelView } from '../schemas.ts';
import type { ServerContext, ServerEngine } from './context.ts';
import { checkModel } from './openai-params.ts';

/** When the process started serving: the `created` of its only model. */
const servedSince = Math.floor(Date.now() / 1000);

function modelView(engine: ServerEngine) {
  return {
    id: engine.modelId,
    object: 'model' as const,
    created: servedSince,
    owned_by: 'confidence-sidecar',
  };
}

export function registerModelRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get(
    '/v1/models',
    { schema: { response: { 200: ModelList } }, onRequest: ctx.requireApiKey },
    async () => ({
      object: 'list' as const,
      data: [modelView(ctx.ready().engine)],
    }),
  );

  app.get<{ Params: { model: string } }>(
    '/v1/models/:model',
    { schema: { params: ModelIdParams, response: { 200: ModelView } }, onRequest: ctx.requireApiKey },
    async (request) => {
      const { engine } = ctx.ready();
      checkModel(request.params.model, engine.modelId);
      return modelView(engine);
    },
  );
}
