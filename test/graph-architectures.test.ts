// Graphs built from tiny random checkpoints of every supported architecture, checked against the
// independent float64 reference forward pass (test/reference) and against themselves: KV-cache
// decoding vs full recomputation, logits_to_keep, plain vs instrumented, clamping, padding.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCheckpointGraph } from '../src/model/architectures/index.ts';
import { lastLayerWeightsFromCheckpoint } from '../src/model/checkpoint.ts';
import type { ModelSpec } from '../src/model/types.ts';
import { writeRandomCheckpoint, type RandomFlavour } from './helpers/random-checkpoint.ts';
import { referenceForward, type ReferenceOutputs } from './reference/forward.ts';
import { flatten, GraphRunner, maxAbsDiff, type KvCache } from './reference/run-graph.ts';

interface Case {
  label: string;
  flavour: RandomFlavour;
  overrides?: Record<string, unknown>;
}

const CASES: Case[] = [
  { label: 'gpt2', flavour: 'gpt2' },
  { label: 'llama (GQA 4:2, head_dim 12 != d/H, untied)', flavour: 'llama' },
  {
    label: 'llama with attention and mlp biases, tied',
    flavour: 'llama',
    overrides: { attention_bias: true, mlp_bias: true, tie_word_embeddings: true, num_key_value_heads: 4 },
  },
  { label: 'qwen2 (q/k/v bias, GQA 4:1, tied)', flavour: 'qwen2' },
  { label: 'mistral (sliding window 3)', flavour: 'mistral' },
  { label: 'gpt_neox (parallel residual, rotary_pct 0.25)', flavour: 'gpt_neox' },
  {
    label: 'gpt_neox (sequential residual, rotary_pct 0.5)',
    flavour: 'gpt_neox',
    overrides: { use_parallel_residual: false, rotary_pct: 0.5 },
  },
];

const IDS = [3, 17, 5, 42, 8, 8, 29, 11];
const TOL = 1e-4;

