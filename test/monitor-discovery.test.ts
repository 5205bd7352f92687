// Neuron discovery on a rank-deficient unembedding (issue 14): a neuron planted in the exact null
// space of makemore-names (vocabulary 27 < d_model 64) is found first by `analyze` with its default
// flags whether its norm is ordinary or 8x, clamping it through the engine's intervention path moves
// the entropy, and the causal screen puts more than 90% of that through the final norm.
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModelSource, type ModelSource } from '../src/model/source.ts';
import { SafetensorsCheckpoint } from '../src/model/safetensors.ts';
import { createEngineFromSource } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import { causalEffects } from '../src/monitor/causal.ts';
import { readCatalogue, type Catalogue } from '../src/monitor/catalogue.ts';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { computeWeightMetrics } from '../src/monitor/weight-metrics.ts';
import {
  NAMES_CORPUS,
  NAMES_LAYER,
  namesReadableBasis,
  nullShare,
  plantNamesNeuron,
  type PlantedNames,
} from './helpers/planted-names.ts';

const run = promisify(execFile);
const CLI = resolve(import.meta.dirname, '../bin/confidence-sidecar.js');
const work = mkdtempSync(join(tmpdir(), 'monitor-discovery-'));
const corpus = join(work, 'names.txt');
writeFileSync(corpus, NAMES_CORPUS);
const NEURON = 100;

/** `analyze` as a user runs it: the CLI with its default flags, a corpus and --out. */
async function analyzeCli(dir: string, name: string): Promise<{ catalogue: Catalogue; stdout: string }> {
  const out = join(work, `${name}.json`);
  const { stdout } = await run(
    process.execPath,
    [CLI, 'analyze', '--model', dir, '--corpus', corpus, '--out', out],
    {
      env: process.env,
      maxBuffer: 16 << 20,
    },
  );
  return { catalogue: readCatalogue(out), stdout };
}

describe.each([
  ['the same norm as its neighbours', 1],
  ['8x the norm of its neighbours', 8],
])('makemore-names with a neuron planted in the exact null space, %s', (_label, factor) => {
  let planted: PlantedNames;
  let catalogue: Catalogue;
  let stdout: string;
  let source: ModelSource;
  let engine: OnnxEngine;
  beforeAll(async () => {
    planted = plantNamesNeuron(NEURON, factor);
    ({ catalogue, stdout } = await analyzeCli(planted.dir, `x${factor}`));
    source = await openModelSource(planted.dir);
    engine = await createEngineFromSource(source, {});
  }, 240_000);
  afterAll(async () => engine?.close());

  it('the planted w_out is fully dark by the independent null space, and rho says so', () => {
    const ckpt = SafetensorsCheckpoint.openDir(planted.dir);
    const w = ckpt
      .float32(`transformer.h.${NAMES_LAYER}.mlp.c_proj.weight`)
      .subarray(NEURON * 64, NEURON * 64 + 64);
    expect(nullShare(namesReadableBasis(ckpt), w)).toBeGreaterThan(1 - 1e-9);
    const n = catalogue.neurons[NEURON]!;
    expect(n.rho).toBeGreaterThan(1 - 1e-5);
    expect(n.norm / planted.norm).toBeCloseTo(1, 5);
  });

  it('analyze with default flags ranks it first and records rank, nullity, k and the ranking rule', () => {
    expect(catalogue.entropy[0]).toBe(`${NAMES_LAYER}.${NEURON}`);
    expect(catalogue).toMatchObject({ k: 1, rank: 26, nullity: 37, darkDim: 37 });
    expect(catalogue.entropyRanking).toMatch(/pareto/);
    // The 128-token default chunk was cut to the 16-position context, BOS included.
    expect(catalogue.corpus!.description).toMatch(/<= 15 tokens/);
    expect(stdout).toContain('rank 26, exact null space 37');
    expect(stdout).toMatch(/\| rho +\| norm +\|/);
  });

  it('clamping it in the engine moves the entropy, the closed form agrees, and > 90% goes through the norm', async () => {
    const screened = catalogue.screen!.verified.find((v) => v.index === NEURON)!;
    expect(screened).toBeDefined();
    expect(screened.normMediatedShare!).toBeGreaterThan(0.9);
    const clampTo = catalogue.screen!.clampTo[NEURON]!;
    expect(clampTo).toBe(screened.clampTo);

    // The same clamp through the engine (the path of generate/score --intervene), teacher-forced
    // on names the calibration saw, against its own closed-form prediction on the same positions.
    const registry = new InterventionRegistry({ lastLayer: NAMES_LAYER, dMlp: source.spec.dMlp });
    registry.add({ neuron: `${NAMES_LAYER}.${NEURON}`, mode: 'clamp', value: clampTo });
    const names = ['emma', 'olivia', 'sophia', 'charlotte', 'benjamin', 'alexander', 'grayson', 'lincoln'];
    let moved = 0;
    let count = 0;
    const residuals: number[] = [];
    const acts: number[] = [];
    const next: number[] = [];
    const engineDelta: number[] = [];
    for (const name of names) {
      const ids = [0, ...engine.encode(name, { addSpecialTokens: false }), 0];
      const clean = await engine.score(ids);
      const clamped = await engine.score(ids, { interventions: registry.activeFor() });
      const raw = await engine.activationsAndResiduals(ids);
      for (let p = 0; p + 1 < ids.length; p++) {
        moved += clamped[p]!.entropy - clean[p]!.entropy;
        engineDelta.push(clamped[p]!.entropy - clean[p]!.entropy);
        count++;
        next.push(ids[p + 1]!);
        acts.push(raw.mlpAct[p * source.spec.dMlp + NEURON]!);
        for (let k = 0; k < 64; k++) residuals.push(raw.residual[p * 64 + k]!);
      }
    }
    const meanMove = moved / count;
    const effect = causalEffects({ weights: source.lastLayerWeights(), residuals, nextIds: next }, [
      { index: NEURON, ablateTo: clampTo, activations: acts },
    ])[0]!;
    console.log(
      `x${factor}: clamp ${clampTo.toFixed(3)} moves mean entropy by ${meanMove.toFixed(5)} nats over ${count} ` +
        `positions (closed form TE ${effect.total.meanDeltaEntropy.toFixed(5)}, DE ${effect.direct.meanDeltaEntropy.toExponential(2)}); ` +
        `screen on analyze's positions: TE ${screened.totalDeltaEntropy.toFixed(5)}, share ${screened.normMediatedShare!.toFixed(4)}; ` +
        `found causally: ${catalogue.screen!.found.join(', ')}`,
    );
    expect(Math.abs(meanMove)).toBeGreaterThan(1e-3);
    expect(Math.abs(effect.total.meanDeltaEntropy - meanMove)).toBeLessThan(1e-4 + 1e-3 * Math.abs(meanMove));
    const norm = effect.total.meanDeltaEntropy - effect.direct.meanDeltaEntropy;
    expect(Math.abs(norm) / (Math.abs(norm) + Math.abs(effect.direct.meanDeltaEntropy))).toBeGreaterThan(0.9);
    // Sign agrees between the screen (analyze's positions) and the engine (these positions).
    expect(Math.sign(screened.totalDeltaEntropy)).toBe(Math.sign(meanMove));
  });

  it('weight metrics through the production loader agree with the catalogue', () => {
    const m = computeWeightMetrics(source.lastLayerWeights());
    expect(m.neurons[NEURON]!.rho).toBeCloseTo(catalogue.neurons[NEURON]!.rho, 9);
  });
});
