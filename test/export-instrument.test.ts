// The instrumented graphs made from the two ONNX-export fixtures, run directly with
// onnxruntime-node and checked against the float64 expected.json values, against the
// untouched export, and against themselves (full pass vs KV-cache decoding).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  lastLayerWeightsFromExport,
  prepareExportGraph,
  type PreparedExport,
} from '../src/model/onnx/export-source.ts';
import { IO } from '../src/model/types.ts';
import {
  argmax,
  deviationsFromExpected,
  exportFixture,
  floats,
  maxAbsDiff,
  presentsAsPast,
  row,
  run,
  type ExportFixture,
} from './helpers/export-session.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'export-instrument-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

describe.each(['aidreams260K-onnx', 'gpt2-tiny-random-onnx'] as const)('instrumented %s', (name) => {
  let fx: ExportFixture;
  let prepared: PreparedExport;
  let instrumented: ort.InferenceSession;
  let plain: ort.InferenceSession;

  beforeAll(async () => {
    fx = exportFixture(name);
    prepared = await prepareExportGraph(fx.dir, { cacheDir });
    instrumented = await ort.InferenceSession.create(prepared.modelPath);
    plain = await ort.InferenceSession.create(prepared.plainModelPath);
  });
  afterAll(async () => {
    await instrumented?.release();
    await plain?.release();
  });

  it('exposes exactly the instrumented IO contract', () => {
    const { nLayers } = fx.spec;
    const past = Array.from({ length: nLayers }, (_, l) => [IO.pastKey(l), IO.pastValue(l)]).flat();
    const present = Array.from({ length: nLayers }, (_, l) => [IO.presentKey(l), IO.presentValue(l)]).flat();
    expect(new Set(instrumented.inputNames)).toEqual(
      new Set([
        IO.inputIds,
        IO.attentionMask,
        IO.positionIds,
        ...past,
        IO.logitsToKeep,
        IO.neuronScale,
        IO.neuronShift,
        IO.unigramLogProb,
      ]),
    );
    expect(new Set(instrumented.outputNames)).toEqual(
      new Set([
        IO.logits,
        ...present,
        IO.mlpAct,
        IO.finalNormScale,
        IO.finalResidual,
        IO.logSumExp,
        IO.entropy,
        IO.unigramKl,
        IO.topLogprobs,
        IO.topIds,
      ]),
    );
    expect(prepared.plainModelPath).toBe(join(fx.dir, 'onnx', 'model.onnx'));
  });

  it('matches expected.json: entropy, final norm scale and last-layer activations within 1e-4', async () => {
    const d = await deviationsFromExpected(instrumented, fx);
    expect(d.logitRows).toBe(fx.ids.length);
    expect(d.entropy).toBeLessThan(1e-4);
    expect(d.normScale).toBeLessThan(1e-4);
    expect(d.mlpAct).toBeLessThan(1e-4);
    const dims = (t: string) => (d.out[t] as ort.Tensor).dims;
    expect(dims(IO.mlpAct)).toEqual([1, fx.ids.length, fx.spec.dMlp]);
    expect(dims(IO.finalNormScale)).toEqual([1, fx.ids.length]);
    expect(dims(IO.finalResidual)).toEqual([1, fx.ids.length, fx.spec.dModel]);
  });

  it('predicts the expected greedy tokens', async () => {
    const { spec, expected, ids } = fx;
    const logits = floats((await run(instrumented, spec, ids)).logits as ort.Tensor);
    if (expected.greedy_next) {
      ids.forEach((_, t) => expect(argmax(row(logits, t, spec.vocabSize))).toBe(expected.greedy_next![t]));
    } else {
      // greedy_ids = prompt + greedy continuation: from the prompt's last position on, each
      // position's argmax is the next token.
      const promptLength = expected.prompt_ids!.length;
      for (let t = promptLength - 1; t < ids.length - 1; t++) {
        expect(argmax(row(logits, t, spec.vocabSize))).toBe(ids[t + 1]);
      }
    }
  });

  it("with identity interventions gives the original export's logits (<= 1e-5)", async () => {
    const mine = floats((await run(instrumented, fx.spec, fx.ids)).logits as ort.Tensor);
    const original = floats((await run(plain, fx.spec, fx.ids)).logits as ort.Tensor);
    expect(maxAbsDiff(mine, original)).toBeLessThanOrEqual(1e-5);
  });

  it('logits_to_keep=k returns the last k rows of the full pass', async () => {
    const V = fx.spec.vocabSize;
    const T = fx.ids.length;
    const full = floats((await run(instrumented, fx.spec, fx.ids)).logits as ort.Tensor);
    for (const k of [1, 3]) {
      const out = await run(instrumented, fx.spec, fx.ids, { keep: k });
      expect((out.logits as ort.Tensor).dims).toEqual([1, k, V]);
      expect(maxAbsDiff(floats(out.logits as ort.Tensor), full.subarray((T - k) * V))).toBeLessThanOrEqual(
        1e-5,
      );
      // The per-position outputs still cover the whole sequence.
      expect((out[IO.mlpAct] as ort.Tensor).dims).toEqual([1, T, fx.spec.dMlp]);
    }
  });

  it("decoding step by step with the KV cache gives the full pass's logits (<= 1e-4)", async () => {
    const { spec, ids } = fx;
    const V = spec.vocabSize;
    const full = await run(instrumented, spec, ids);
    const fullLogits = floats(full.logits as ort.Tensor);
    const fullAct = floats(full[IO.mlpAct] as ort.Tensor);
    const prefill = 3;
    let out = await run(instrumented, spec, ids.slice(0, prefill), { keep: 1 });
    expect(maxAbsDiff(floats(out.logits as ort.Tensor), row(fullLogits, prefill - 1, V))).toBeLessThanOrEqual(
      1e-4,
    );
    for (let t = prefill; t < ids.length; t++) {
      out = await run(instrumented, spec, [ids[t]!], {
        keep: 1,
        past: presentsAsPast(out, spec),
        pastLength: t,
      });
      expect(maxAbsDiff(floats(out.logits as ort.Tensor), row(fullLogits, t, V))).toBeLessThanOrEqual(1e-4);
      expect(
        maxAbsDiff(floats(out[IO.mlpAct] as ort.Tensor), row(fullAct, t, spec.dMlp)),
      ).toBeLessThanOrEqual(1e-4);
    }
  });

  it('a clamp through neuron_scale/neuron_shift sets that neuron and moves the residual along its w_out', async () => {
    const { spec, ids } = fx;
    const neuron = 7;
    const value = 3.25;
    const scale = new Float32Array(spec.dMlp).fill(1);
    const shift = new Float32Array(spec.dMlp);
    scale[neuron] = 0;
    shift[neuron] = value;
    const clean = await run(instrumented, spec, ids);
    const clamped = await run(instrumented, spec, ids, { scale, shift });
    const cleanAct = floats(clean[IO.mlpAct] as ort.Tensor);
    const act = floats(clamped[IO.mlpAct] as ort.Tensor);
    const cleanX = floats(clean[IO.finalResidual] as ort.Tensor);
    const x = floats(clamped[IO.finalResidual] as ort.Tensor);
    // Independent check of the mechanism (REFERENCE.md): x' = x + (c - a_i) w_out_i.
    const { wOut } = lastLayerWeightsFromExport(fx.dir);
    const wOutI = wOut.subarray(neuron * spec.dModel, (neuron + 1) * spec.dModel);
    for (let t = 0; t < ids.length; t++) {
      const a = row(act, t, spec.dMlp);
      const a0 = row(cleanAct, t, spec.dMlp);
      expect(a[neuron]).toBe(value);
      // Other neurons of the last layer do not depend on this one.
      expect(
        maxAbsDiff(
          a.filter((_, i) => i !== neuron),
          a0.filter((_, i) => i !== neuron),
        ),
      ).toBe(0);
      const delta = value - a0[neuron]!;
      const predicted = row(cleanX, t, spec.dModel).map((v, j) => v + delta * wOutI[j]!);
      expect(maxAbsDiff(row(x, t, spec.dModel), predicted)).toBeLessThan(1e-4);
    }
    expect(
      maxAbsDiff(floats(clamped.logits as ort.Tensor), floats(clean.logits as ort.Tensor)),
    ).toBeGreaterThan(1e-3);
  });
});
