// GET /v1/neurons: which neurons every token reports on (the catalogue the engine watches), so a
// client knows the keys of `confidence.entropy_neurons` / `frequency_neurons` before it asks, and
// what the sidecar knows about each: its role, the weight metrics that put it in the catalogue
// (rho_k, LogitVar, frequency score), its calibration mean and causal figures when the catalogue
// came from `analyze`, and where the catalogue came from (provenance).
//
// Catalogue fields are read defensively: the catalogue format grows (rank, ranking rule...), and a
// field this route does not know yet is passed through under `extra` rather than dropped or failed on.

import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Catalogue, CatalogueNeuron } from '../../monitor/catalogue.ts';
import type { ServerContext } from './context.ts';
import { neuronIndexOf } from '../../monitor/neurons.ts';

const Nullable = <T extends ReturnType<typeof Type.Number>>(t: T) => Type.Union([t, Type.Null()]);
const Effect = Type.Object({
  mean_abs_delta_loss: Type.Number(),
  mean_delta_loss: Type.Number(),
  mean_delta_entropy: Type.Number(),
});

const NeuronView = Type.Object({
  address: Type.String(),
  index: Type.Integer(),
  /** Every role the watched set gives it (a neuron may be in both lists). */
  roles: Type.Array(Type.String()),
  rho: Nullable(Type.Number()),
  norm: Nullable(Type.Number()),
  logit_var: Nullable(Type.Number()),
  freq_score: Nullable(Type.Number()),
  calibration_mean: Nullable(Type.Number()),
  /** Mean-ablation effects on the calibration corpus (analyze only). */
  causal: Type.Union([
    Type.Object({
      ablate_to: Type.Number(),
      positions: Type.Integer(),
      total: Effect,
      direct: Effect,
      norm_mediated_fraction: Type.Union([Type.Number(), Type.Null()]),
      frequency_mediated_fraction: Type.Optional(Type.Union([Type.Number(), Type.Null()])),
    }),
    Type.Null(),
  ]),
  /** Catalogue fields this version does not name (newer catalogue formats). */
  extra: Type.Record(Type.String(), Type.Unknown()),
});

const Provenance = Type.Object({
  /** analyzed: `analyze` on a corpus; weights_only: computed from the weights at load; watched_only: only the watched set is known. */
  kind: Type.Union([Type.Literal('analyzed'), Type.Literal('weights_only'), Type.Literal('watched_only')]),
  model: Type.Union([
    Type.Object({ id: Type.String(), config_hash: Type.String(), weights_hash: Type.String() }),
    Type.Null(),
  ]),
  created_at: Type.Union([Type.String(), Type.Null()]),
  /** Null-space dimension used for rho_k, and how many candidates of each family were kept. */
  k: Type.Union([Type.Integer(), Type.Null()]),
  top: Type.Union([Type.Integer(), Type.Null()]),
  corpus: Type.Union([
    Type.Object({ description: Type.String(), tokens: Type.Integer(), synthetic: Type.Boolean() }),
    Type.Null(),
  ]),
  /** Mean causal figures of randomly drawn neurons, the yardstick for the catalogued ones. */
  random_baseline: Type.Union([
    Type.Object({ count: Type.Integer(), total: Effect, direct: Effect, norm_mediated_fraction: Type.Union([Type.Number(), Type.Null()]) }),
    Type.Null(),
  ]),
});

export const NeuronCatalogueView = Type.Object({
  object: Type.Literal('neuron_catalogue'),
  model: Type.String(),
  /** The instrumented layer (the last one) and its width. */
  layer: Type.Integer(),
  d_mlp: Type.Integer(),
  vocab_size: Type.Integer(),
  /** ln(vocab_size): the entropy of a uniform next-token distribution, the top of the scale. */
  max_entropy: Type.Number(),
  entropy: Type.Array(Type.String()),
  frequency: Type.Array(Type.String()),
  provenance: Provenance,
  neurons: Type.Array(NeuronView),
});
export type NeuronCatalogueView = Static<typeof NeuronCatalogueView>;

const KNOWN = new Set(['address', 'index', 'role', 'norm', 'rho', 'logitVar', 'freqScore', 'calibrationMean', 'verification']);

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const obj = (v: unknown): Record<string, unknown> | null =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;

