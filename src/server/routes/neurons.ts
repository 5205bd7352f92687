// GET /v1/neurons: which neurons every token reports on (the catalogue the engine watches), so a
// client knows the keys of `confidence.entropy_neurons` / `frequency_neurons` before it asks.

import type { FastifyInstance } from 'fastify';
import { NeuronCatalogueView } from '../schemas.ts';
import type { ServerContext } from './context.ts';

export function registerNeuronRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get(
    '/v1/neurons',
    { schema: { response: { 200: NeuronCatalogueView } }, onRequest: ctx.requireApiKey },
    async () => {
      const { engine } = ctx.ready();
      return {
        object: 'neuron_catalogue' as const,
        model: engine.modelId,
        layer: engine.spec.nLayers - 1,
        d_mlp: engine.spec.dMlp,
        entropy: engine.catalogue.entropy,
        frequency: engine.catalogue.frequency,
      };
    },
  );
}
