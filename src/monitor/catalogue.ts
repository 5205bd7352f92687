// The neuron catalogue: what `catalogue build` writes and the server/CLI read to know which
// last-layer neurons to watch. One JSON file per model, tied to it by hashes of config and weights.
// It records every last-layer neuron's weight metrics (weight-metrics.ts), token-frequency score
// (frequency.ts), optional calibration mean and causal verification (causal.ts), and the chosen
// entropy and frequency candidates.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ModelLoadError } from '../errors.ts';
import type { CausalEffect, RandomBaseline } from './causal.ts';
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
  /** Null-space dimension used for rho. */
  k: number;
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
}

export interface RoleInput {
  index: number;
  rho: number;
  freqScore?: number | null;
}

/**
 * Candidates: entropy = the `top` neurons with the largest rho; frequency = the `top` with the
 * largest |freqScore| (empty without scores). The lists are independent; a neuron in both is
 * labelled 'entropy' in its role field. Ties break towards the lower index.
 */
export function selectRoles(
  metrics: readonly RoleInput[],
  opts: { top: number },
): { entropy: number[]; frequency: number[] } {
  const top = Math.max(0, Math.floor(opts.top));
  const byRho = [...metrics].sort((a, b) => b.rho - a.rho || a.index - b.index);
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

/** A markdown table of the candidates (renders as plain ASCII on a terminal too). */
export function formatCatalogueTable(c: Catalogue): string {
  const lines: string[] = [];
  const corpus = c.corpus
    ? `${c.corpus.description}, ${c.corpus.tokens} tokens${c.corpus.synthetic ? ' (SYNTHETIC: illustrative only)' : ''}`
    : 'none (weight metrics only)';
  lines.push(`Model ${c.model.id}, last layer ${c.layer} (${c.dMlp} neurons), k = ${c.k}, corpus: ${corpus}`);
  const byAddress = new Map(c.neurons.map((n) => [n.address, n]));
  const effectCells = (n: CatalogueNeuron) => {
    const v = n.verification;
    if (!v) return ['', '', '', ''];
    return [
      fmt(v.total.meanAbsDeltaLoss),
      fmt(v.direct.meanAbsDeltaLoss),
      fmt(v.total.meanDeltaEntropy),
      fmtFraction(v.normMediatedFraction),
    ];
  };
  lines.push('', 'Entropy neuron candidates (by rho, the share of w_out in the unembedding null space)', '');
  lines.push(
    ...table(
      ['neuron', 'rho', 'norm', 'LogitVar', 'freq score', 'TE abs dloss', 'DE abs dloss', 'TE dH', '1-DE/TE'],
      c.entropy.map((a) => {
        const n = byAddress.get(a)!;
        return [
          a,
          fmt(n.rho),
          fmt(n.norm),
          fmt(n.logitVar),
          n.freqScore === null ? '' : fmt(n.freqScore),
          ...effectCells(n),
        ];
      }),
    ),
  );
  lines.push('', 'Token-frequency neuron candidates (by |cos(W_U^T w_out, f)|)', '');
  if (c.frequency.length === 0) {
    lines.push('(none: no unigram counts were given)');
  } else {
    lines.push(
      ...table(
        ['neuron', 'freq score', 'rho', 'norm', 'TE abs dloss', 'freq-DE abs dloss', '1-FDE/TE'],
        c.frequency.map((a) => {
          const n = byAddress.get(a)!;
          const v = n.verification;
          return [
            a,
            fmt(n.freqScore!),
            fmt(n.rho),
            fmt(n.norm),
            v ? fmt(v.total.meanAbsDeltaLoss) : '',
            v?.frequencyDirect ? fmt(v.frequencyDirect.meanAbsDeltaLoss) : '',
            v?.frequencyMediatedFraction !== undefined ? fmtFraction(v.frequencyMediatedFraction) : '',
          ];
        }),
      ),
    );
  }
  if (c.baseline) {
    const b = c.baseline;
    lines.push(
      '',
      `Random baseline (${b.count} neurons, seed ${b.seed}): TE abs dloss ${fmt(b.total.meanAbsDeltaLoss)}, ` +
        `DE abs dloss ${fmt(b.direct.meanAbsDeltaLoss)}, 1-DE/TE ${fmtFraction(b.normMediatedFraction)}`,
    );
  }
  return lines.join('\n') + '\n';
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)];
}

function fmt(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e-3 && a < 1e4 ? x.toFixed(4) : x.toExponential(2);
}

function fmtFraction(x: number | null): string {
  return x === null ? 'n/a' : x.toFixed(3);
}
