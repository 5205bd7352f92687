// lastLayerWeightsFromExport reads the monitor's weights out of an export's initializers.
// Truth: expected.json's weight norms (float64) and the same model's safetensors checkpoint.

import { describe, expect, it } from 'vitest';
import { lastLayerWeightsFromExport } from '../src/model/onnx/export-source.ts';
import { exportFixture, maxAbsDiff } from './helpers/export-session.ts';
import { aidreamsWeights, gpt2TinyWeights } from './helpers/monitor-fixtures.ts';

describe('lastLayerWeightsFromExport', () => {
  it('aidreams260K-onnx: ||w_out|| per neuron reproduces expected weight_metrics.norm within 1e-4', () => {
    const fx = exportFixture('aidreams260K-onnx');
    const w = lastLayerWeightsFromExport(fx.dir);
    const expected = fx.expected.weight_metrics!.norm;
    expect(w.dMlp).toBe(expected.length);
    const norms = Array.from({ length: w.dMlp }, (_, i) => {
      let s = 0;
      for (let j = 0; j < w.dModel; j++) s += w.wOut[i * w.dModel + j]! ** 2;
      return Math.sqrt(s);
    });
    expect(maxAbsDiff(norms, expected)).toBeLessThan(1e-4);
  });

  it.each([
    ['aidreams260K-onnx', aidreamsWeights],
    ['gpt2-tiny-random-onnx', gpt2TinyWeights],
  ] as const)('%s: every matrix and vector equals the safetensors checkpoint', (name, fromCheckpoint) => {
    const w = lastLayerWeightsFromExport(exportFixture(name).dir);
    const ref = fromCheckpoint();
    expect({
      layer: w.layer,
      normType: w.normType,
      dModel: w.dModel,
      dMlp: w.dMlp,
      vocabSize: w.vocabSize,
    }).toEqual({
      layer: ref.layer,
      normType: ref.normType,
      dModel: ref.dModel,
      dMlp: ref.dMlp,
      vocabSize: ref.vocabSize,
    });
    expect(w.normEps).toBeCloseTo(ref.normEps, 9);
    expect(maxAbsDiff(w.unembed, ref.unembed)).toBe(0);
    expect(maxAbsDiff(w.wOut, ref.wOut)).toBe(0);
    expect(maxAbsDiff(w.finalNormWeight, ref.finalNormWeight)).toBe(0);
    if (ref.finalNormBias) expect(maxAbsDiff(w.finalNormBias!, ref.finalNormBias)).toBe(0);
    else expect(w.finalNormBias).toBeNull();
    expect(w.unembedBias).toBeNull();
  });
});
