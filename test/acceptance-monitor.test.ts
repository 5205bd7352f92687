// The monitor's science end to end, through the same code `analyze` and `generate` run:
// the demo model's planted neurons are found by weights alone and verified causally, clamping a
// planted entropy neuron moves the entropy of greedy text, and the pipeline runs on a real model.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { demoModelDir } from '../src/demo/index.ts';
import { openModelSource, type ModelSource } from '../src/model/source.ts';
import { createEngineFromSource, defaultUnigramFile } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import { analyzeModel, type AnalyzeResult } from '../src/monitor/analysis.ts';
import { formatCatalogueTable } from '../src/monitor/catalogue.ts';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { fixture } from './helpers/shared.ts';
import { greedyParams } from './helpers/sampling.ts';

const CORPUS = resolve(import.meta.dirname, 'fixtures/corpus/stories.txt');
const index = (address: string) => Number(address.split('.')[1]);

async function analyze(source: ModelSource, engine: OnnxEngine, unigramFile?: string): Promise<AnalyzeResult> {
  return analyzeModel(source, engine, {
    corpusFiles: [CORPUS],
    unigramFile,
    top: 4,
    chunkTokens: 64,
    maxChunks: 8,
    causalPositions: 96,
    randomCount: 16,
    seed: 1,
  });
}

describe('demo model: planted neurons', () => {
  let source: ModelSource;
  let engine: OnnxEngine;
  let planted: { entropy: string[]; frequency: string[] };
  let result: AnalyzeResult;
  beforeAll(async () => {
    const dir = await demoModelDir('tiny');
    planted = JSON.parse(readFileSync(join(dir, 'planted.json'), 'utf8'));
    source = await openModelSource(dir);
    engine = await createEngineFromSource(source, {});
    result = await analyze(source, engine, defaultUnigramFile(dir));
  });
  afterAll(async () => engine?.close());

  it('weights alone rank the planted entropy neurons top by rho_k and the frequency ones top by |score|', () => {
    const c = result.catalogue;
    expect(c.k).toBe(Math.max(1, Math.round(source.spec.dModel / 64)));
    expect(c.entropy.slice(0, planted.entropy.length).sort()).toEqual([...planted.entropy].sort());
    expect(c.frequency.slice(0, planted.frequency.length).sort()).toEqual([...planted.frequency].sort());
  });

  it('causal verification: planted entropy neurons act through the final norm, random neurons do not', () => {
    const c = result.catalogue;
    for (const a of planted.entropy) {
      const v = c.neurons[index(a)]!.verification!;
      expect(v.normMediatedFraction).not.toBeNull();
      expect(v.normMediatedFraction!).toBeGreaterThan(0.8);
    }
    expect(result.baselineMedianFraction).not.toBeNull();
    expect(result.baselineMedianFraction!).toBeLessThan(0.3);
    console.log(formatCatalogueTable(c));
    console.log(`random baseline median norm-mediated fraction: ${result.baselineMedianFraction!.toFixed(3)}`);
  });

  it('clamping a planted entropy neuron high raises the entropy of 50 greedy tokens; clamping it low lowers it', async () => {
    const params = greedyParams(50);
    const registry = new InterventionRegistry({ lastLayer: source.spec.nLayers - 1, dMlp: source.spec.dMlp });
    const meanEntropy = async (value: number | null) => {
      registry.clear();
      if (value !== null) registry.add({ neuron: planted.entropy[0]!, mode: 'clamp', value });
      const it = engine.generate({ promptIds: engine.encode('The weather today is'), params, interventions: () => registry.activeFor() });
      const hs: number[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) hs.push(r.value.entropy);
      expect(hs).toHaveLength(50);
      return hs.reduce((a, b) => a + b, 0) / hs.length;
    };
    const baseline = await meanEntropy(null);
    const high = await meanEntropy(20);
    const low = await meanEntropy(0);
    console.log(`mean entropy over 50 greedy tokens: baseline ${baseline.toFixed(3)}, clamp 20 ${high.toFixed(3)}, clamp 0 ${low.toFixed(3)}`);
    expect(high).toBeGreaterThan(baseline + 1);
    expect(low).toBeLessThan(baseline);
  });
});

describe('aidreams260K (a real trained model): analyze end to end', () => {
  let source: ModelSource;
  let engine: OnnxEngine;
  let result: AnalyzeResult;
  beforeAll(async () => {
    source = await openModelSource(fixture('aidreams260K'));
    engine = await createEngineFromSource(source, {});
    result = await analyze(source, engine);
  });
  afterAll(async () => engine?.close());

  it('names candidates with causal figures, and measures how much of the top-rho neuron acts through the norm', () => {
    const c = result.catalogue;
    expect(result.unigramSource).toBe('corpus');
    expect(c.corpus!.tokens).toBeGreaterThan(100);
    expect(c.entropy).toHaveLength(4);
    const table = formatCatalogueTable(c);
    for (const a of [...c.entropy, ...c.frequency]) {
      expect(table).toContain(a);
      expect(c.neurons[index(a)]!.verification).toBeDefined();
    }
    const topRho = [...c.neurons].sort((a, b) => b.rho - a.rho)[0]!;
    expect(c.entropy[0]).toBe(topRho.address);
    const v = topRho.verification!;
    expect(Number.isFinite(v.total.meanAbsDeltaLoss)).toBe(true);
    // Whatever the answer, it is measured: print it beside the random baseline.
    console.log(table);
    console.log(
      `aidreams260K ${topRho.address} (rho ${topRho.rho.toFixed(3)}): norm-mediated fraction ` +
        `${v.normMediatedFraction === null ? 'n/a' : v.normMediatedFraction.toFixed(3)} ` +
        `(TE |dloss| ${v.total.meanAbsDeltaLoss.toExponential(2)}, DE ${v.direct.meanAbsDeltaLoss.toExponential(2)}); ` +
        `random baseline median ${result.baselineMedianFraction?.toFixed(3)} over ${c.baseline?.count} neurons`,
    );
    expect(result.baselineMedianFraction).not.toBeNull();
    expect(c.baseline!.count).toBe(16);
  });
});
