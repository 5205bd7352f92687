// Parsing numeric command-line flags with errors that name the flag.

import { InvalidInputError } from '../errors.ts';
import { DTYPES, type WeightDtype } from '../model/architectures/weight-emission.ts';

export function numberFlag(
  values: Record<string, unknown>,
  flag: string,
  opts: { min?: number; max?: number; integer?: boolean; exclusiveMin?: boolean } = {},
): number | undefined {
  const raw = values[flag];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  const what = opts.integer ? 'an integer' : 'a number';
  if (String(raw).trim() === '' || !Number.isFinite(v)) throw new InvalidInputError(`--${flag} must be ${what}, got "${raw}"`, flag);
  if (opts.integer && !Number.isInteger(v)) throw new InvalidInputError(`--${flag} must be ${what}, got "${raw}"`, flag);
  if (opts.min !== undefined && (opts.exclusiveMin ? v <= opts.min : v < opts.min)) {
    throw new InvalidInputError(`--${flag} must be ${opts.exclusiveMin ? '>' : '>='} ${opts.min}, got ${v}`, flag);
  }
  if (opts.max !== undefined && v > opts.max) throw new InvalidInputError(`--${flag} must be <= ${opts.max}, got ${v}`, flag);
  return v;
}

export function requiredString(values: Record<string, unknown>, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string' || v === '') throw new InvalidInputError(`--${flag} is required`, flag);
  return v;
}

/** --dtype: the MatMul weight dtype of graphs built from checkpoints (exports keep their own). */
export function dtypeFlag(values: Record<string, unknown>): WeightDtype {
  const d = (values.dtype as string | undefined) ?? 'fp32';
  if (!(DTYPES as readonly string[]).includes(d)) throw new InvalidInputError(`--dtype must be ${DTYPES.join(', ')}, got "${d}"`, 'dtype');
  return d as WeightDtype;
}

export function deviceFlag(values: Record<string, unknown>): 'cpu' | 'cuda' | 'auto' {
  const d = (values.device as string | undefined) ?? 'cpu';
  if (d !== 'cpu' && d !== 'cuda' && d !== 'auto') throw new InvalidInputError(`--device must be cpu, cuda or auto, got "${d}"`, 'device');
  return d;
}