function effect(v: unknown): Static<typeof Effect> | null {
  const e = obj(v);
  if (!e) return null;
  const [a, d, h] = [num(e.meanAbsDeltaLoss), num(e.meanDeltaLoss), num(e.meanDeltaEntropy)];
  return a === null || d === null || h === null ? null : { mean_abs_delta_loss: a, mean_delta_loss: d, mean_delta_entropy: h };
}

function causalView(v: unknown): Static<typeof NeuronView>['causal'] {
  const c = obj(v);
  if (!c) return null;
  const total = effect(c.total);
  const direct = effect(c.direct);
  const ablateTo = num(c.ablateTo);
  if (!total || !direct || ablateTo === null) return null;
  return {
    ablate_to: ablateTo,
    positions: num(c.positions) ?? 0,
    total,
    direct,
    norm_mediated_fraction: num(c.normMediatedFraction),
    ...('frequencyMediatedFraction' in c ? { frequency_mediated_fraction: num(c.frequencyMediatedFraction) } : {}),
  };
}

function neuronView(address: string, roles: string[], n: CatalogueNeuron | undefined, index: number) {
  const raw = (n ?? {}) as unknown as Record<string, unknown>;
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!KNOWN.has(k)) extra[k] = v;
  return {
    address,
    index,
    roles,
    rho: num(raw.rho),
    norm: num(raw.norm),
    logit_var: num(raw.logitVar),
    freq_score: num(raw.freqScore),
    calibration_mean: num(raw.calibrationMean),
    causal: causalView(raw.verification),
    extra,
  };
}

function provenance(c: Catalogue | null): Static<typeof Provenance> {
  if (!c) return { kind: 'watched_only', model: null, created_at: null, k: null, top: null, corpus: null, random_baseline: null };
  const corpus = obj(c.corpus);
  const analyzed = corpus !== null || (Array.isArray(c.neurons) && c.neurons.some((n) => obj(n)?.verification));
  const model = obj(c.model);
  const baseline = obj(c.baseline);
  const bTotal = effect(baseline?.total);
  const bDirect = effect(baseline?.direct);
  return {
    kind: analyzed ? 'analyzed' : 'weights_only',
    model:
      model && typeof model.id === 'string'
        ? { id: model.id, config_hash: String(model.configHash ?? ''), weights_hash: String(model.weightsHash ?? '') }
        : null,
    created_at: typeof c.createdAt === 'string' ? c.createdAt : null,
    k: num(c.k),
    top: num(c.top),
    corpus: corpus
      ? { description: String(corpus.description ?? ''), tokens: num(corpus.tokens) ?? 0, synthetic: corpus.synthetic === true }
      : null,
    random_baseline:
      baseline && bTotal && bDirect
        ? { count: num(baseline.count) ?? 0, total: bTotal, direct: bDirect, norm_mediated_fraction: num(baseline.normMediatedFraction) }
        : null,
  };
}

/** The response body; exported for the console test and the CLI to share one view. */
export function catalogueView(
  engine: ReadyServicesEngine,
  catalogue: Catalogue | null,
): NeuronCatalogueView {
  const { entropy, frequency } = engine.catalogue;
  const byAddress = new Map<string, CatalogueNeuron>();
  for (const n of Array.isArray(catalogue?.neurons) ? catalogue.neurons : []) {
    if (obj(n) && typeof n.address === 'string') byAddress.set(n.address, n);
  }
  const order = [...new Set([...entropy, ...frequency])];
  const neurons = order.map((address) => {
    const roles = [...(entropy.includes(address) ? ['entropy'] : []), ...(frequency.includes(address) ? ['frequency'] : [])];
    const index = neuronIndexOf(address);
    return neuronView(address, roles, byAddress.get(address), index);
  });
  return {
    object: 'neuron_catalogue',
    model: engine.modelId,
    layer: engine.spec.nLayers - 1,
    d_mlp: engine.spec.dMlp,
    vocab_size: engine.spec.vocabSize,
    max_entropy: Math.log(engine.spec.vocabSize),
    entropy,
    frequency,
    provenance: provenance(catalogue),
    neurons,
  };
}

type ReadyServicesEngine = ReturnType<ServerContext['ready']>['engine'];

export function registerNeuronRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get(
    '/v1/neurons',
    { schema: { response: { 200: NeuronCatalogueView } }, onRequest: ctx.requireApiKey },
    async () => {
      const { engine, catalogue } = ctx.ready();
      return catalogueView(engine, catalogue ?? null);
    },
  );
}
