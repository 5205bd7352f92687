// Engine step metrics: every batch step reaches the Prometheus registry as one step, one batch-size
// observation and the KV bytes in use. Independent check: the batch sizes of all steps add up to
// the tokens the concurrent generations produced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture } from './helpers/shared.ts';
import { createEngine } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { greedyParams } from './helpers/sampling.ts';

describe('engine step metrics', () => {
  let engine: OnnxEngine;
  let telemetry: Telemetry;
  beforeAll(async () => {
    engine = await createEngine({ model: fixture('aidreams260K') });
    telemetry = new Telemetry({ model: 'm', entropyNeurons: [], frequencyNeurons: [], wsHeartbeatMs: 0 });
  });
  afterAll(async () => {
    await telemetry?.close();
    await engine?.close();
  });

  it('counts steps, observes batch sizes that sum to the tokens generated, and reports KV bytes', async () => {
    const off = engine.onStep((s) => telemetry.engineStep(s));
    const lengths = [7, 12, 20];
    const params = greedyParams;
    const counts = await Promise.all(
      lengths.map(async (n, i) => {
        let got = 0;
        for await (const _ of engine.generate({ promptIds: engine.encode(`Once ${'upon '.repeat(i)}a time`), params: params(n) })) got++;
        return got;
      }),
    );
    off();
    expect(counts).toEqual(lengths);
    const json = await telemetry.registry.getMetricsAsJSON();
    const metric = (name: string) => json.find((m) => m.name === name)!;
    const steps = metric('llm_engine_steps_total').values.find((v) => v.labels.model === 'm')!.value;
    const hist = metric('llm_engine_batch_size').values;
    const sum = hist.find((v) => (v as { metricName?: string }).metricName === 'llm_engine_batch_size_sum')!.value;
    const count = hist.find((v) => (v as { metricName?: string }).metricName === 'llm_engine_batch_size_count')!.value;
    expect(sum).toBe(lengths.reduce((a, b) => a + b, 0));
    expect(count).toBe(steps);
    // Batching happened: fewer steps than tokens.
    expect(steps).toBeLessThan(sum);
    const kv = metric('llm_engine_kv_cache_bytes').values[0]!.value;
    expect(kv).toBeGreaterThanOrEqual(0);
    expect(engine.lastStep!.kvBytes).toBe(kv);
  });
});
