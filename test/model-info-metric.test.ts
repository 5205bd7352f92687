// llm_model_info tells operators what each sidecar's replica runs: where the graph came from, its
// weight dtype, whether the monitored weights were quantized too, and the execution provider.
// Checked on real engines (a quantized checkpoint graph and an export) through the registry's own
// text exposition, which promtool validates elsewhere (acceptance-server.test.ts).

import { describe, expect, it } from 'vitest';
import { openModelSource } from '../src/model/source.ts';
import { createEngine } from '../src/runtime/index.ts';
import { Telemetry } from '../src/server/telemetry/index.ts';
import { fixture } from './helpers/shared.ts';

async function infoLine(model: string, opts: { dtype?: 'int8'; quantizeLastLayer?: boolean }): Promise<string[]> {
  const engine = await createEngine({ model, ...opts });
  const telemetry = new Telemetry({
    model: 'm',
    entropyNeurons: [],
    frequencyNeurons: [],
    wsHeartbeatMs: 0,
    replica: engine.replica,
  });
  try {
    const text = await telemetry.registry.metrics();
    return text.split('\n').filter((l) => l.startsWith('llm_model_info{'));
  } finally {
    await telemetry.close();
    await engine.close();
  }
}

describe('llm_model_info', () => {
  it('a checkpoint built at int8 with --quantize-last-layer', async () => {
    expect(await infoLine(fixture('makemore-names'), { dtype: 'int8', quantizeLastLayer: true })).toEqual([
      'llm_model_info{model="m",source="checkpoint",dtype="int8",quantize_last_layer="true",provider="cpu"} 1',
    ]);
  });

  it('an ONNX export, in its own dtype', async () => {
    expect(await infoLine(fixture('gpt2-tiny-random-onnx'), {})).toEqual([
      'llm_model_info{model="m",source="onnx-export",dtype="fp32",quantize_last_layer="false",provider="cpu"} 1',
    ]);
  });

  it('--quantize-last-layer on a float32 graph changes nothing: same cached graph, reported false', async () => {
    const plain = await openModelSource(fixture('makemore-names'));
    const flagged = await openModelSource(fixture('makemore-names'), { quantizeLastLayer: true });
    expect(flagged.cacheKey).toBe(plain.cacheKey);
    expect(flagged.quantizeLastLayer).toBe(false);
    const int8 = await openModelSource(fixture('makemore-names'), { dtype: 'int8', quantizeLastLayer: true });
    expect(int8.quantizeLastLayer).toBe(true);
  });

  it('is absent when the engine does not say what it runs (test doubles)', async () => {
    const telemetry = new Telemetry({ model: 'm', entropyNeurons: [], frequencyNeurons: [], wsHeartbeatMs: 0 });
    expect(await telemetry.registry.metrics()).not.toMatch(/^llm_model_info\{/m);
    await telemetry.close();
  });
});
