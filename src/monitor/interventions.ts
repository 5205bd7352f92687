// Live interventions on last-layer neurons: the registry the server exposes over HTTP, the CLI
// fills from --intervene flags, the --interventions file and the --state-dir restore; a cap on how
// many are live; and their compilation into the graph's neuron_scale/neuron_shift inputs
// (a' = a * scale + shift, see src/model/types.ts IO). Confidence targets (target_entropy) reach
// the graph as clamps chosen per step by their controller (entropy-target.ts, via session()).

import { EventEmitter } from 'node:events';
import { InvalidInputError, LimitExceededError, ManagedElsewhereError } from '../errors.ts';
import {
  isInterventionMode as isMode,
  parseNeuronAddress,
  type InterventionMode,
  type NeuronIntervention,
} from './neurons.ts';
import { defaultTargetNeurons, InterventionSession } from './entropy-target.ts';
import { validateIntervention } from './intervention-validation.ts';

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
  if (!isMode(mode) || mode === 'target_entropy')
    throw bad(mode === 'target_entropy' ? 'target_entropy is set through the API or an --interventions file' : `unknown mode "${mode}"`);
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

/** Who made an intervention: the API, a generation request's own list, the file, a CLI flag. */
export type InterventionSource = 'api' | 'request' | 'file' | 'cli';

export interface StoredIntervention {
  id: string;
  /** The neuron; for target_entropy the neurons it drives, comma-separated (see `neurons`). */
  neuron: string;
  /** Every neuron it acts on (one, except for target_entropy). The registry always sets it (and the two below). */
  neurons?: string[];
  mode: InterventionMode;
  /** The value applied; for mean_ablate the calibration mean it resolved to; for target_entropy the target (nats). */
  value: number;
  createdAt: string;
  /** ISO time after which it no longer applies; null = until removed. */
  expiresAt: string | null;
  /** Only generation requests with this id see it; null = every request. */
  requestId: string | null;
  source?: InterventionSource;
  /** For file interventions, the file that declares them; null otherwise. */
  origin?: string | null;
}

export interface AddInterventionInput {
  /** Required, except for target_entropy (which takes `neurons` or defaults to the entropy neurons). */
  neuron?: string | null;
  neurons?: string[] | null;
  mode: string;
  value?: number | null;
  ttlS?: number | null;
  requestId?: string | null;
  source?: InterventionSource;
  origin?: string | null;
}

/** Live interventions allowed by default (`--max-interventions`). */
export const DEFAULT_MAX_INTERVENTIONS = 256;

export interface InterventionRegistryOptions {
  lastLayer: number;
  dMlp: number;
  /** Calibration mean activation of neuron `index` (from the catalogue); enables mean_ablate. */
  calibrationMean?: (index: number) => number | undefined;
  /** Cap on live interventions, every source counted (default DEFAULT_MAX_INTERVENTIONS). */
  maxLive?: number;
  /** Neurons whose activations every token record carries: the only ones a target can drive. */
  watched?: readonly string[];
  /** What a target_entropy without `neurons` drives (entropy-target.ts defaultTargetNeurons). */
  targetNeurons?: readonly string[];
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
  readonly maxLive: number;

  constructor(private readonly opts: InterventionRegistryOptions) {
    super();
    this.now = opts.now ?? Date.now;
    this.maxLive = opts.maxLive ?? DEFAULT_MAX_INTERVENTIONS;
  }

  /** Validates, resolves mean_ablate and stores; throws InvalidInputError naming the bad field. */
  add(input: AddInterventionInput): StoredIntervention {
    if (this.items.size >= this.maxLive) {
      this.pruneExpired();
      if (this.items.size >= this.maxLive)
        throw new LimitExceededError(
          `${this.items.size} interventions are live, the most this server allows (--max-interventions ${this.maxLive}); remove some first`,
          this.maxLive,
        );
    }
    const stored = this.validate(input);
    this.items.set(stored.id, stored);
    if (stored.expiresAt !== null) this.expiry.set(stored.id, Date.parse(stored.expiresAt));
    this.emit('created', stored);
    return stored;
  }

  /** The stored form of an input, not stored yet: throws InvalidInputError naming the bad field. */
  validate(input: AddInterventionInput): StoredIntervention {
    return validateIntervention(input, this.opts, this.now());
  }

  remove(id: string): boolean {
    const item = this.items.get(id);
    if (!item) return false;
    this.drop(id);
    this.emit('removed', item);
    return true;
  }

  /** Removes everything (or what `which` selects); returns what was removed. */
  clear(which: (iv: StoredIntervention) => boolean = () => true): StoredIntervention[] {
    const all = [...this.items.values()].filter(which);
    for (const item of all) this.remove(item.id);
    return all;
  }

