// Live interventions on last-layer neurons: the registry the server exposes over HTTP and the CLI
// fills from --intervene flags, and their compilation into the graph's neuron_scale/neuron_shift
// inputs (a' = a * scale + shift, see src/model/types.ts IO).

import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { InvalidInputError } from '../errors.ts';
import {
  formatNeuronAddress,
  INTERVENTION_MODES,
  isInterventionMode as isMode,
  parseNeuronAddress,
  type InterventionMode,
  type NeuronIntervention,
} from './neurons.ts';

export type { InterventionMode } from './neurons.ts';
export { parseNeuronAddress } from './neurons.ts';

export interface InterventionSpec {
  neuron: string;
  mode: InterventionMode;
  /** Required for clamp/scale/add; absent for mean_ablate (resolved from calibration). */
  value?: number;
}

/**
 * Parses a --intervene flag: `L.i=clamp:5`, `L.i=scale:0.5`, `L.i=add:-2`, `L.i=mean_ablate`.
 * Checks syntax only; the registry checks the neuron against the model.
 */
export function parseInterventionSpec(text: string): InterventionSpec {
  const bad = (why: string) =>
    new InvalidInputError(
      `bad intervention "${text}": ${why} (expected LAYER.INDEX=clamp:V | scale:S | add:D | mean_ablate)`,
      'intervene',
    );
  const eq = text.indexOf('=');
  if (eq < 0) throw bad('missing "="');
  const neuron = text.slice(0, eq).trim();
  if (!parseNeuronAddress(neuron)) throw bad(`"${neuron}" is not a LAYER.INDEX neuron address`);
  const action = text.slice(eq + 1).trim();
  const colon = action.indexOf(':');
  const mode = (colon < 0 ? action : action.slice(0, colon)).trim();
  if (!isMode(mode)) throw bad(`unknown mode "${mode}"`);
  if (mode === 'mean_ablate') {
    if (colon >= 0) throw bad('mean_ablate takes no value');
    return { neuron, mode };
  }
  if (colon < 0) throw bad(`${mode} needs a value`);
  const raw = action.slice(colon + 1).trim();
  const value = raw === '' ? NaN : Number(raw);
  if (!Number.isFinite(value)) throw bad(`"${raw}" is not a finite number`);
  return { neuron, mode, value };
}

export interface StoredIntervention {
  id: string;
  neuron: string;
  mode: InterventionMode;
  /** The value applied; for mean_ablate the calibration mean it resolved to. */
  value: number;
  createdAt: string;
  /** ISO time after which it no longer applies; null = until removed. */
  expiresAt: string | null;
  /** Only generation requests with this id see it; null = every request. */
  requestId: string | null;
}

export interface AddInterventionInput {
  neuron: string;
  mode: string;
  value?: number | null;
  ttlS?: number | null;
  requestId?: string | null;
}

export interface InterventionRegistryOptions {
  lastLayer: number;
  dMlp: number;
  /** Calibration mean activation of neuron `index` (from the catalogue); enables mean_ablate. */
  calibrationMean?: (index: number) => number | undefined;
  /** Clock in ms (tests inject one). */
  now?: () => number;
}

export interface InterventionEvents {
  created: [StoredIntervention];
  removed: [StoredIntervention];
  expired: [StoredIntervention];
}

