// In-graph signals (logsumexp, entropy, unigram KL, top-k log-probabilities and ids) against the
// JavaScript reference (src/monitor/signals.ts, float64) at every position of a prompt, on every
// fixture in the shared models folder (built graphs and instrumented exports alike), in a
// two-row batch. The reference reads the same run's logits, so only the reduction is compared.

import { readdirSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { openModelSource } from '../src/model/source.ts';
import { IO } from '../src/model/types.ts';
import { rowSignals } from '../src/monitor/signals.ts';
import { sharedDir } from './helpers/shared.ts';
import { join } from 'node:path';

const models = readdirSync(join(sharedDir(), 'models'));

describe.each(models)('in-graph signals on %s', (name) => {
  it('equal the JavaScript reference within 1e-5 at every position of both rows', async () => {
    const source = await openModelSource(join(sharedDir(), 'models', name));
    const { spec } = source;
    const session = await ort.InferenceSession.create(source.modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    try {
      const V = spec.vocabSize;
      const T = 6;
      const B = 2;
      const ids = Array.from({ length: B * T }, (_, i) => (i * 7919 + 11) % V);
      // A made-up normalized unigram distribution: KL is checked against it, not against a file.
      const q = Float64Array.from({ length: V }, (_, v) => 1 + ((v * 2654435761) % 97));
      const z = q.reduce((a, b) => a + b, 0);
      const logQ = Float32Array.from(q, (x) => Math.log(x / z));
      const i64 = (xs: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), dims);
      const feeds: Record<string, ort.Tensor> = {
        [IO.inputIds]: i64(ids, [B, T]),
        [IO.attentionMask]: i64(new Array(B * T).fill(1), [B, T]),
        [IO.positionIds]: i64(Array.from({ length: B * T }, (_, i) => i % T), [B, T]),
        [IO.logitsToKeep]: i64([0], [1]),
        [IO.neuronScale]: new ort.Tensor('float32', new Float32Array(B * spec.dMlp).fill(1), [B, spec.dMlp]),
        [IO.neuronShift]: new ort.Tensor('float32', new Float32Array(B * spec.dMlp), [B, spec.dMlp]),
        [IO.unigramLogProb]: new ort.Tensor('float32', logQ, [V]),
      };
      for (let l = 0; l < spec.nLayers; l++) {
        for (const n of [IO.pastKey(l), IO.pastValue(l)]) {
          feeds[n] = new ort.Tensor('float32', new Float32Array(0), [B, spec.nKvHeads, 0, spec.headDim]);
        }
      }
      const out = await session.run(feeds);
      const logits = out[IO.logits]!.data as Float32Array;
      const k = out[IO.topLogprobs]!.dims[2]!;
      expect(k).toBe(Math.min(20, V));
      const f64 = (n: string) => out[n]!.data as Float64Array;
      const topIds = out[IO.topIds]!.data as BigInt64Array;
      for (let p = 0; p < B * T; p++) {
        const row = logits.subarray(p * V, (p + 1) * V);
        const ref = rowSignals(row, { topN: k, logPFreq: logQ });
        expect(Math.abs(f64(IO.logSumExp)[p]! - ref.logZ)).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(f64(IO.entropy)[p]! - ref.entropy)).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(f64(IO.unigramKl)[p]! - ref.unigramKl!)).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(Math.exp(f64(IO.topLogprobs)[p * k]!) - ref.top1Prob)).toBeLessThanOrEqual(1e-5);
        expect(Number(topIds[p * k])).toBe(ref.argmax);
        for (let j = 0; j < k; j++) {
          expect(Math.abs(f64(IO.topLogprobs)[p * k + j]! - ref.top[j]![1])).toBeLessThanOrEqual(1e-5);
          // Ids agree except where two logprobs tie to float precision (then either order is right).
          if (Number(topIds[p * k + j]) !== ref.top[j]![0]) {
            expect(Math.abs(row[Number(topIds[p * k + j])]! - row[ref.top[j]![0]]!)).toBeLessThanOrEqual(1e-6);
          }
        }
      }
    } finally {
      await session.release();
    }
  });
});
