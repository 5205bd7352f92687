// GET /v1/neurons says what the sidecar knows about each catalogued neuron and where the catalogue
// came from: a weights-only catalogue (computed at load) on the demo model, and an analyzed one
// whose causal figures and provenance come back as the catalogue recorded them; fields of a newer
// catalogue format pass through under `extra`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFixtureEngine, startServer, type TestServer } from './helpers/server.ts';
import type { Catalogue } from '../src/monitor/catalogue.ts';

describe('GET /v1/neurons', () => {
  let s: TestServer;
  let catalogue: Catalogue;
  beforeAll(async () => {
    const engine = await createFixtureEngine('gpt2-tiny-random-onnx');
    const [a, b] = engine.catalogue.entropy as [string, string];
    const [f] = engine.catalogue.frequency as [string];
    const layer = engine.spec.nLayers - 1;
    const effect = (x: number) => ({ meanAbsDeltaLoss: x, meanDeltaLoss: -x / 2, meanDeltaEntropy: x / 4 });
    // A hand-written analyzed catalogue: every figure below must come back under its wire name.
    catalogue = {
      version: 1,
      createdAt: '2026-01-02T03:04:05.000Z',
      model: { id: 'tiny', configHash: 'c0ffee', weightsHash: 'beef' },
      layer,
      dMlp: engine.spec.dMlp,
      k: 7,
      top: 2,
      corpus: { description: 'wikitext sample', tokens: 4096, synthetic: false },
      entropy: [a, b],
      frequency: [f],
      neurons: Array.from({ length: engine.spec.dMlp }, (_, index) => ({
        address: `${layer}.${index}`,
        index,
        role: null,
        norm: 1 + index,
        rho: index / 100,
        logitVar: 0.5 + index,
        freqScore: index % 2 ? -0.25 : 0.125,
        calibrationMean: index * 0.01,
      })),
      baseline: { count: 16, seed: 3, total: effect(0.002), direct: effect(0.0015), normMediatedFraction: 0.25 },
    };
    const ia = Number(a.split('.')[1]);
    catalogue.neurons[ia]!.role = 'entropy';
    catalogue.neurons[ia]!.verification = { ablateTo: 0.3, positions: 512, total: effect(0.04), direct: effect(0.01), normMediatedFraction: 0.75 };
    // A field a newer catalogue format adds (the discovery branch's ranking fields, say).
    (catalogue.neurons[ia] as unknown as Record<string, unknown>).rank = 1;
    s = await startServer({ engine, catalogue });
  });
  afterAll(async () => s?.close());

  it('lists each watched neuron with its role, scores, calibration mean and causal figures', async () => {
    const body = await (await fetch(`${s.url}/v1/neurons`)).json();
    const [a, b] = s.engine.catalogue.entropy as [string, string];
    const ia = Number(a.split('.')[1]);
    expect(body.entropy).toEqual(s.engine.catalogue.entropy);
    expect(body.vocab_size).toBe(s.engine.spec.vocabSize);
    expect(body.max_entropy).toBeCloseTo(Math.log(s.engine.spec.vocabSize), 12);
    expect(body.neurons.map((n: { address: string }) => n.address)).toEqual([...new Set([...s.engine.catalogue.entropy, ...s.engine.catalogue.frequency])]);
    expect(body.neurons[0]).toEqual({
      address: a,
      index: ia,
      roles: ['entropy'],
      rho: ia / 100,
      norm: 1 + ia,
      logit_var: 0.5 + ia,
      freq_score: ia % 2 ? -0.25 : 0.125,
      calibration_mean: ia * 0.01,
      causal: {
        ablate_to: 0.3,
        positions: 512,
        total: { mean_abs_delta_loss: 0.04, mean_delta_loss: -0.02, mean_delta_entropy: 0.01 },
        direct: { mean_abs_delta_loss: 0.01, mean_delta_loss: -0.005, mean_delta_entropy: 0.0025 },
        norm_mediated_fraction: 0.75,
      },
      extra: { rank: 1 },
    });
    expect(body.neurons.find((n: { address: string }) => n.address === b).causal).toBeNull();
  });

  it('says where the catalogue came from', async () => {
    const body = await (await fetch(`${s.url}/v1/neurons`)).json();
    expect(body.provenance).toEqual({
      kind: 'analyzed',
      model: { id: 'tiny', config_hash: 'c0ffee', weights_hash: 'beef' },
      created_at: '2026-01-02T03:04:05.000Z',
      k: 7,
      top: 2,
      corpus: { description: 'wikitext sample', tokens: 4096, synthetic: false },
      random_baseline: {
        count: 16,
        total: { mean_abs_delta_loss: 0.002, mean_delta_loss: -0.001, mean_delta_entropy: 0.0005 },
        direct: { mean_abs_delta_loss: 0.0015, mean_delta_loss: -0.00075, mean_delta_entropy: 0.000375 },
        norm_mediated_fraction: 0.25,
      },
    });
  });

  it('a server without the catalogue still names the watched set, as watched_only', async () => {
    const bare = await startServer({ engine: s.engine });
    try {
      const body = await (await fetch(`${bare.url}/v1/neurons`)).json();
      expect(body.provenance.kind).toBe('watched_only');
      expect(body.neurons[0]).toMatchObject({ address: s.engine.catalogue.entropy[0], rho: null, causal: null, extra: {} });
    } finally {
      await bare.app.close();
    }
  });
});
