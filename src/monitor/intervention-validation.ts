// Validation of one intervention against the model (last layer, width, calibration means, the
// watched set) into its stored form: shared by the API, request lists, the interventions file and
// restore from the state directory, so every way in refuses the same things with the same words.

import { randomUUID } from 'node:crypto';
import { InvalidInputError } from '../errors.ts';
import { formatNeuronAddress, INTERVENTION_MODES, isInterventionMode as isMode, parseNeuronAddress, type AffineMode } from './neurons.ts';
import type { AddInterventionInput, InterventionRegistryOptions, StoredIntervention } from './interventions.ts';

export function validateIntervention(
input: AddInterventionInput,
opts: InterventionRegistryOptions,
now: number,
): StoredIntervention {
  if (!isMode(input.mode)) {
    throw new InvalidInputError(
      `mode must be one of ${INTERVENTION_MODES.join(', ')}, got ${JSON.stringify(input.mode)}`,
      'mode',
    );
  }
  const mode = input.mode;
  let neurons: string[];
  let value: number;
  if (mode === 'target_entropy') {
    if (input.neuron !== undefined && input.neuron !== null)
      throw new InvalidInputError('target_entropy takes `neurons` (a list), not `neuron`', 'neuron');
    neurons = targetSet(opts, input.neurons);
    if (typeof input.value !== 'number' || !Number.isFinite(input.value) || input.value < 0)
      throw new InvalidInputError(`target_entropy needs a target entropy >= 0 in nats, got ${JSON.stringify(input.value)}`, 'value');
    value = input.value;
  } else {
    if (input.neurons !== undefined && input.neurons !== null)
      throw new InvalidInputError(`${mode} acts on one neuron: give \`neuron\`, not \`neurons\``, 'neurons');
    const index = neuronIndex(opts, input.neuron, 'neuron');
    neurons = [formatNeuronAddress(opts.lastLayer, index)];
    value = resolveValue(opts, mode, input.value, index, neurons[0]!);
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
  const created = now;
  const expires = ttl === null ? null : created + ttl * 1000;
  return {
    id: `iv_${randomUUID()}`,
    neuron: neurons.join(','),
    neurons,
    mode,
    value,
    createdAt: new Date(created).toISOString(),
    expiresAt: expires === null ? null : new Date(expires).toISOString(),
    requestId,
    source: input.source ?? 'api',
    origin: input.origin ?? null,
  };
}

function neuronIndex(opts: InterventionRegistryOptions, neuron: unknown, param: string): number {
  const { lastLayer, dMlp } = opts;
  const address = typeof neuron === 'string' ? parseNeuronAddress(neuron) : null;
  if (!address)
    throw new InvalidInputError(
      `${param} must be a LAYER.INDEX address like "${lastLayer}.0", got ${JSON.stringify(neuron)}`,
      param,
    );
  if (address.layer !== lastLayer) {
    throw new InvalidInputError(
      `neuron ${neuron as string}: only the last MLP layer (${lastLayer}) is instrumented; use ${lastLayer}.INDEX`,
      param,
    );
  }
  if (address.index >= dMlp) {
    throw new InvalidInputError(`neuron ${neuron as string}: index must be below ${dMlp} (the layer's width)`, param);
  }
  return address.index;
}

function resolveValue(opts: InterventionRegistryOptions, mode: AffineMode, raw: unknown, index: number, neuron: string): number {
  if (mode === 'mean_ablate') {
    if (raw !== undefined && raw !== null) {
      throw new InvalidInputError('mean_ablate takes no value: it uses the calibration mean', 'value');
    }
    const mean = opts.calibrationMean?.(index);
    if (mean === undefined || !Number.isFinite(mean)) {
      throw new InvalidInputError(
        `mean_ablate on ${neuron} needs a calibration mean; build a calibrated catalogue first or use clamp`,
        'mode',
      );
    }
    return mean;
  }
  if (typeof raw !== 'number' || !Number.isFinite(raw)) {
    throw new InvalidInputError(`${mode} needs a finite numeric value, got ${JSON.stringify(raw)}`, 'value');
  }
  return raw;
}

/** The neurons a target drives: the given ones (watched, deduplicated) or the default set. */
function targetSet(opts: InterventionRegistryOptions, given: unknown): string[] {
  const watched = new Set(opts.watched ?? []);
  if (given === undefined || given === null) {
    const set = [...(opts.targetNeurons ?? [])];
    if (set.length === 0)
      throw new InvalidInputError('target_entropy: the catalogue names no entropy neurons here; give `neurons`', 'neurons');
    return set;
  }
  if (!Array.isArray(given) || given.length === 0)
    throw new InvalidInputError('neurons must be a non-empty list of LAYER.INDEX addresses', 'neurons');
  const out = [...new Set(given.map((n, i) => formatNeuronAddress(opts.lastLayer, neuronIndex(opts, n, `neurons[${i}]`))))];
  const unwatched = out.filter((n) => !watched.has(n));
  if (unwatched.length > 0)
    throw new InvalidInputError(
      `target_entropy can drive only watched neurons (their activations are measured every token); not watched: ${unwatched.join(', ')}`,
      'neurons',
    );
  return out;
}

