// Confidence targets: the `target_entropy` intervention mode. A feedback controller per request
// that, before every step, clamps the driven neurons so that the measured next-token entropy moves
// toward the target. The engine calls GenerateRequest.interventions() before each step and hands
// back a token record after it; the controller needs nothing else (no extra forward passes).
//
// How it works (docs/ARCHITECTURE.md, "Confidence targets"):
// - Reference. At the first step it does not act: it reads the driven neurons' natural activations
//   r_i and the entropy from that token's record (or from the request's last record when the target
//   is created mid-request).
// - Control variable. One gain m >= 0 for all driven neurons: neuron i is clamped to m * r_i, so
//   m = 1 reproduces the reference activation, m = 0 silences the neurons, m > 1 amplifies them. A
//   single scalar keeps the neurons' relative pattern (the one the model itself produces) and never
//   flips a neuron's sign, which keeps the entropy on one monotone branch: an entropy neuron's write
//   lands in the unembedding's null space and acts through the final norm's scale, so entropy
//   grows with the magnitude of the activation.
// - Update. After each token: m <- clip(m + KAPPA * (target - H) / g, 0, M_MAX), where g (nats per
//   unit of m) is the slope estimated online from successive (m, H) pairs, smoothed, and bounded
//   to [G_MIN, G_MAX]; a negative or noisy secant is ignored (the context moved, not the knob).
// - Bounds. Activations stay within [0, M_MAX * |r_i|] on the side of r_i's sign (|r_i| is floored
//   at R_FLOOR so a neuron that happened to be silent at the first step can still be driven).
// - Out of reach. The reachable entropies are those between m = 0 and m = M_MAX. A target outside
//   them saturates the controller at the nearest bound: the entropy then stays as close to the
//   target as those bounds allow, and `saturated()` says so (the request goes on unharmed).

import type { StoredIntervention } from './interventions.ts';
import type { NeuronIntervention } from './neurons.ts';
import type { TokenSignals } from './token-record.ts';

/** Largest gain: no driven neuron is pushed beyond ten times its reference magnitude. */
export const M_MAX = 10;
/** Smallest reference magnitude used (activation units). */
export const R_FLOOR = 0.5;
/** Fraction of the computed correction applied per step (damps overshoot from a noisy slope). */
export const KAPPA = 0.5;
/** Initial slope (nats per unit of gain) and its bounds. */
export const G_INIT = 2;
export const G_MIN = 0.1;
export const G_MAX = 20;
/** Weight of a new slope estimate in the running estimate. */
const G_SMOOTHING = 0.3;
/** Gain steps below this are too small to estimate a slope from. */
const MIN_STEP = 0.05;

/**
 * The default neurons a target drives: the catalogued entropy neurons whose rho_k is at least half
 * the largest among them (the ones that clearly write into the null space); all of them when the
 * catalogue has no rho.
 */
export function defaultTargetNeurons(entropy: readonly string[], rhoOf: (address: string) => number | undefined): string[] {
  const rhos = entropy.map((a) => rhoOf(a));
  if (rhos.some((r) => r === undefined || !Number.isFinite(r))) return [...entropy];
  const top = Math.max(...(rhos as number[]));
  return entropy.filter((_, i) => (rhos[i] as number) >= 0.5 * top);
}

function activationOf(t: TokenSignals, neuron: string): number | undefined {
  return t.entropyNeurons[neuron] ?? t.frequencyNeurons[neuron];
}

export class EntropyController {
  private reference: number[] | null = null;
  private gain = 1;
  private slope = G_INIT;
  private last: { gain: number; entropy: number } | null = null;
  private atBound = false;

  constructor(
    readonly id: string,
    readonly target: number,
    readonly neurons: readonly string[],
  ) {}

  /** The clamps for the next step; none until a reference has been read. */
  interventions(): NeuronIntervention[] {
    if (!this.reference) return [];
    return this.neurons.map((neuron, i) => ({
      id: this.id,
      neuron,
      mode: 'clamp' as const,
      value: this.gain * this.reference![i]!,
    }));
  }

  /** Feeds the record of the step just taken (produced under interventions()). */
  observe(t: TokenSignals): void {
    if (!Number.isFinite(t.entropy)) return;
    if (!this.reference) {
      const r = this.neurons.map((n) => activationOf(t, n));
      // A neuron the record does not carry cannot be referenced; the registry refuses those.
      if (r.some((x) => x === undefined || !Number.isFinite(x))) return;
      this.reference = (r as number[]).map((x) => (Math.abs(x) < R_FLOOR ? (x < 0 ? -R_FLOOR : R_FLOOR) : x));
      this.last = { gain: this.gain, entropy: t.entropy };
      this.step(t.entropy);
      return;
    }
    if (this.last && Math.abs(this.gain - this.last.gain) >= MIN_STEP) {
      const g = (t.entropy - this.last.entropy) / (this.gain - this.last.gain);
      if (Number.isFinite(g) && g > 0) {
        const bounded = Math.min(G_MAX, Math.max(G_MIN, g));
        this.slope = (1 - G_SMOOTHING) * this.slope + G_SMOOTHING * bounded;
      }
    }
    this.last = { gain: this.gain, entropy: t.entropy };
    this.step(t.entropy);
  }

  private step(entropy: number): void {
    const next = this.gain + (KAPPA * (this.target - entropy)) / this.slope;
    const clipped = Math.min(M_MAX, Math.max(0, next));
    this.atBound = clipped !== next;
    this.gain = clipped;
  }

  /** True while the target is out of reach (the gain sits at a bound and is still pushed past it). */
  saturated(): boolean {
    return this.atBound;
  }

  /** The current gain m (tests and diagnostics). */
  get currentGain(): number {
    return this.gain;
  }
}

/**
 * One generation's view of the registry: the step's interventions (affine ones as stored, each
 * confidence target as the clamps its controller chose, after the affine ones so a target has the
 * last word on the neurons it drives), and the records that feed the controllers. Controllers live
 * as long as the request and their intervention: per-request state, nothing shared.
 */
export class InterventionSession {
  private readonly controllers = new Map<string, EntropyController>();
  private lastRecord: TokenSignals | null = null;

  constructor(private readonly live: () => StoredIntervention[]) {}

  interventions(): NeuronIntervention[] {
    const out: NeuronIntervention[] = [];
    const targets: NeuronIntervention[] = [];
    const seen = new Set<string>();
    for (const iv of this.live()) {
      if (iv.mode !== 'target_entropy') {
        out.push({ id: iv.id, neuron: iv.neuron, mode: iv.mode, value: iv.value });
        continue;
      }
      seen.add(iv.id);
      let c = this.controllers.get(iv.id);
      if (!c) {
        c = new EntropyController(iv.id, iv.value, iv.neurons ?? iv.neuron.split(','));
        // Created mid-request: the last token's record is the reference, so it acts at once.
        if (this.lastRecord) c.observe(this.lastRecord);
        this.controllers.set(iv.id, c);
      }
      targets.push(...c.interventions());
    }
    for (const id of this.controllers.keys()) if (!seen.has(id)) this.controllers.delete(id);
    return [...out, ...targets];
  }

  observe(t: TokenSignals): void {
    this.lastRecord = t;
    for (const c of this.controllers.values()) c.observe(t);
  }

  /** Whether a confidence target is steering this generation (its engine runs in lockstep then). */
  get feedback(): boolean {
    return this.controllers.size > 0;
  }

  /** The controller of one target (diagnostics, tests). */
  controller(id: string): EntropyController | undefined {
    return this.controllers.get(id);
  }
}
