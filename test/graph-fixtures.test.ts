// Graphs built from the shared real checkpoints (../shared/models), checked against the float64
// values in their expected.json: per-position entropy, final norm scale, last-layer activations
// and greedy next tokens.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { lastLayerWeightsFromCheckpoint } from '../src/model/checkpoint.ts';
import { prepareCheckpointGraph } from '../src/model/graph-cache.ts';
import { fixture } from './helpers/shared.ts';
import { GraphRunner, maxAbsDiff } from './reference/run-graph.ts';

interface Expected {
  prompt_ids: number[];
  greedy_ids?: number[];
  greedy_next?: number[];
  entropy: number[];
  final_norm_scale: number[];
  last_layer: number;
  last_mlp_act: number[][];
  weight_metrics?: { norm: number[] };
}

const cacheDir = mkdtempSync(join(tmpdir(), 'cs-fixture-cache-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

/** Entropy in nats of softmax(row), accumulated in float64. */
function entropy(row: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]!);
  let z = 0;
  for (let i = 0; i < row.length; i++) z += Math.exp(row[i]! - max);
  let h = 0;
  for (let i = 0; i < row.length; i++) {
    const logp = row[i]! - max - Math.log(z);
    h -= Math.exp(logp) * logp;
  }
  return h;
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

describe.each(['gpt2-tiny-random', 'aidreams260K'])('fixture %s', (name) => {
  const dir = fixture(name);
  const expected: Expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  // aidreams' expected values cover the whole greedy continuation; gpt2's cover the prompt.
  const ids = expected.greedy_ids ?? expected.prompt_ids;

  it('matches expected.json: entropy, final_norm_scale, last_mlp_act and greedy tokens', async () => {
    const { modelPath, spec } = await prepareCheckpointGraph(dir, { instrument: true, cacheDir });
    expect(spec.nLayers - 1).toBe(expected.last_layer);
    const runner = await GraphRunner.open(modelPath, spec);
    try {
      const r = await runner.run({ ids: [ids] });
      const V = spec.vocabSize;
      const rows = ids.map((_, t) => r.logits.subarray(t * V, (t + 1) * V));
      expect(maxAbsDiff(rows.map(entropy), expected.entropy)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(r.finalNormScale!, expected.final_norm_scale)).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(r.mlpAct!, expected.last_mlp_act.flat())).toBeLessThanOrEqual(1e-4);
      const greedy = rows.map(argmax);
      if (expected.greedy_next) {
        expect(greedy).toEqual(expected.greedy_next);
      } else {
        // Every generated token is the argmax at the position before it.
        const firstGenerated = expected.prompt_ids.length;
        expect(greedy.slice(firstGenerated - 1, -1)).toEqual(ids.slice(firstGenerated));
      }
    } finally {
      await runner.close();
    }
  });

  it('KV-cache greedy decoding from the prompt reproduces the same tokens', async () => {
    const { modelPath, spec } = await prepareCheckpointGraph(dir, { instrument: false, cacheDir });
    const runner = await GraphRunner.open(modelPath, spec);
    try {
      const prompt = expected.prompt_ids;
      const target = expected.greedy_ids ?? [...prompt, expected.greedy_next!.at(-1)!];
      let r = await runner.run({ ids: [prompt], keep: 1 });
      const generated = [...prompt];
      while (generated.length < target.length) {
        generated.push(argmax(r.logits));
        r = await runner.run({ ids: [[generated.at(-1)!]], past: r.present, keep: 1 });
      }
      expect(generated).toEqual(target);
    } finally {
      await runner.close();
    }
  });
});

describe('lastLayerWeightsFromCheckpoint on aidreams260K', () => {
  it('w_out rows have the norms listed in expected.json (RMSNorm model: w_out is not centered)', () => {
    const dir = fixture('aidreams260K');
    const expected: Expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const w = lastLayerWeightsFromCheckpoint(dir);
    expect([w.dModel, w.dMlp, w.vocabSize, w.layer]).toEqual([64, 172, 512, 3]);
    const norms = Array.from({ length: w.dMlp }, (_, i) =>
      Math.hypot(...w.wOut.subarray(i * w.dModel, (i + 1) * w.dModel)),
    );
    expect(maxAbsDiff(norms, expected.weight_metrics!.norm)).toBeLessThanOrEqual(1e-5);
    expect(w.finalNormBias).toBeNull();
    expect(w.normType).toBe('rmsnorm');
  });
});