export class InterventionRegistry extends EventEmitter<InterventionEvents> {
  private readonly items = new Map<string, StoredIntervention>();
  /** Expiry in ms, kept numeric so pruning never parses dates. */
  private readonly expiry = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly opts: InterventionRegistryOptions) {
    super();
    this.now = opts.now ?? Date.now;
  }

  /** Validates, resolves mean_ablate and stores; throws InvalidInputError naming the bad field. */
  add(input: AddInterventionInput): StoredIntervention {
    const { lastLayer, dMlp } = this.opts;
    const address = typeof input.neuron === 'string' ? parseNeuronAddress(input.neuron) : null;
    if (!address)
      throw new InvalidInputError(
        `neuron must be a LAYER.INDEX address like "${lastLayer}.0", got ${JSON.stringify(input.neuron)}`,
        'neuron',
      );
    if (address.layer !== lastLayer) {
      throw new InvalidInputError(
        `neuron ${input.neuron}: only the last MLP layer (${lastLayer}) is instrumented; use ${lastLayer}.INDEX`,
        'neuron',
      );
    }
    if (address.index >= dMlp) {
      throw new InvalidInputError(
        `neuron ${input.neuron}: index must be below ${dMlp} (the layer's width)`,
        'neuron',
      );
    }
    if (!isMode(input.mode)) {
      throw new InvalidInputError(
        `mode must be one of ${INTERVENTION_MODES.join(', ')}, got ${JSON.stringify(input.mode)}`,
        'mode',
      );
    }
    const mode = input.mode;
    let value: number;
    if (mode === 'mean_ablate') {
      if (input.value !== undefined && input.value !== null) {
        throw new InvalidInputError('mean_ablate takes no value: it uses the calibration mean', 'value');
      }
      const mean = this.opts.calibrationMean?.(address.index);
      if (mean === undefined || !Number.isFinite(mean)) {
        throw new InvalidInputError(
          `mean_ablate on ${input.neuron} needs a calibration mean; build a calibrated catalogue first or use clamp`,
          'mode',
        );
      }
      value = mean;
    } else {
      if (typeof input.value !== 'number' || !Number.isFinite(input.value)) {
        throw new InvalidInputError(
          `${mode} needs a finite numeric value, got ${JSON.stringify(input.value)}`,
          'value',
        );
      }
      value = input.value;
    }
    const ttl = input.ttlS ?? null;
    if (ttl !== null && (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0)) {
      throw new InvalidInputError(
        `ttl_s must be a positive number of seconds, got ${JSON.stringify(ttl)}`,
        'ttl_s',
      );
    }
    const requestId = input.requestId ?? null;
    if (requestId !== null && (typeof requestId !== 'string' || requestId === '')) {
      throw new InvalidInputError('request_id must be a non-empty string', 'request_id');
    }

    const created = this.now();
    const expires = ttl === null ? null : created + ttl * 1000;
    const stored: StoredIntervention = {
      id: `iv_${randomUUID()}`,
      neuron: formatNeuronAddress(address.layer, address.index),
      mode,
      value,
      createdAt: new Date(created).toISOString(),
      expiresAt: expires === null ? null : new Date(expires).toISOString(),
      requestId,
    };
    this.items.set(stored.id, stored);
    if (expires !== null) this.expiry.set(stored.id, expires);
    this.emit('created', stored);
    return stored;
  }

  remove(id: string): boolean {
    const item = this.items.get(id);
    if (!item) return false;
    this.drop(id);
    this.emit('removed', item);
    return true;
  }

  /** Removes everything; returns what was removed. */
  clear(): StoredIntervention[] {
    const all = [...this.items.values()];
    for (const item of all) this.remove(item.id);
    return all;
  }

  /** Removes the interventions scoped to one request (call when the request ends). */
  clearRequest(requestId: string): StoredIntervention[] {
    const scoped = [...this.items.values()].filter((i) => i.requestId === requestId);
    for (const item of scoped) this.remove(item.id);
    return scoped;
  }

  /** Every live intervention, oldest first. */
  list(): StoredIntervention[] {
    this.pruneExpired();
    return [...this.items.values()];
  }

  get(id: string): StoredIntervention | undefined {
    this.pruneExpired();
    return this.items.get(id);
  }

  /**
   * What applies to one generation step: the global interventions plus those scoped to requestId,
   * oldest first (compileInterventions composes them in this order).
   */
  activeFor(requestId?: string): NeuronIntervention[] {
    this.pruneExpired();
    const out: NeuronIntervention[] = [];
    for (const i of this.items.values()) {
      if (i.requestId === null || i.requestId === requestId) {
        out.push({ id: i.id, neuron: i.neuron, mode: i.mode, value: i.value });
      }
    }
    return out;
  }

  private pruneExpired(): void {
    if (this.expiry.size === 0) return;
    const now = this.now();
    for (const [id, at] of this.expiry) {
      if (now < at) continue;
      const item = this.items.get(id)!;
      this.drop(id);
      this.emit('expired', item);
    }
  }

  private drop(id: string): void {
    this.items.delete(id);
    this.expiry.delete(id);
  }
}

/**
 * The graph inputs for a list of interventions: a' = a * scale + shift per neuron, starting from
 * the identity (1, 0). Each intervention maps the current affine map (s, t) to a new one:
 *   clamp c / mean_ablate c:  (0, c)
 *   scale k:                  (k s, k t)
 *   add d:                    (s, t + d)
 * applied in list order, so several on one neuron compose (clamp 2 then add 1 gives 3).
 */
export function compileInterventions(
  list: readonly NeuronIntervention[],
  dMlp: number,
): { scale: Float32Array; shift: Float32Array } {
  const scale = new Float32Array(dMlp).fill(1);
  const shift = new Float32Array(dMlp);
  // Composed in float64, rounded once into the float32 graph inputs.
  const s = new Float64Array(dMlp).fill(1);
  const t = new Float64Array(dMlp);
  for (const iv of list) {
    const address = parseNeuronAddress(iv.neuron);
    if (!address || address.index >= dMlp)
      throw new Error(`compileInterventions: neuron ${iv.neuron} is not in 0..${dMlp - 1}`);
    const i = address.index;
    switch (iv.mode) {
      case 'clamp':
      case 'mean_ablate':
        s[i] = 0;
        t[i] = iv.value;
        break;
      case 'scale':
        s[i] *= iv.value;
        t[i] *= iv.value;
        break;
      case 'add':
        t[i] += iv.value;
        break;
    }
  }
  scale.set(s);
  shift.set(t);
  return { scale, shift };
}
