// Per-row interventions ([batch, d_mlp] neuron_scale / neuron_shift) in both graph sources: built
// from a checkpoint and an export rewritten by surgery. In a left-padded batch of prompts of
// different lengths, the rows without an intervention give the PLAIN graph's logits (run alone,
// unpadded), and the clamped row gives what the clamp gives it alone.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCheckpointGraph } from '../src/model/architectures/index.ts';
import { prepareExportGraph } from '../src/model/onnx/export-source.ts';
import { IO, type ModelSpec } from '../src/model/types.ts';
import { writeRandomCheckpoint } from './helpers/random-checkpoint.ts';
import { exportFixture, maxAbsDiff } from './helpers/export-session.ts';

const PROMPTS = [
  [3, 17, 5, 42, 8],
  [9, 1, 4, 4, 21, 13, 2, 6],
  [11, 7, 30],
];
const CLAMPED_ROW = 1;
const NEURON = 5;
const VALUE = 3.5;

interface Sources {
  spec: ModelSpec;
  instrumented: ort.InferenceSession;
  plain: ort.InferenceSession;
}

/** Feeds for a left-padded batch: pads are masked out and positions count real tokens only. */
function batchFeeds(s: Sources, session: ort.InferenceSession, prompts: number[][], scale?: Float32Array, shift?: Float32Array) {
  const { spec } = s;
  const B = prompts.length;
  const T = Math.max(...prompts.map((p) => p.length));
  const ids = new BigInt64Array(B * T);
  const mask = new BigInt64Array(B * T);
  const pos = new BigInt64Array(B * T);
  prompts.forEach((p, b) => {
    const pad = T - p.length;
    p.forEach((id, i) => {
      ids[b * T + pad + i] = BigInt(id);
      mask[b * T + pad + i] = 1n;
      pos[b * T + pad + i] = BigInt(i);
    });
  });
  const all: Record<string, ort.Tensor> = {
    [IO.inputIds]: new ort.Tensor('int64', ids, [B, T]),
    [IO.attentionMask]: new ort.Tensor('int64', mask, [B, T]),
    [IO.positionIds]: new ort.Tensor('int64', pos, [B, T]),
    [IO.logitsToKeep]: new ort.Tensor('int64', BigInt64Array.of(1n), [1]),
    [IO.neuronScale]: new ort.Tensor('float32', scale ?? new Float32Array(B * spec.dMlp).fill(1), [B, spec.dMlp]),
    [IO.neuronShift]: new ort.Tensor('float32', shift ?? new Float32Array(B * spec.dMlp), [B, spec.dMlp]),
    use_cache_branch: new ort.Tensor('bool', [true], [1]),
    [IO.unigramLogProb]: new ort.Tensor('float32', new Float32Array(spec.vocabSize), [spec.vocabSize]),
  };
  for (let l = 0; l < spec.nLayers; l++) {
    for (const name of [IO.pastKey(l), IO.pastValue(l)]) {
      all[name] = new ort.Tensor('float32', new Float32Array(0), [B, spec.nKvHeads, 0, spec.headDim]);
    }
  }
  return Object.fromEntries(session.inputNames.map((n) => [n, all[n]!]));
}

/** Last-position logits (rows of [batch, V]); the plain export keeps every position, so slice. */
async function lastLogits(s: Sources, session: ort.InferenceSession, prompts: number[][], scale?: Float32Array, shift?: Float32Array) {
  const out = await session.run(batchFeeds(s, session, prompts, scale, shift));
  const t = out[IO.logits]!;
  const [B, K, V] = t.dims as [number, number, number];
  const data = t.data as Float32Array;
  const rows = Array.from({ length: B }, (_, b) => data.slice((b * K + K - 1) * V, (b * K + K) * V));
  return { rows, act: out[IO.mlpAct]?.data as Float32Array | undefined, T: Math.max(...prompts.map((p) => p.length)) };
}

