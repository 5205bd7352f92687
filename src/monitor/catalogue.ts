// The neuron catalogue: what `catalogue build` writes and the server/CLI read to know which
// last-layer neurons to watch. One JSON file per model, tied to it by hashes of config and weights.
// It records every last-layer neuron's weight metrics (weight-metrics.ts), token-frequency score
// (frequency.ts), optional calibration mean and causal verification (causal.ts), and the chosen
// entropy and frequency candidates.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ModelLoadError } from '../errors.ts';
import type { CausalEffect, RandomBaseline } from './causal.ts';
import type { ScreenSummary } from './screen.ts';
export { formatCatalogueTable } from './catalogue-format.ts';
import type { WeightMetrics } from './weight-metrics.ts';

export const CATALOGUE_VERSION = 1;

export type NeuronRole = 'entropy' | 'frequency';

export type { ModelIdentity } from '../model/identity.ts';
import type { ModelIdentity } from '../model/identity.ts';

export interface CorpusSummary {
  description: string;
  /** Tokens the calibration pass looked at (after exclusions). */
  tokens: number;
  /** Made-up data (the demo model): numbers illustrate the pipeline, not the model. */
  synthetic: boolean;
}

/** Causal check of one neuron on the calibration corpus (causal.ts CausalEffect without index). */
export type NeuronVerification = Omit<CausalEffect, 'index'>;

export interface CatalogueNeuron {
  /** `LAYER.INDEX`. */
  address: string;
  index: number;
  role: NeuronRole | null;
  norm: number;
  rho: number;
  logitVar: number;
  /** cos(W_U^T w_out, f); null when no unigram counts were available. */
  freqScore: number | null;
  calibrationMean?: number;
  verification?: NeuronVerification;
}

export interface Catalogue {
  version: typeof CATALOGUE_VERSION;
  createdAt: string;
  model: ModelIdentity;
  layer: number;
  dMlp: number;
  /** The k asked for (the paper's bottom-k); rho uses max(k, nullity) dark directions. */
  k: number;
  /** Numerical rank and nullity of the processed W_U, the dark subspace's dimension and the
   * relative rank tolerance (weight-metrics.ts). Absent in catalogues written before they existed. */
  rank?: number;
  nullity?: number;
  darkDim?: number;
  rankTolerance?: number;
  /** The rule that ordered `entropy` (ENTROPY_RANKING); absent = rho alone (older catalogues). */
  entropyRanking?: string;
  /** How many candidates of each family were kept. */
  top: number;
  corpus: CorpusSummary | null;
  /** Addresses, best first (by rho; by |freqScore|). */
  entropy: string[];
  frequency: string[];
  /** Every neuron of the last layer, by index. */
  neurons: CatalogueNeuron[];
  /** Mean-ablation effects of random neurons, for comparison. */
  baseline?: RandomBaseline['mean'] & { count: number; seed: number };
  /** The causal screen of every last-layer neuron (screen.ts), when a corpus was given. */
  screen?: ScreenSummary;
}

/** Documented in docs/SCIENCE.md "Ranking entropy candidates". */
export const ENTROPY_RANKING = 'pareto-fronts(rho, rho*norm), then rho, then norm';

export interface RoleInput {
  index: number;
  rho: number;
  /** Without norms every neuron counts as equally large and the order is by rho alone. */
  norm?: number;
  freqScore?: number | null;
}

/**
 * Pareto front of each item on (norm, rho), both larger-is-better: front 0 holds the items no
 * other item beats on both criteria (>= on both, > on one); front f + 1 those beaten only by
 * fronts <= f. Sweep by norm descending: everything already swept has norm >= the current one, so
 * a front beats it exactly when the front's largest rho (the largest norm among ties) does.
 */
export function paretoFronts(items: readonly { norm: number; rho: number }[]): number[] {
  const order = items
    .map((_, i) => i)
    .sort((a, b) => items[b]!.norm - items[a]!.norm || items[b]!.rho - items[a]!.rho);
  const best: { rho: number; norm: number }[] = [];
  const front = new Array<number>(items.length);
  for (const i of order) {
    const p = items[i]!;
    let f = 0;
    while (f < best.length && (best[f]!.rho > p.rho || (best[f]!.rho === p.rho && best[f]!.norm > p.norm)))
      f++;
    front[i] = f;
    if (f === best.length) best.push({ rho: p.rho, norm: p.norm });
    else if (p.rho > best[f]!.rho) best[f] = { rho: p.rho, norm: p.norm };
  }
  return front;
}

