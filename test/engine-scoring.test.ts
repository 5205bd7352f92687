// Teacher-forced scoring sessions (proxy mode's shadow scorer): scoring the tokens a generation
// produced, fed in uneven runs, gives each token the record generation gave it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from './helpers/shared.ts';
import { createEngine } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import type { GeneratedToken } from '../src/runtime/types.ts';
import { loadCatalogueFor } from '../src/monitor/catalogue-loader.ts';
import { openModelSource } from '../src/model/source.ts';
import { greedyParams } from './helpers/sampling.ts';

for (const name of ['aidreams260K', 'gpt2-tiny-random-onnx']) {
  describe(`scoring sessions on ${name}`, () => {
    let engine: OnnxEngine;
    beforeAll(async () => {
      const dir = fixture(name);
      const catalogue = await loadCatalogueFor(await openModelSource(dir));
      engine = await createEngine({ model: dir, watched: { entropy: catalogue.entropy, frequency: catalogue.frequency } });
    });
    afterAll(() => engine?.close());

    it('scores generated tokens with the signals they were generated with', async () => {
      const promptIds = engine.encode('Once upon a time', { addSpecialTokens: true });
      const generated: GeneratedToken[] = [];
      const params = greedyParams(12);
      for await (const t of engine.generate({ promptIds, params })) generated.push(t);
      expect(generated.length).toBe(12);
      expect(Object.keys(generated[0]!.entropyNeurons).length).toBeGreaterThan(0);

      const session = await engine.openScoring(promptIds);
      const ids = generated.map((t) => t.tokenId);
      const scored = [
        ...(await session.extend(ids.slice(0, 1))),
        ...(await session.extend(ids.slice(1, 5))),
        ...(await session.extend([])),
        ...(await session.extend(ids.slice(5))),
      ];
      await session.close();
      expect(scored.map((r) => r.tokenId)).toEqual(ids);
      expect(scored.map((r) => r.index)).toEqual(ids.map((_, i) => i));
      scored.forEach((r, i) => {
        const g = generated[i]!;
        expect(r.source).toBe('shadow');
        expect(r.entropy).toBeCloseTo(g.entropy, 4);
        expect(r.top1Prob).toBeCloseTo(g.top1Prob, 4);
        expect(r.normScale).toBeCloseTo(g.normScale, 4);
        expect(r.logprob).toBeCloseTo(g.logprob, 4);
        expect(r.repeat).toBe(g.repeat);
        for (const [n, v] of Object.entries(g.entropyNeurons)) expect(r.entropyNeurons[n]).toBeCloseTo(v, 4);
        for (const [n, v] of Object.entries(g.frequencyNeurons)) expect(r.frequencyNeurons[n]).toBeCloseTo(v, 4);
        if (g.unigramKl !== undefined) expect(r.unigramKl).toBeCloseTo(g.unigramKl, 4);
      });
      expect(scored.map((r) => r.text).join('')).toBe(generated.map((t) => t.text).join(''));
      await expect(session.extend(ids.slice(0, 1))).rejects.toThrow(/closed/);
    });
  });
}
