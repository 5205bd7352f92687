import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../src/errors.ts';
import type { NeuronIntervention } from '../src/runtime/types.ts';
import {
  compileInterventions,
  InterventionRegistry,
  parseInterventionSpec,
  type StoredIntervention,
} from '../src/monitor/interventions.ts';

function thrown(fn: () => unknown): InvalidInputError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidInputError);
    return e as InvalidInputError;
  }
  throw new Error('expected an InvalidInputError');
}

describe('parseInterventionSpec', () => {
  it('parses the four modes', () => {
    expect(parseInterventionSpec('11.584=clamp:5')).toEqual({ neuron: '11.584', mode: 'clamp', value: 5 });
    expect(parseInterventionSpec('11.2378=mean_ablate')).toEqual({ neuron: '11.2378', mode: 'mean_ablate' });
    expect(parseInterventionSpec('3.17=scale:0.5')).toEqual({ neuron: '3.17', mode: 'scale', value: 0.5 });
    expect(parseInterventionSpec('3.1=add:-2')).toEqual({ neuron: '3.1', mode: 'add', value: -2 });
    expect(parseInterventionSpec('3.1=add:1e-3')).toEqual({ neuron: '3.1', mode: 'add', value: 0.001 });
  });

  it.each([
    '11.584',
    '11=clamp:5',
    'a.b=clamp:1',
    '3.1=boost:2',
    '3.1=clamp',
    '3.1=clamp:',
    '3.1=clamp:x',
    '3.1=scale:Infinity',
    '3.1=mean_ablate:2',
  ])('rejects %s with an InvalidInputError on the intervene flag', (spec) => {
    const e = thrown(() => parseInterventionSpec(spec));
    expect(e.param).toBe('intervene');
    expect(e.message).toContain(spec);
  });
});

describe('InterventionRegistry', () => {
  const make = (clock = { t: Date.parse('2024-06-01T00:00:00Z') }) =>
    new InterventionRegistry({
      lastLayer: 3,
      dMlp: 172,
      calibrationMean: (i) => (i === 17 ? 0.25 : undefined),
      now: () => clock.t,
    });

  it('adds, lists, removes and clears, emitting events', () => {
    const reg = make();
    const events: string[] = [];
    for (const ev of ['created', 'removed', 'expired'] as const)
      reg.on(ev, (i: StoredIntervention) => events.push(`${ev}:${i.neuron}`));
    const a = reg.add({ neuron: '3.5', mode: 'clamp', value: 2 });
    expect(a).toMatchObject({
      neuron: '3.5',
      mode: 'clamp',
      value: 2,
      createdAt: '2024-06-01T00:00:00.000Z',
      expiresAt: null,
      requestId: null,
    });
    const b = reg.add({ neuron: '3.17', mode: 'mean_ablate' });
    expect(b.value).toBe(0.25);
    expect(a.id).not.toBe(b.id);
    expect(reg.list().map((i) => i.id)).toEqual([a.id, b.id]);
    expect(reg.remove(a.id)).toBe(true);
    expect(reg.remove(a.id)).toBe(false);
    expect(reg.clear()).toEqual([b]);
    expect(reg.list()).toEqual([]);
    expect(events).toEqual(['created:3.5', 'created:3.17', 'removed:3.5', 'removed:3.17']);
  });

  it('validates every field with the offending parameter named', () => {
    const reg = make();
    expect(thrown(() => reg.add({ neuron: 'x', mode: 'clamp', value: 1 })).param).toBe('neuron');
    expect(thrown(() => reg.add({ neuron: '2.5', mode: 'clamp', value: 1 })).message).toMatch(
      /last MLP layer \(3\)/,
    );
    expect(thrown(() => reg.add({ neuron: '3.172', mode: 'clamp', value: 1 })).message).toMatch(/below 172/);
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'boost', value: 1 })).param).toBe('mode');
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'clamp' })).param).toBe('value');
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'scale', value: NaN })).param).toBe('value');
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'mean_ablate' })).message).toMatch(/calibration/);
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'clamp', value: 1, ttlS: 0 })).param).toBe('ttl_s');
    expect(thrown(() => reg.add({ neuron: '3.1', mode: 'clamp', value: 1, requestId: '' })).param).toBe(
      'request_id',
    );
    const noCalibration = new InterventionRegistry({ lastLayer: 3, dMlp: 172 });
    expect(thrown(() => noCalibration.add({ neuron: '3.17', mode: 'mean_ablate' })).param).toBe('mode');
    expect(reg.list()).toEqual([]);
  });

  it('scopes to requests and expires after ttl', () => {
    const clock = { t: Date.parse('2024-06-01T00:00:00Z') };
    const reg = make(clock);
    const expired: string[] = [];
    reg.on('expired', (i) => expired.push(i.id));
    const global = reg.add({ neuron: '3.1', mode: 'add', value: 1 });
    const scoped = reg.add({ neuron: '3.2', mode: 'scale', value: 2, requestId: 'req-a' });
    const brief = reg.add({ neuron: '3.3', mode: 'clamp', value: 0, ttlS: 1.5 });
    expect(brief.expiresAt).toBe('2024-06-01T00:00:01.500Z');
    expect(reg.activeFor().map((i) => i.id)).toEqual([global.id, brief.id]);
    expect(reg.activeFor('req-a').map((i) => i.id)).toEqual([global.id, scoped.id, brief.id]);
    expect(reg.activeFor('req-a')[1]).toEqual({ id: scoped.id, neuron: '3.2', mode: 'scale', value: 2 });
    clock.t += 1499;
    expect(reg.activeFor()).toHaveLength(2);
    clock.t += 1;
    expect(reg.activeFor().map((i) => i.id)).toEqual([global.id]);
    expect(expired).toEqual([brief.id]);
    expect(reg.clearRequest('req-a')).toEqual([scoped]);
    expect(reg.list()).toEqual([global]);
  });
});

describe('compileInterventions', () => {
  const iv = (neuron: string, mode: NeuronIntervention['mode'], value: number): NeuronIntervention => ({
    id: neuron + mode,
    neuron,
    mode,
    value,
  });

  it('identity by default, one affine map per neuron, composed in order', () => {
    const { scale, shift } = compileInterventions(
      [
        iv('3.0', 'clamp', 5),
        iv('3.1', 'scale', 0.5),
        iv('3.2', 'add', -2),
        iv('3.3', 'mean_ablate', 0.25),
        iv('3.4', 'clamp', 2),
        iv('3.4', 'add', 1),
        iv('3.5', 'add', 1),
        iv('3.5', 'scale', 3),
        iv('3.6', 'scale', 2),
        iv('3.6', 'clamp', 7),
      ],
      8,
    );
    // a' = a * scale + shift; check on an arbitrary activation a = 10.
    const apply = (i: number, a = 10) => a * scale[i]! + shift[i]!;
    expect(apply(0)).toBe(5);
    expect(apply(1)).toBe(5);
    expect(apply(2)).toBe(8);
    expect(apply(3)).toBe(0.25);
    expect(apply(4)).toBe(3); // clamp 2 then add 1
    expect(apply(5)).toBe(33); // (a + 1) * 3
    expect(apply(6)).toBe(7); // a later clamp wins
    expect([scale[7], shift[7]]).toEqual([1, 0]);
  });

  it('rejects neurons outside the layer', () => {
    expect(() => compileInterventions([iv('3.8', 'clamp', 1)], 8)).toThrow(/3\.8/);
  });
});