/**
 * Candidates. Entropy: the paper's entropy neurons stand out by a large norm AND a large rho, so
 * neurons are ordered by Pareto front on (rho, rho * norm) (ENTROPY_RANKING; rho * norm is the norm
 * of w_out's dark component, so a large norm with no dark share does not qualify): a neuron is never
 * listed after one it beats on both (nor, since that implies it, on both norm and rho); within a
 * front by rho, then norm. The largest-rho neuron is always first (nothing beats it on rho), so a
 * fully dark neuron leads whatever its norm. Frequency: the
 * `top` with the largest |freqScore| (empty without scores). The lists are independent; a neuron in
 * both is labelled 'entropy' in its role field. Ties break towards the lower index.
 */
export function selectRoles(
  metrics: readonly RoleInput[],
  opts: { top: number },
): { entropy: number[]; frequency: number[] } {
  const top = Math.max(0, Math.floor(opts.top));
  const norms = metrics.map((m) => m.norm ?? 0);
  const fronts = paretoFronts(metrics.map((m, j) => ({ norm: m.rho * norms[j]!, rho: m.rho })));
  const pos = new Map(metrics.map((m, j) => [m.index, j]));
  const key = (m: RoleInput) => pos.get(m.index)!;
  const byRho = [...metrics].sort(
    (a, b) =>
      fronts[key(a)]! - fronts[key(b)]! ||
      b.rho - a.rho ||
      norms[key(b)]! - norms[key(a)]! ||
      a.index - b.index,
  );
  const scored = metrics.filter((m) => typeof m.freqScore === 'number' && Number.isFinite(m.freqScore));
  const byFreq = scored.sort((a, b) => Math.abs(b.freqScore!) - Math.abs(a.freqScore!) || a.index - b.index);
  return {
    entropy: byRho.slice(0, top).map((m) => m.index),
    frequency: byFreq.slice(0, top).map((m) => m.index),
  };
}

export interface BuildCatalogueInput {
  model: ModelIdentity;
  layer: number;
  metrics: WeightMetrics;
  freqScores?: ArrayLike<number> | null;
  calibrationMeans?: ArrayLike<number> | null;
  verification?: readonly CausalEffect[];
  baseline?: RandomBaseline;
  screen?: ScreenSummary;
  corpus?: CorpusSummary | null;
  top?: number;
  now?: Date;
}

export function buildCatalogue(input: BuildCatalogueInput): Catalogue {
  const { layer, metrics } = input;
  const top = input.top ?? 10;
  const dMlp = metrics.neurons.length;
  const address = (index: number) => `${layer}.${index}`;
  const neurons: CatalogueNeuron[] = metrics.neurons.map((m) => ({
    address: address(m.index),
    index: m.index,
    role: null,
    norm: m.norm,
    rho: m.rho,
    logitVar: m.logitVar,
    freqScore: input.freqScores ? input.freqScores[m.index]! : null,
  }));
  const roles = selectRoles(neurons, { top });
  for (const i of roles.frequency) neurons[i]!.role = 'frequency';
  for (const i of roles.entropy) neurons[i]!.role = 'entropy';
  if (input.calibrationMeans) for (const n of neurons) n.calibrationMean = input.calibrationMeans[n.index]!;
  for (const effect of input.verification ?? []) {
    const { index, ...rest } = effect;
    neurons[index]!.verification = rest;
  }
  const catalogue: Catalogue = {
    version: CATALOGUE_VERSION,
    createdAt: (input.now ?? new Date()).toISOString(),
    model: input.model,
    layer,
    dMlp,
    k: metrics.k,
    rank: metrics.rank,
    nullity: metrics.nullity,
    darkDim: metrics.darkDim,
    rankTolerance: metrics.rankTolerance,
    entropyRanking: ENTROPY_RANKING,
    top,
    corpus: input.corpus ?? null,
    entropy: roles.entropy.map(address),
    frequency: roles.frequency.map(address),
    neurons,
  };
  if (input.baseline) {
    catalogue.baseline = {
      ...input.baseline.mean,
      count: input.baseline.neurons.length,
      seed: input.baseline.seed,
    };
  }
  if (input.screen) catalogue.screen = input.screen;
  return catalogue;
}

/** Why the catalogue does not belong to this model, or null when it does. */
export function identityMismatch(c: Catalogue, model: ModelIdentity): string | null {
  if (c.model.configHash !== model.configHash) return `it was built for another model config (${c.model.id})`;
  if (c.model.weightsHash !== model.weightsHash) return `it was built for other weights (${c.model.id})`;
  return null;
}

