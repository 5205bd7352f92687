// Signal fidelity of the quantized graphs on every fixture, measured through the sidecar's own
// engine against its float32 graph (which test/graph-fixtures.test.ts holds to the fixtures'
// float64 expected.json): mean |d entropy| over a fixed teacher-forced text within the targets
// (int8 <= 0.02 nats, int4 <= 0.1, fp16 <= 0.005), with the measured numbers printed. And on the
// demo model, the planted neurons stay at the top of the catalogue and pass causal verification
// under every dtype.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { demoModelDir } from '../src/demo/index.ts';
import { openModelSource } from '../src/model/source.ts';
import { analyzeModel } from '../src/monitor/analysis.ts';
import { createEngineFromSource, defaultUnigramFile } from '../src/runtime/index.ts';
import { decodeModel } from '../src/model/onnx/proto.ts';
import { formatFidelity, measureFidelity } from './helpers/quant-fidelity.ts';
import { fixture } from './helpers/shared.ts';

const FIXTURES = ['gpt2-tiny-random', 'aidreams260K', 'makemore-names', 'makemore-anime'];
// int8+last (--quantize-last-layer at int8) is held to the int8 bound: quantizing the monitored
// weights at 8 bits measured within it on every fixture. int4+last has no target (it is the
// documented lossy setting; `npm run bench -- --quant` prints it).
const BOUND: Record<string, number> = { int8: 0.02, int4: 0.1, fp16: 0.005, 'int8+last': 0.02 };
const CORPUS = resolve(import.meta.dirname, 'fixtures/corpus/stories.txt');

/** Op counts of a graph file (to show the quantized graph really is quantized). */
function opCounts(modelPath: string): Map<string, number> {
  const m = decodeModel(readFileSync(modelPath));
  const counts = new Map<string, number>();
  for (const n of m.graph.node) counts.set(n.opType, (counts.get(n.opType) ?? 0) + 1);
  return counts;
}

describe('quantized graphs: signal fidelity against float32', () => {
  for (const name of FIXTURES) {
    it(`${name}: int8 / int4 / fp16 / int8+last within the entropy bounds`, { timeout: 240_000 }, async () => {
      const dir = fixture(name);
      const rows = await measureFidelity(dir, ['int8', 'int4', 'fp16', { dtype: 'int8', quantizeLastLayer: true }]);
      console.log(formatFidelity(name, rows));
      for (const r of rows) {
        expect(r.positions).toBeGreaterThan(8);
        expect(r.entropy.mean, `${name} ${r.label} mean |d entropy|`).toBeLessThanOrEqual(BOUND[r.label]!);
      }
      // Quantization really happened: quantized MatMuls in place of float ones, the last MLP kept.
      const int4 = await openModelSource(dir, { dtype: 'int4' });
      const fp32 = await openModelSource(dir);
      const q = opCounts(int4.modelPath);
      const f = opCounts(fp32.modelPath);
      expect(q.get('MatMulNBits') ?? 0).toBeGreaterThan(0);
      expect((q.get('MatMul') ?? 0) + (q.get('MatMulNBits') ?? 0)).toBe(f.get('MatMul'));
      const info = JSON.parse(readFileSync(join(int4.modelPath, '..', 'build-info.json'), 'utf8'));
      expect(info.dtype).toBe('int4');
      expect(int4.cacheKey).not.toBe(fp32.cacheKey);
    });
  }

  it('demo model: the planted neurons stay at the top of the catalogue and verify causally under int8 and int4', { timeout: 240_000 }, async () => {
    const dir = await demoModelDir('tiny');
    const planted = JSON.parse(readFileSync(join(dir, 'planted.json'), 'utf8')) as { entropy: string[]; frequency: string[] };
    const rows = await measureFidelity(dir, ['int8', 'int4', 'fp16']);
    console.log(formatFidelity('demo-tiny', rows));
    // fp32 is covered by acceptance-monitor.test.ts and fp16 measures ~1e-4 from it (above).
    for (const dtype of ['int8', 'int4'] as const) {
      const source = await openModelSource(dir, { dtype });
      const engine = await createEngineFromSource(source, {});
      try {
        const { catalogue: c } = await analyzeModel(source, engine, {
          corpusFiles: [CORPUS],
          unigramFile: defaultUnigramFile(dir),
          top: 4,
          chunkTokens: 64,
          maxChunks: 2,
          causalPositions: 48,
          randomCount: 4,
          seed: 1,
        });
        expect(c.entropy.slice(0, planted.entropy.length).sort(), dtype).toEqual([...planted.entropy].sort());
        expect(c.frequency.slice(0, planted.frequency.length).sort(), dtype).toEqual([...planted.frequency].sort());
        const fractions = planted.entropy.map((a) => c.neurons[Number(a.split('.')[1])]!.verification!.normMediatedFraction!);
        console.log(`demo-tiny ${dtype}: planted entropy neurons' norm-mediated fractions ${fractions.map((x) => x.toFixed(3)).join(', ')}`);
        for (const x of fractions) expect(x, dtype).toBeGreaterThan(0.8);
      } finally {
        await engine.close();
      }
    }
  });
});