function clampRows(spec: ModelSpec, B: number, row: number): { scale: Float32Array; shift: Float32Array } {
  const scale = new Float32Array(B * spec.dMlp).fill(1);
  const shift = new Float32Array(B * spec.dMlp);
  scale[row * spec.dMlp + NEURON] = 0;
  shift[row * spec.dMlp + NEURON] = VALUE;
  return { scale, shift };
}

function checks(get: () => Sources) {
  it('rows without an intervention equal the plain graph alone (<= 1e-5); the clamped row equals the clamp alone', async () => {
    const s = get();
    const B = PROMPTS.length;
    const { scale, shift } = clampRows(s.spec, B, CLAMPED_ROW);
    const batch = await lastLogits(s, s.instrumented, PROMPTS, scale, shift);
    for (let b = 0; b < B; b++) {
      if (b === CLAMPED_ROW) continue;
      const alone = await lastLogits(s, s.plain, [PROMPTS[b]!]);
      expect(maxAbsDiff(batch.rows[b]!, alone.rows[0]!)).toBeLessThanOrEqual(1e-5);
    }
    const one = clampRows(s.spec, 1, 0);
    const clampedAlone = await lastLogits(s, s.instrumented, [PROMPTS[CLAMPED_ROW]!], one.scale, one.shift);
    expect(maxAbsDiff(batch.rows[CLAMPED_ROW]!, clampedAlone.rows[0]!)).toBeLessThanOrEqual(1e-5);
    const plainAlone = await lastLogits(s, s.plain, [PROMPTS[CLAMPED_ROW]!]);
    // The clamp moved this row's logits, and its activation reads the clamped value everywhere.
    expect(maxAbsDiff(batch.rows[CLAMPED_ROW]!, plainAlone.rows[0]!)).toBeGreaterThan(1e-4);
    const d = s.spec.dMlp;
    for (let t = 0; t < batch.T; t++) {
      expect(batch.act![(CLAMPED_ROW * batch.T + t) * d + NEURON]).toBeCloseTo(VALUE, 6);
      expect(batch.act![(0 * batch.T + t) * d + NEURON]).not.toBeCloseTo(VALUE, 6);
    }
  });
}

describe.each(['gpt2', 'llama'] as const)('built graph (%s checkpoint)', (flavour) => {
  let s: Sources;
  let ckpt: string;
  let out: string;
  beforeAll(async () => {
    ckpt = writeRandomCheckpoint(flavour);
    out = mkdtempSync(join(tmpdir(), 'cs-batch-iv-'));
    mkdirSync(join(out, 'i'));
    mkdirSync(join(out, 'p'));
    const built = buildCheckpointGraph(ckpt, join(out, 'i'), { instrument: true });
    const plain = buildCheckpointGraph(ckpt, join(out, 'p'), { instrument: false });
    const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };
    s = {
      spec: built.spec,
      instrumented: await ort.InferenceSession.create(built.modelPath, opts),
      plain: await ort.InferenceSession.create(plain.modelPath, opts),
    };
  });
  afterAll(async () => {
    await s?.instrumented.release();
    await s?.plain.release();
    rmSync(ckpt, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });
  checks(() => s);
});

describe.each(['aidreams260K-onnx', 'gpt2-tiny-random-onnx'] as const)('instrumented export %s', (name) => {
  let s: Sources;
  const cacheDir = mkdtempSync(join(tmpdir(), 'cs-batch-iv-export-'));
  beforeAll(async () => {
    const fx = exportFixture(name);
    const prepared = await prepareExportGraph(fx.dir, { cacheDir });
    const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };
    s = {
      spec: fx.spec,
      instrumented: await ort.InferenceSession.create(prepared.modelPath, opts),
      plain: await ort.InferenceSession.create(prepared.plainModelPath, opts),
    };
  });
  afterAll(async () => {
    await s?.instrumented.release();
    await s?.plain.release();
    rmSync(cacheDir, { recursive: true, force: true });
  });
  checks(() => s);
});
