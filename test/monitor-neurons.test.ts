// The neuron vocabulary: one strict, canonical address format for every parser in the project.
import { describe, expect, it } from 'vitest';
import {
  formatNeuronAddress,
  isInterventionMode,
  neuronIndexOf,
  parseNeuronAddress,
  watchedIndices,
} from '../src/monitor/neurons.ts';
import { parseInterventionSpec } from '../src/monitor/interventions.ts';

describe('neuron addresses', () => {
  it('parses canonical LAYER.INDEX and round-trips through format', () => {
    for (const [text, layer, index] of [
      ['0.0', 0, 0],
      ['11.584', 11, 584],
      ['3.10', 3, 10],
    ] as const) {
      expect(parseNeuronAddress(text)).toEqual({ layer, index });
      expect(formatNeuronAddress(layer, index)).toBe(text);
    }
  });

  it('rejects every non-canonical spelling the old parsers disagreed on', () => {
    for (const bad of ['11.', '.5', '11.05', '011.5', '1.2.3', ' 1.2', '1.2 ', '1', '', '-1.2', '1.-2', '1e1.2', '9007199254740993.1'])
      expect(parseNeuronAddress(bad), JSON.stringify(bad)).toBeNull();
  });

  it('the CLI flag parser uses the same rule', () => {
    expect(parseInterventionSpec('3.10=clamp:2')).toEqual({ neuron: '3.10', mode: 'clamp', value: 2 });
    expect(() => parseInterventionSpec('3.010=clamp:2')).toThrow(/not a LAYER.INDEX/);
    expect(() => parseInterventionSpec('3.=clamp:2')).toThrow(/not a LAYER.INDEX/);
  });

  it('watched indices: deduplicated, entropy first; a malformed address is a programming error', () => {
    expect(watchedIndices({ entropy: ['3.7', '3.1'], frequency: ['3.1', '3.9'] })).toEqual([7, 1, 9]);
    expect(neuronIndexOf('2.40')).toBe(40);
    expect(() => neuronIndexOf('2.040')).toThrow(/not a LAYER.INDEX/);
  });

  it('modes', () => {
    for (const m of ['clamp', 'scale', 'add', 'mean_ablate']) expect(isInterventionMode(m)).toBe(true);
    for (const m of ['Clamp', 'ablate', 3, null]) expect(isInterventionMode(m)).toBe(false);
  });
});
