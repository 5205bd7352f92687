import { resolve } from 'node:path';
import { InvalidInputError } from '../errors.ts';
import { writeDemoModel, type DemoSize } from '../demo/index.ts';
import { requiredString } from './options.ts';

const SIZES: DemoSize[] = ['tiny', 'small', 'gpt2-small'];

export async function runDemoModel(values: Record<string, unknown>): Promise<void> {
  const out = resolve(requiredString(values, 'out'));
  const size = values.size as DemoSize;
  if (!SIZES.includes(size)) throw new InvalidInputError(`--size must be one of ${SIZES.join(', ')}, got "${size}"`, 'size');
  await writeDemoModel(out, size);
  process.stderr.write(`wrote the ${size} demo model to ${out}\n`);
}