  /**
   * Makes the file interventions from `origin` exactly `inputs`, or changes nothing: every input is
   * validated first (InvalidInputError with param `[i].field`) and the cap checked. Unchanged
   * entries keep their ids, so re-reading an unchanged file is not a change.
   */
  replaceFromFile(origin: string, inputs: readonly AddInterventionInput[]): { added: StoredIntervention[]; removed: StoredIntervention[] } {
    const next = inputs.map((input, i) => {
      try {
        return this.validate({ ...input, source: 'file', origin, requestId: null });
      } catch (e) {
        if (e instanceof InvalidInputError) throw new InvalidInputError(e.message, `[${i}]${e.param ? `.${e.param}` : ''}`);
        throw e;
      }
    });
    const key = (iv: StoredIntervention) => `${iv.mode}|${iv.neuron}|${iv.value}|${iv.expiresAt === null}`;
    const current = [...this.items.values()].filter((iv) => iv.source === 'file' && iv.origin === origin);
    const keep = new Map<string, StoredIntervention[]>();
    for (const iv of current) (keep.get(key(iv)) ?? keep.set(key(iv), []).get(key(iv))!).push(iv);
    const added: StoredIntervention[] = [];
    for (const iv of next) {
      const same = keep.get(key(iv));
      if (same && same.length > 0) same.shift();
      else added.push(iv);
    }
    const removed = [...keep.values()].flat();
    const after = this.items.size - removed.length + added.length;
    if (after > this.maxLive)
      throw new LimitExceededError(`${origin} would make ${after} interventions live, more than --max-interventions ${this.maxLive}`, this.maxLive);
    for (const iv of removed) this.remove(iv.id);
    for (const iv of added) {
      this.items.set(iv.id, iv);
      if (iv.expiresAt !== null) this.expiry.set(iv.id, Date.parse(iv.expiresAt));
      this.emit('created', iv);
    }
    return { added, removed };
  }

  /**
   * Puts back interventions saved earlier (the state directory), keeping their ids and times; ones
   * already expired, already present, or no longer valid for this model are skipped and returned.
   */
  restore(saved: readonly StoredIntervention[]): { restored: StoredIntervention[]; skipped: { id: string; why: string }[] } {
    const restored: StoredIntervention[] = [];
    const skipped: { id: string; why: string }[] = [];
    for (const s of saved) {
      const expires = s.expiresAt === null ? null : Date.parse(s.expiresAt);
      if (expires !== null && !(expires > this.now())) {
        skipped.push({ id: s.id, why: 'expired' });
        continue;
      }
      if (this.items.has(s.id)) {
        skipped.push({ id: s.id, why: 'already present' });
        continue;
      }
      if (this.items.size >= this.maxLive) {
        skipped.push({ id: s.id, why: `over --max-interventions ${this.maxLive}` });
        continue;
      }
      try {
        const target = s.mode === 'target_entropy';
        const v = this.validate({
          mode: s.mode,
          neuron: target ? null : s.neuron,
          neurons: target ? (s.neurons ?? s.neuron.split(',')) : null,
          value: s.mode === 'mean_ablate' ? null : s.value,
          source: s.source,
          origin: s.origin,
        });
        const iv: StoredIntervention = { ...v, id: s.id, createdAt: s.createdAt, expiresAt: s.expiresAt };
        this.items.set(iv.id, iv);
        if (expires !== null) this.expiry.set(iv.id, expires);
        this.emit('created', iv);
        restored.push(iv);
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
        skipped.push({ id: s.id, why: e.message });
      }
    }
    return { restored, skipped };
  }

  /** Refuses an API change to a file intervention (409): the file is where it is managed. */
  assertApiMayRemove(iv: StoredIntervention): void {
    if (iv.source === 'file')
      throw new ManagedElsewhereError(
        `intervention ${iv.id} is declared in ${iv.origin ?? 'the interventions file'}; edit that file to change or remove it`,
        iv.origin ?? '',
      );
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

  /** The live interventions one request sees: the global ones plus those scoped to it, oldest first. */
  liveFor(requestId?: string): StoredIntervention[] {
    this.pruneExpired();
    return [...this.items.values()].filter((i) => i.requestId === null || i.requestId === requestId);
  }

  /**
   * What applies to one generation step, oldest first (compileInterventions composes them in this
   * order). Confidence targets need per-request state and are left out here: a generation that
   * honours them uses session(), which feeds each token's record to their controllers.
   */
  activeFor(requestId?: string): NeuronIntervention[] {
    const out: NeuronIntervention[] = [];
    for (const i of this.liveFor(requestId)) {
      if (i.mode !== 'target_entropy') out.push({ id: i.id, neuron: i.neuron, mode: i.mode, value: i.value });
    }
    return out;
  }

  /** A generation's view: interventions() before every step, observe(record) after it. */
  session(requestId?: string): InterventionSession {
    return new InterventionSession(() => this.liveFor(requestId));
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
    switch (iv.mode as string) {
      case 'target_entropy':
        throw new Error('compileInterventions: target_entropy reaches the graph as clamps (InterventionSession)');
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

/**
 * Registry options that come from the catalogue and the command line: the watched set (what a
 * target may drive), the default target neurons, and the live cap (--max-interventions).
 */
export function targetOptions(
  watched: { entropy: readonly string[]; frequency: readonly string[] },
  catalogue: { neurons: readonly { address: string; rho?: number }[] } | null,
  maxInterventions: unknown,
): Pick<InterventionRegistryOptions, 'watched' | 'targetNeurons' | 'maxLive'> {
  const rho = new Map((catalogue?.neurons ?? []).map((n) => [n.address, n.rho]));
  let maxLive = DEFAULT_MAX_INTERVENTIONS;
  if (maxInterventions !== undefined && maxInterventions !== null) {
    const n = Number(maxInterventions);
    if (!Number.isSafeInteger(n) || n < 1)
      throw new InvalidInputError(`--max-interventions must be a positive integer, got ${JSON.stringify(maxInterventions)}`, 'max-interventions');
    maxLive = n;
  }
  return {
    watched: [...watched.entropy, ...watched.frequency],
    targetNeurons: defaultTargetNeurons(watched.entropy, (a) => rho.get(a)),
    maxLive,
  };
}
