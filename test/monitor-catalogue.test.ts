import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import { causalEffects, meanActivations, randomBaseline } from '../src/monitor/causal.ts';
import {
  buildCatalogue,
  calibrationMeanLookup,
  formatCatalogueTable,
  identityMismatch,
  readCatalogue,
  selectRoles,
  writeCatalogue,
  type Catalogue,
} from '../src/monitor/catalogue.ts';
import { computeWeightMetrics } from '../src/monitor/weight-metrics.ts';
import { aidreamsWeights } from './helpers/monitor-fixtures.ts';
import { fileSha256, modelIdentity } from '../src/model/identity.ts';
import { fixture } from './helpers/shared.ts';

const dir = mkdtempSync(join(tmpdir(), 'monitor-catalogue-'));

describe('selectRoles', () => {
  it('entropy by rho, frequency by |score|, ties to the lower index', () => {
    const metrics = [
      { index: 0, rho: 0.2, freqScore: 0.1 },
      { index: 1, rho: 0.9, freqScore: -0.8 },
      { index: 2, rho: 0.5, freqScore: 0.3 },
      { index: 3, rho: 0.5, freqScore: 0.8 },
    ];
    expect(selectRoles(metrics, { top: 2 })).toEqual({ entropy: [1, 2], frequency: [1, 3] });
    expect(
      selectRoles(
        metrics.map((m) => ({ ...m, freqScore: null })),
        { top: 10 },
      ),
    ).toEqual({ entropy: [1, 2, 3, 0], frequency: [] });
  });
});

describe('catalogue', () => {
  const w = aidreamsWeights();
  const metrics = computeWeightMetrics(w, { k: 3 });
  const freqScores = Float64Array.from({ length: w.dMlp }, (_, i) => Math.sin(i));
  // A small synthetic "calibration corpus": random residuals and activations.
  let x = 3;
  const rand = () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
  const n = 4;
  const data = {
    weights: w,
    residuals: Float32Array.from({ length: n * w.dModel }, rand),
    mlpAct: Float32Array.from({ length: n * w.dMlp }, rand),
    nextIds: [5, 9, 100, 7],
  };
  const means = meanActivations(data.mlpAct, w.dMlp);
  const model = { id: 'aidreams260K', configHash: 'c'.repeat(64), weightsHash: 'w'.repeat(64) };

  function build(): Catalogue {
    const roles = selectRoles(
      metrics.neurons.map((m) => ({ ...m, freqScore: freqScores[m.index] })),
      { top: 3 },
    );
    const verification = causalEffects(
      data,
      [...roles.entropy, ...roles.frequency].map((index) => ({ index, ablateTo: means[index]! })),
    );
    return buildCatalogue({
      model,
      layer: 3,
      metrics,
      freqScores,
      calibrationMeans: means,
      verification,
      baseline: randomBaseline(data, { count: 5, seed: 1, exclude: roles.entropy }),
      corpus: { description: 'random test residuals', tokens: n, synthetic: true },
      top: 3,
      now: new Date('2024-06-01T00:00:00Z'),
    });
  }

  it('records every neuron and the chosen candidates', () => {
    const c = build();
    // Ranking by norm and rho (ENTROPY_RANKING): the largest rho leads, and no listed neuron comes
    // after a neuron that beats it on both criteria, listed or not (brute force over all pairs).
    const topRho = [...metrics.neurons].sort((a, b) => b.rho - a.rho)[0]!;
    expect(c.entropy[0]).toBe(`3.${topRho.index}`);
    expect(c.entropy).toHaveLength(3);
    for (const [pos, a] of c.entropy.entries()) {
      const me = metrics.neurons[Number(a.split('.')[1])]!;
      for (const other of metrics.neurons) {
        const beats = other.norm >= me.norm && other.rho >= me.rho && (other.norm > me.norm || other.rho > me.rho);
        if (beats) expect(c.entropy.slice(0, pos)).toContain(`3.${other.index}`);
      }
    }
    expect(c.neurons).toHaveLength(172);
    expect(c.k).toBe(3);
    for (const a of c.entropy) expect(c.neurons[Number(a.split('.')[1])]!.role).toBe('entropy');
    const freq = c.neurons.find((nr) => nr.address === c.frequency[0])!;
    expect(Math.abs(freq.freqScore!)).toBe(Math.max(...Array.from(freqScores, Math.abs)));
    expect(c.neurons.filter((nr) => nr.verification).length).toBeGreaterThanOrEqual(3);
    expect(c.neurons[7]!.calibrationMean).toBe(means[7]);
    expect(calibrationMeanLookup(c)(7)).toBe(means[7]);
    expect(c.baseline?.count).toBe(5);
  });

  it('round-trips through a file', () => {
    const c = build();
    const path = join(dir, 'catalogue.json');
    writeCatalogue(path, c);
    expect(readCatalogue(path)).toEqual(c);
  });

  it.each([
    ['missing', null, /not found/],
    ['not JSON', '{', /not valid JSON/],
    ['wrong version', (c: Catalogue) => ({ ...c, version: 9 }), /version/],
    ['bad hash', (c: Catalogue) => ({ ...c, model: { ...c.model, weightsHash: 3 } }), /model\.weightsHash/],
    ['short neuron list', (c: Catalogue) => ({ ...c, neurons: c.neurons.slice(1) }), /172/],
    ['foreign address', (c: Catalogue) => ({ ...c, entropy: ['2.5'] }), /"2\.5"/],
    [
      'bad rho',
      (c: Catalogue) => ({
        ...c,
        neurons: c.neurons.map((nr, i) => (i === 4 ? { ...nr, rho: 'high' } : nr)),
      }),
      /neurons\[4\]\.rho/,
    ],
  ] as const)('rejects a catalogue with %s, naming the file', (name, content, message) => {
    const path = join(dir, `${name.replace(/ /g, '-')}.json`);
    if (typeof content === 'string') writeFileSync(path, content);
    else if (content) writeFileSync(path, JSON.stringify(content(build())));
    let err: unknown = null;
    try {
      readCatalogue(path);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as ModelLoadError).file).toBe(path);
    expect((err as Error).message).toMatch(message);
  });

  it('formats a table with the candidates and their effects', () => {
    const c = build();
    const text = formatCatalogueTable(c);
    for (const a of [...c.entropy, ...c.frequency]) expect(text).toContain(`| ${a}`);
    expect(text).toMatch(/SYNTHETIC/);
    expect(text).toMatch(/Random baseline \(5 neurons, seed 1\)/);
    const header = text.split('\n').find((l) => l.startsWith('| neuron | rho'))!;
    const rows = text.split('\n').filter((l) => l.startsWith('| 3.'));
    for (const row of rows.slice(0, 3)) expect(row.length).toBe(header.length);
  });

  it('identity: sha256 of config and weights; a catalogue for other weights is rejected', async () => {
    const path = join(dir, 'abc.txt');
    writeFileSync(path, 'abc');
    expect(await fileSha256(path)).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    const folder = fixture('aidreams260K');
    const id = await modelIdentity('aidreams260K', join(folder, 'config.json'), [
      join(folder, 'model.safetensors'),
    ]);
    expect(id.configHash).toMatch(/^[0-9a-f]{64}$/);
    const c = { ...build(), model: id };
    expect(identityMismatch(c, id)).toBeNull();
    expect(identityMismatch(c, { ...id, weightsHash: 'x' })).toMatch(/other weights/);
    expect(JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8')).model_type).toBe('llama');
  });
});
