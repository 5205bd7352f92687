// `demo-model`: writes the built-in demo model and names its planted neurons, so the addresses a
// user tries in --intervene or the interventions API exist in it.

import { resolve } from 'node:path';
import { writeDemoModel, DEMO_SIZES, type DemoSize } from '../demo/index.ts';
import { requiredString } from './options.ts';
import type { CommandSpec, Flag } from './flags.ts';

export const DEMO_MODEL_FLAGS: Flag[] = [
  { name: 'out', type: 'path', arg: 'DIR', required: true, help: 'folder to write the model into' },
  { name: 'size', type: 'choice', choices: DEMO_SIZES, default: 'tiny', help: 'model size' },
];

export const demoModelCommand: CommandSpec = {
  name: 'demo-model',
  summary: 'write the built-in demo model (GPT-2 tokenizer, planted entropy and frequency neurons)',
  flags: DEMO_MODEL_FLAGS,
  examples: [
    'confidence-sidecar demo-model --out ./demo',
    'confidence-sidecar demo-model --out ./demo-small --size small',
  ],
  run: (values) => runDemoModel(values),
};

export async function runDemoModel(values: Record<string, unknown>): Promise<void> {
  const out = resolve(requiredString(values, 'out'));
  const size = values.size as DemoSize;
  const info = await writeDemoModel(out, size);
  const address = (i: number) => `${info.planted.layer}.${i}`;
  process.stderr.write(
    `wrote the ${size} demo model to ${out}\n` +
      `planted entropy neurons: ${info.planted.entropy.map(address).join(', ')}\n` +
      `planted token-frequency neurons: ${info.planted.frequency.map(address).join(', ')}\n` +
      `try: confidence-sidecar generate --model ${out} --prompt "Hello" --intervene ${address(info.planted.entropy[0]!)}=clamp:10\n`,
  );
}
