// Signal fidelity of a quantized graph against the float32 graph of the same checkpoint, measured
// through the engine the sidecar runs (worker, signals): per-token entropy, final-norm scale and
// the catalogued neurons' activations over a fixed teacher-forced sequence, and greedy agreement.
// Shared by test/quant-fidelity.test.ts (which asserts bounds) and bench/quant.ts (which prints).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WeightDtype } from '../../src/model/architectures/weight-emission.ts';
import { openModelSource } from '../../src/model/source.ts';
import { loadCatalogueFor } from '../../src/monitor/catalogue-loader.ts';
import { createEngineFromSource } from '../../src/runtime/index.ts';
import type { OnnxEngine } from '../../src/runtime/engine.ts';
import type { ScoredPosition } from '../../src/runtime/types.ts';
import { greedyParams } from './sampling.ts';

export interface Diff {
  mean: number;
  max: number;
}

/** A graph variant: a dtype, and whether the monitored weights (last MLP, unembedding) are quantized too. */
export interface Variant {
  dtype: WeightDtype;
  quantizeLastLayer?: boolean;
}

/** `int4` or `int4+last` (the flag `--quantize-last-layer`). */
export function parseVariant(text: string): Variant {
  const [dtype, last, ...rest] = text.split('+');
  if (!['fp32', 'fp16', 'int8', 'int4'].includes(dtype!) || (last !== undefined && last !== 'last') || rest.length)
    throw new Error(`"${text}": expected fp32, fp16, int8 or int4, optionally followed by +last`);
  return { dtype: dtype as WeightDtype, quantizeLastLayer: last === 'last' };
}

export function variantLabel(v: Variant): string {
  return v.quantizeLastLayer ? `${v.dtype}+last` : v.dtype;
}

export interface Fidelity {
  dtype: WeightDtype;
  /** The variant's label (`int4+last` when the monitored weights were quantized too). */
  label: string;
  positions: number;
  entropy: Diff;
  normScale: Diff;
  /** Over every catalogued (entropy + frequency) neuron at every position. */
  neurons: Diff;
  neuronCount: number;
  /** Greedy tokens equal at the same position / tokens generated. */
  greedyAgreement: number;
  /** Tokens generated before the first disagreement. */
  greedyPrefix: number;
  greedyTokens: number;
}

const CORPUS = new URL('../fixtures/corpus/stories.txt', import.meta.url).pathname;

/**
 * The fixed teacher-forced sequence: the start of the stories corpus, or, for character models
 * whose vocabulary cannot spell it (makemore), the float32 model's own greedy text from
 * expected.json. Clipped to the model's context.
 */
export function fidelityIds(engine: OnnxEngine, dir: string, maxTokens = 128): number[] {
  const limit = Math.min(maxTokens, engine.spec.maxPositions);
  if (engine.spec.vocabSize >= 256) return engine.encode(readFileSync(CORPUS, 'utf8').slice(0, 2000)).slice(0, limit);
  const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as { greedy_ids: number[] };
  return expected.greedy_ids.slice(0, limit);
}

function diff(a: number[], b: number[]): Diff {
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    sum += d;
    max = Math.max(max, d);
  }
  return { mean: a.length ? sum / a.length : 0, max };
}

function neuronValues(p: ScoredPosition[]): number[] {
  return p.flatMap((s) => [...Object.values(s.entropyNeurons), ...Object.values(s.frequencyNeurons)]);
}

async function greedy(engine: OnnxEngine, prompt: number[], n: number): Promise<number[]> {
  const out: number[] = [];
  const params = greedyParams(n);
  for await (const t of engine.generate({ promptIds: prompt, params })) out.push(t.tokenId);
  return out;
}

interface Run {
  scored: ScoredPosition[];
  greedy: number[];
}

async function runVariant(dir: string, v: Variant, cacheDir?: string): Promise<{ run: Run; engine: OnnxEngine }> {
  const source = await openModelSource(dir, { dtype: v.dtype, quantizeLastLayer: v.quantizeLastLayer, cacheDir });
  const catalogue = await loadCatalogueFor(source, {});
  const engine = await createEngineFromSource(source, {
    watched: { entropy: catalogue.entropy, frequency: catalogue.frequency },
  });
  const ids = fidelityIds(engine, dir);
  const scored = await engine.score(ids);
  const prompt = ids.slice(0, 4);
  const n = Math.min(64, engine.spec.maxPositions - prompt.length);
  return { run: { scored, greedy: await greedy(engine, prompt, n) }, engine };
}

/** Measures each dtype (or variant) against float32 on the checkpoint in `dir`. */
export async function measureFidelity(
  dir: string,
  variants: (WeightDtype | Variant)[],
  cacheDir?: string,
): Promise<Fidelity[]> {
  const base = await runVariant(dir, { dtype: 'fp32' }, cacheDir);
  await base.engine.close();
  const results: Fidelity[] = [];
  for (const given of variants) {
    const variant = typeof given === 'string' ? { dtype: given } : given;
    const { run, engine } = await runVariant(dir, variant, cacheDir);
    await engine.close();
    const a = base.run;
    const agree = run.greedy.filter((t, i) => t === a.greedy[i]).length;
    const firstDiff = run.greedy.findIndex((t, i) => t !== a.greedy[i]);
    const neuronsA = neuronValues(a.scored);
    results.push({
      dtype: variant.dtype,
      label: variantLabel(variant),
      positions: a.scored.length,
      entropy: diff(a.scored.map((s) => s.entropy), run.scored.map((s) => s.entropy)),
      normScale: diff(a.scored.map((s) => s.normScale), run.scored.map((s) => s.normScale)),
      neurons: diff(neuronsA, neuronValues(run.scored)),
      neuronCount: neuronsA.length / a.scored.length,
      greedyAgreement: run.greedy.length ? agree / run.greedy.length : 1,
      greedyPrefix: firstDiff === -1 ? run.greedy.length : firstDiff,
      greedyTokens: run.greedy.length,
    });
  }
  return results;
}

export function formatFidelity(model: string, rows: Fidelity[]): string {
  const f = (x: number) => x.toFixed(4);
  const lines = [
    `${model}: |d| vs fp32 over ${rows[0]?.positions ?? 0} teacher-forced positions (mean / max), greedy agreement`,
    '  dtype      entropy (nats)     norm scale         catalogued neurons   greedy (same / prefix / n)',
  ];
  for (const r of rows) {
    lines.push(
      `  ${r.label.padEnd(9)}  ${f(r.entropy.mean)} / ${f(r.entropy.max)}  ${f(r.normScale.mean)} / ${f(r.normScale.max)}` +
        `  ${f(r.neurons.mean)} / ${f(r.neurons.max)} (${r.neuronCount})` +
        `   ${(100 * r.greedyAgreement).toFixed(0)}% / ${r.greedyPrefix} / ${r.greedyTokens}`,
    );
  }
  return lines.join('\n');
}
