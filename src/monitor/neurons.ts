// The neuron vocabulary: one module owns how a last-layer neuron is named (`LAYER.INDEX`), which
// roles the catalogue gives neurons, and which intervention modes exist. Every parser, formatter
// and validator elsewhere calls this one.

/** A neuron of an MLP layer, addressed as `LAYER.INDEX` (TransformerLens: blocks.LAYER.mlp.hook_post[INDEX]). */
export interface NeuronAddress {
  layer: number;
  index: number;
}

/** Strict: decimal integers without leading zeros (except `0` itself), one dot. */
const ADDRESS = /^(0|[1-9]\d*)\.(0|[1-9]\d*)$/;

/** Splits a `LAYER.INDEX` address; null when it is not canonical (`"11."`, `"11.05"`, `" 1.2"`). */
export function parseNeuronAddress(address: string): NeuronAddress | null {
  const m = ADDRESS.exec(address);
  if (!m) return null;
  const layer = Number(m[1]);
  const index = Number(m[2]);
  return Number.isSafeInteger(layer) && Number.isSafeInteger(index) ? { layer, index } : null;
}

/** The canonical text of an address. */
export function formatNeuronAddress(layer: number, index: number): string {
  return `${layer}.${index}`;
}

/** The neuron index of a canonical address; throws on a malformed one (a programming error). */
export function neuronIndexOf(address: string): number {
  const a = parseNeuronAddress(address);
  if (!a) throw new Error(`not a LAYER.INDEX neuron address: ${JSON.stringify(address)}`);
  return a.index;
}

/** Roles the catalogue assigns (REFERENCE.md: entropy neurons, token-frequency neurons). */
export const NEURON_ROLES = ['entropy', 'frequency'] as const;
export type NeuronRole = (typeof NEURON_ROLES)[number];

/** Modes the graph applies directly, as a' = a * scale + shift (compileInterventions). */
export const AFFINE_MODES = ['clamp', 'scale', 'add', 'mean_ablate'] as const;
export type AffineMode = (typeof AFFINE_MODES)[number];

/**
 * Every mode the API accepts: the affine ones, and target_entropy (a controller that sets neurons'
 * activations each step to move the entropy toward a target; monitor/entropy-target.ts).
 */
export const INTERVENTION_MODES = [...AFFINE_MODES, 'target_entropy'] as const;
export type InterventionMode = (typeof INTERVENTION_MODES)[number];

export function isInterventionMode(mode: unknown): mode is InterventionMode {
  return typeof mode === 'string' && (INTERVENTION_MODES as readonly string[]).includes(mode);
}

/**
 * One change to a last-layer neuron for one step, resolved to a value (mean_ablate: the calibration
 * mean; target_entropy: the clamp its controller chose for this step).
 */
export interface NeuronIntervention {
  id: string;
  /** Canonical `LAYER.INDEX` address. */
  neuron: string;
  mode: AffineMode;
  /** clamp: the value; scale: the factor; add: the delta; mean_ablate: the calibration mean. */
  value: number;
}

/**
 * The watched set: the last-layer neurons whose activations every per-token record carries, by role.
 * (The catalogue says which neurons have which role; the watched set is what the runtime reports.)
 */
export interface WatchedNeurons {
  entropy: string[];
  frequency: string[];
}

/** Last-layer indices of the watched set, deduplicated, in first-seen order (entropy first). */
export function watchedIndices(w: WatchedNeurons): number[] {
  return [...new Set([...w.entropy, ...w.frequency].map(neuronIndexOf))];
}