describe.each(CASES)('$label', ({ flavour, overrides }) => {
  let ckptDir: string;
  let outDir: string;
  let spec: ModelSpec;
  let instrumented: GraphRunner;
  let plain: GraphRunner;
  let ref: ReferenceOutputs;

  beforeAll(async () => {
    ckptDir = writeRandomCheckpoint(flavour, overrides);
    outDir = mkdtempSync(join(tmpdir(), 'cs-graph-'));
    const withHooks = join(outDir, 'instrumented');
    const without = join(outDir, 'plain');
    mkdirSync(withHooks);
    mkdirSync(without);
    const built = buildCheckpointGraph(ckptDir, withHooks, { instrument: true });
    spec = built.spec;
    instrumented = await GraphRunner.open(built.modelPath, spec);
    plain = await GraphRunner.open(
      buildCheckpointGraph(ckptDir, without, { instrument: false }).modelPath,
      spec,
    );
    ref = referenceForward(ckptDir, IDS);
  });

  afterAll(async () => {
    await instrumented?.close();
    await plain?.close();
    rmSync(ckptDir, { recursive: true, force: true });
    rmSync(outDir, { recursive: true, force: true });
  });

  it('matches the float64 reference on a full sequence (logits, mlp_act, norm scale, residual)', async () => {
    const r = await instrumented.run({ ids: [IDS] });
    expect(r.keep).toBe(IDS.length);
    expect(maxAbsDiff(r.logits, flatten(ref.logits))).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.mlpAct!, flatten(ref.mlpAct))).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.finalNormScale!, ref.normScale)).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.finalResidual!, flatten(ref.finalResidual))).toBeLessThanOrEqual(TOL);
    // The present cache covers every position with the declared KV shape.
    expect(r.present.keys[0]!.dims).toEqual([1, spec.nKvHeads, IDS.length, spec.headDim]);
  });

  it('decodes with the KV cache to the same logits as full recomputation', async () => {
    const full = await instrumented.run({ ids: [IDS] });
    const V = spec.vocabSize;
    // A 3-token prefill (seq > 1 on top of an empty cache), then one token at a time.
    let step = await instrumented.run({ ids: [IDS.slice(0, 3)] });
    expect(maxAbsDiff(step.logits, full.logits.subarray(0, 3 * V))).toBeLessThanOrEqual(TOL);
    let cache: KvCache = step.present;
    for (let t = 3; t < IDS.length; t++) {
      step = await instrumented.run({ ids: [[IDS[t]!]], past: cache, keep: 1 });
      expect(maxAbsDiff(step.logits, full.logits.subarray(t * V, (t + 1) * V))).toBeLessThanOrEqual(TOL);
      expect(maxAbsDiff(step.mlpAct!, ref.mlpAct[t]!)).toBeLessThanOrEqual(TOL);
      expect(step.present.keys[0]!.dims[2]).toBe(t + 1);
      cache = step.present;
    }
    // A multi-token chunk on top of a non-empty cache.
    const head = await instrumented.run({ ids: [IDS.slice(0, 5)] });
    const tail = await instrumented.run({ ids: [IDS.slice(5)], past: head.present });
    expect(maxAbsDiff(tail.logits, full.logits.subarray(5 * V))).toBeLessThanOrEqual(TOL);
  });

  it('logits_to_keep=1 gives the last row of the full logits, 0 gives all', async () => {
    const full = await instrumented.run({ ids: [IDS] });
    const last = await instrumented.run({ ids: [IDS], keep: 1 });
    expect(last.keep).toBe(1);
    expect(
      maxAbsDiff(last.logits, full.logits.subarray((IDS.length - 1) * spec.vocabSize)),
    ).toBeLessThanOrEqual(1e-5);
    // Instrumentation outputs still cover the whole sequence.
    expect(last.mlpAct!.length).toBe(IDS.length * spec.dMlp);
    // 0 keeps every position (the Hugging Face meaning of logits_to_keep=0).
    const all = await instrumented.run({ ids: [IDS], keep: 0 });
    expect(all.keep).toBe(IDS.length);
    expect(maxAbsDiff(all.logits, full.logits)).toBeLessThanOrEqual(1e-6);
  });

  it('the plain graph has no instrumentation IO and gives the same logits', async () => {
    expect(plain.session.inputNames).not.toContain('neuron_scale');
    expect(plain.session.outputNames).not.toContain('mlp_act');
    const a = await plain.run({ ids: [IDS] });
    const b = await instrumented.run({ ids: [IDS] });
    expect(maxAbsDiff(a.logits, b.logits)).toBeLessThanOrEqual(1e-5);
  });

  it('clamping a neuron (scale 0, shift c) sets its activation to c and flows into the logits', async () => {
    const neuron = 7;
    const c = 3.5;
    const scale = new Float32Array(spec.dMlp).fill(1);
    const shift = new Float32Array(spec.dMlp);
    scale[neuron] = 0;
    shift[neuron] = c;
    const r = await instrumented.run({ ids: [IDS], scale, shift });
    const clampedRef = referenceForward(ckptDir, IDS, { scale, shift });
    for (let t = 0; t < IDS.length; t++) {
      expect(r.mlpAct![t * spec.dMlp + neuron]).toBe(c);
      // Every other neuron of the same position is untouched (last layer: nothing downstream).
      expect(r.mlpAct![t * spec.dMlp + neuron + 1]).toBeCloseTo(ref.mlpAct[t]![neuron + 1]!, 4);
    }
    expect(maxAbsDiff(r.logits, flatten(clampedRef.logits))).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.finalNormScale!, clampedRef.normScale)).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.logits, flatten(ref.logits))).toBeGreaterThan(1e-3);
  });

  it('masks left padding: a padded batch row equals the unpadded run', async () => {
    const short = IDS.slice(0, 5);
    const pad = IDS.length - short.length;
    const r = await instrumented.run({
      ids: [IDS, [...new Array<number>(pad).fill(0), ...short]],
      attentionMask: [IDS.map(() => 1), [...new Array<number>(pad).fill(0), ...short.map(() => 1)]],
      positionIds: [IDS.map((_, i) => i), [...new Array<number>(pad).fill(0), ...short.map((_, i) => i)]],
    });
    const alone = await instrumented.run({ ids: [short] });
    const V = spec.vocabSize;
    const rowLen = IDS.length * V;
    expect(maxAbsDiff(r.logits.subarray(0, rowLen), flatten(ref.logits))).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(r.logits.subarray(rowLen + pad * V), alone.logits)).toBeLessThanOrEqual(TOL);
    // Padding queries see no key at all; they must still produce finite numbers, not NaN.
    expect(r.logits.every(Number.isFinite)).toBe(true);
  });

  it('lastLayerWeightsFromCheckpoint reproduces the logits and the last layer from the residual', async () => {
    const w = lastLayerWeightsFromCheckpoint(ckptDir);
    expect(w.layer).toBe(spec.nLayers - 1);
    const { dModel: d, vocabSize: V } = spec;
    for (const t of [0, IDS.length - 1]) {
      const x = ref.finalResidual[t]!;
      const sigma = ref.normScale[t]!;
      let mean = 0;
      if (w.normType === 'layernorm') mean = x.reduce((a, b) => a + b, 0) / d;
      const normed = x.map(
        (v, i) => ((v - mean) / sigma) * w.finalNormWeight[i]! + (w.finalNormBias?.[i] ?? 0),
      );
      const logits = new Float64Array(V);
      for (let i = 0; i < d; i++)
        for (let v = 0; v < V; v++) logits[v]! += normed[i]! * w.unembed[i * V + v]!;
      expect(maxAbsDiff(logits, ref.logits[t]!)).toBeLessThanOrEqual(TOL);
    }
    // Zeroing neuron n moves the residual by exactly -a_n * w_out[n] (it sits in the last layer).
    const n = 3;
    const scale = new Float32Array(spec.dMlp).fill(1);
    scale[n] = 0;
    const ablated = referenceForward(ckptDir, IDS, { scale, shift: new Float32Array(spec.dMlp) });
    const t = 2;
    const predicted = ref.finalResidual[t]!.map((v, i) => v - ref.mlpAct[t]![n]! * w.wOut[n * d + i]!);
    expect(maxAbsDiff(predicted, ablated.finalResidual[t]!)).toBeLessThanOrEqual(TOL);
  });
});