/** For InterventionRegistry's mean_ablate. */
export function calibrationMeanLookup(c: Catalogue): (index: number) => number | undefined {
  return (index) => c.neurons[index]?.calibrationMean;
}

export function writeCatalogue(path: string, c: Catalogue): void {
  writeFileSync(path, JSON.stringify(c, null, 2) + '\n');
}

export function readCatalogue(path: string): Catalogue {
  if (!existsSync(path))
    throw new ModelLoadError(path, 'catalogue file not found (build one with `catalogue build`)');
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(path, `not valid JSON (${(e as Error).message})`);
  }
  const problem = catalogueProblem(data);
  if (problem) throw new ModelLoadError(path, `not a valid catalogue: ${problem}`);
  return data as Catalogue;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The first structural problem of a parsed catalogue, or null. */
export function catalogueProblem(data: unknown): string | null {
  if (!isObj(data)) return 'expected a JSON object';
  if (data.version !== CATALOGUE_VERSION)
    return `unsupported version ${JSON.stringify(data.version)} (expected ${CATALOGUE_VERSION})`;
  const model = data.model;
  if (!isObj(model)) return '"model" must be an object';
  for (const key of ['id', 'configHash', 'weightsHash']) {
    if (typeof model[key] !== 'string') return `"model.${key}" must be a string`;
  }
  for (const key of ['layer', 'dMlp', 'k', 'top']) {
    const v = data[key];
    if (!isNum(v) || !Number.isInteger(v) || v < 0) return `"${key}" must be a non-negative integer`;
  }
  // Fields added after version 1 shipped: optional, so older catalogues still read; checked when present.
  for (const key of ['rank', 'nullity', 'darkDim']) {
    const v = data[key];
    if (v !== undefined && (!isNum(v) || !Number.isInteger(v) || v < 0))
      return `"${key}" must be a non-negative integer when present`;
  }
  if (data.rankTolerance !== undefined && !isNum(data.rankTolerance))
    return '"rankTolerance" must be a number';
  if (data.entropyRanking !== undefined && typeof data.entropyRanking !== 'string')
    return '"entropyRanking" must be a string';
  if (data.screen !== undefined && !isObj(data.screen)) return '"screen" must be an object';
  if (data.corpus !== null && data.corpus !== undefined) {
    const c = data.corpus;
    if (
      !isObj(c) ||
      typeof c.description !== 'string' ||
      !isNum(c.tokens) ||
      typeof c.synthetic !== 'boolean'
    ) {
      return '"corpus" must be null or {description: string, tokens: number, synthetic: boolean}';
    }
  }
  if (!Array.isArray(data.neurons)) return '"neurons" must be an array';
  const layer = data.layer as number;
  if (data.neurons.length !== data.dMlp)
    return `"neurons" has ${data.neurons.length} entries, "dMlp" says ${data.dMlp}`;
  for (let i = 0; i < data.neurons.length; i++) {
    const n = data.neurons[i] as unknown;
    const where = `neurons[${i}]`;
    if (!isObj(n)) return `${where} must be an object`;
    if (n.index !== i) return `${where}.index must be ${i}`;
    if (n.address !== `${layer}.${i}`) return `${where}.address must be "${layer}.${i}"`;
    if (n.role !== null && n.role !== 'entropy' && n.role !== 'frequency')
      return `${where}.role must be "entropy", "frequency" or null`;
    for (const key of ['norm', 'rho', 'logitVar'])
      if (!isNum(n[key])) return `${where}.${key} must be a number`;
    if (n.freqScore !== null && !isNum(n.freqScore)) return `${where}.freqScore must be a number or null`;
    if (n.calibrationMean !== undefined && !isNum(n.calibrationMean))
      return `${where}.calibrationMean must be a number`;
    if (n.verification !== undefined && !isObj(n.verification))
      return `${where}.verification must be an object`;
  }
  for (const list of ['entropy', 'frequency']) {
    const v = data[list];
    if (!Array.isArray(v)) return `"${list}" must be an array of neuron addresses`;
    for (const a of v) {
      const index =
        typeof a === 'string' && a.startsWith(`${layer}.`) ? Number(a.slice(String(layer).length + 1)) : NaN;
      if (!Number.isInteger(index) || index < 0 || index >= data.neurons.length) {
        return `"${list}" lists ${JSON.stringify(a)}, not a neuron of layer ${layer}`;
      }
    }
  }
  return null;
}
