// The demo model's planted neurons do what they were planted for, checked with a float64 GPT-2
// forward pass written here (independent of the project's graph builder and runtime):
//  - they fire on every position with an activation that varies;
//  - clamping an entropy neuron high raises next-token entropy, clamping it to 0 lowers it, and the
//    change goes through the final LayerNorm's scale (the direct effect on the logits is small);
//  - clamping a frequency neuron high moves the prediction towards (+) or away from (-) the unigram
//    distribution of unigram.json.
// Clamps act on the last layer, so (REFERENCE.md) the final residual changes by (c - a_i) * w_out_i.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoModel } from '../src/demo/index.ts';
import { SafetensorsCheckpoint } from '../src/model/safetensors.ts';
import { Tokenizer } from '../src/model/tokenizer.ts';

const scratch = mkdtempSync(join(tmpdir(), 'demo-behaviour-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const PROMPT = 'The cat sat on the mat. The cat sat on the mat. Once upon a time, there was';
const EPS = 1e-5;
const HIGH = 10; // about 3x the planted neurons' typical activation

interface Model {
  d: number;
  nHeads: number;
  nLayers: number;
  dMlp: number;
  vocab: number;
  w: (name: string) => Float32Array;
}

interface FinalState {
  /** Final residual (input of ln_f) per position. */
  residual: Float64Array[];
  /** Last-layer MLP activations per position. */
  acts: Float64Array[];
}

const geluNew = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

function layerNorm(
  x: Float64Array,
  gamma: Float32Array,
  beta: Float32Array,
): { y: Float64Array; sigma: number } {
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length;
  const sigma = Math.sqrt(variance + EPS);
  return { y: x.map((v, i) => ((v - mean) / sigma) * gamma[i]! + beta[i]!), sigma };
}

/** y = x W + b for a Conv1D weight W [in, out] (row-major). */
function conv1d(x: Float64Array, weight: Float32Array, bias: Float32Array): Float64Array {
  const nOut = bias.length;
  const y = Float64Array.from(bias);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]!;
    for (let j = 0; j < nOut; j++) y[j] += xi * weight[i * nOut + j]!;
  }
  return y;
}

function forward(m: Model, ids: number[]): FinalState {
  const { d, nHeads, nLayers } = m;
  const hd = d / nHeads;
  const wte = m.w('wte.weight');
  const wpe = m.w('wpe.weight');
  const xs = ids.map((id, p) =>
    Float64Array.from({ length: d }, (_, i) => wte[id * d + i]! + wpe[p * d + i]!),
  );
  const acts: Float64Array[] = [];
  for (let l = 0; l < nLayers; l++) {
    const w = (n: string) => m.w(`h.${l}.${n}`);
    const qkv = xs.map((x) =>
      conv1d(
        layerNorm(x, w('ln_1.weight'), w('ln_1.bias')).y,
        w('attn.c_attn.weight'),
        w('attn.c_attn.bias'),
      ),
    );
    const mixed = xs.map((_, p) => {
      const out = new Float64Array(d);
      for (let h = 0; h < nHeads; h++) {
        const scores = qkv.slice(0, p + 1).map((kv) => {
          let s = 0;
          for (let j = 0; j < hd; j++) s += qkv[p]![h * hd + j]! * kv[d + h * hd + j]!;
          return s / Math.sqrt(hd);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((ei, s) => {
          for (let j = 0; j < hd; j++) out[h * hd + j] += (ei / z) * qkv[s]![2 * d + h * hd + j]!;
        });
      }
      return out;
    });
    mixed.forEach((o, p) =>
      conv1d(o, w('attn.c_proj.weight'), w('attn.c_proj.bias')).forEach((v, i) => (xs[p]![i] += v)),
    );
    xs.forEach((x, p) => {
      const a = conv1d(
        layerNorm(x, w('ln_2.weight'), w('ln_2.bias')).y,
        w('mlp.c_fc.weight'),
        w('mlp.c_fc.bias'),
      ).map(geluNew);
      if (l === nLayers - 1) acts[p] = a;
      conv1d(a, w('mlp.c_proj.weight'), w('mlp.c_proj.bias')).forEach((v, i) => (x[i] += v));
    });
  }
  return { residual: xs, acts };
}

interface Readout {
  entropy: number;
  sigma: number;
  argmax: number;
  probs: Float64Array;
}

/** ln_f then the tied unembedding; `frozenSigma` gives the direct effect (the norm's scale held fixed). */
function readout(m: Model, x: Float64Array, frozenSigma?: number): Readout {
  const { d, vocab } = m;
  const gamma = m.w('ln_f.weight');
  const beta = m.w('ln_f.bias');
  const ln = layerNorm(x, gamma, beta);
  let y = ln.y;
  if (frozenSigma !== undefined) {
    const mean = x.reduce((a, b) => a + b, 0) / d;
    y = x.map((v, i) => ((v - mean) / frozenSigma) * gamma[i]! + beta[i]!);
  }
  const wte = m.w('wte.weight');
  const logits = new Float64Array(vocab);
  for (let v = 0; v < vocab; v++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += y[i]! * wte[v * d + i]!;
    logits[v] = s;
  }
  let max = -Infinity;
  let argmax = 0;
  logits.forEach((z, v) => {
    if (z > max) [max, argmax] = [z, v];
  });
  const probs = logits.map((z) => Math.exp(z - max));
  const total = probs.reduce((a, b) => a + b, 0);
  let entropy = 0;
  for (let v = 0; v < vocab; v++) {
    probs[v] /= total;
    if (probs[v]! > 0) entropy -= probs[v]! * Math.log(probs[v]!);
  }
  return { entropy, sigma: ln.sigma, argmax, probs };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('demo model behaviour (tiny)', () => {
  let model: Model;
  let state: FinalState;
  let clean: Readout[];
  let planted: { entropy: number[]; frequency: number[]; frequencySigns: number[] };
  let unigram: Float64Array;

  /** Readouts with last-layer neuron n set to c at every position. */
  const clamped = (n: number, c: number, direct = false) =>
    state.residual.map((x, p) => {
      const wOut = model
        .w(`h.${model.nLayers - 1}.mlp.c_proj.weight`)
        .subarray(n * model.d, (n + 1) * model.d);
      const delta = c - state.acts[p]![n]!;
      const moved = x.map((v, i) => v + delta * wOut[i]!);
      return readout(model, moved, direct ? clean[p]!.sigma : undefined);
    });

  beforeAll(async () => {
    const dir = join(scratch, 'tiny');
    await writeDemoModel(dir, 'tiny');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const ckpt = SafetensorsCheckpoint.openDir(dir);
    const cache = new Map<string, Float32Array>();
    model = {
      d: config.n_embd,
      nHeads: config.n_head,
      nLayers: config.n_layer,
      dMlp: config.n_inner,
      vocab: config.vocab_size,
      w: (name) => cache.get(name) ?? cache.set(name, ckpt.float32(name)).get(name)!,
    };
    const json = JSON.parse(readFileSync(join(dir, 'planted.json'), 'utf8'));
    const index = (a: string) => Number(a.split('.')[1]);
    planted = {
      entropy: json.entropy.map(index),
      frequency: json.frequency.map(index),
      frequencySigns: json.frequency_signs,
    };
    const counts = JSON.parse(readFileSync(join(dir, 'unigram.json'), 'utf8')).counts as number[];
    const total = counts.reduce((a, c) => a + c + 1, 0);
    unigram = Float64Array.from(counts, (c) => (c + 1) / total);

    const ids = Tokenizer.load(dir).encode(PROMPT);
    state = forward(model, ids);
    clean = state.residual.map((x) => readout(model, x));
  });

  it('has predictions that are neither flat nor certain', () => {
    const h = mean(clean.map((r) => r.entropy));
    expect(h).toBeGreaterThan(1);
    expect(h).toBeLessThan(Math.log(model.vocab) - 3);
  });

  it('fires the planted neurons on every position, with varying activation', () => {
    for (const n of [...planted.entropy, ...planted.frequency]) {
      const a = state.acts.map((act) => act[n]!);
      expect(Math.min(...a), `neuron ${n}`).toBeGreaterThan(0.5);
      const sd = Math.sqrt(mean(a.map((x) => (x - mean(a)) ** 2)));
      expect(sd, `neuron ${n}`).toBeGreaterThan(0.1);
    }
  });

  it('entropy neurons: clamping high raises entropy, clamping to 0 lowers it, through the final norm', () => {
    const baseline = clean.map((r) => r.entropy);
    for (const n of planted.entropy) {
      const high = clamped(n, HIGH);
      const low = clamped(n, 0);
      high.forEach((r, p) => {
        expect(r.entropy, `neuron ${n} position ${p}`).toBeGreaterThan(baseline[p]!);
        expect(r.sigma).toBeGreaterThan(clean[p]!.sigma);
      });
      expect(mean(high.map((r) => r.entropy)) - mean(baseline)).toBeGreaterThan(2);
      low.forEach((r, p) => expect(r.sigma).toBeLessThan(clean[p]!.sigma));
      expect(mean(low.map((r) => r.entropy))).toBeLessThan(mean(baseline) - 0.3);

      // Total vs direct effect: with the norm's scale frozen, the same clamp barely moves entropy.
      const total = mean(high.map((r, p) => Math.abs(r.entropy - baseline[p]!)));
      const direct = mean(clamped(n, HIGH, true).map((r, p) => Math.abs(r.entropy - baseline[p]!)));
      expect(direct).toBeLessThan(0.25 * total);
      // Scaling the logits keeps most top tokens.
      const kept = high.filter((r, p) => r.argmax === clean[p]!.argmax).length;
      expect(kept / high.length).toBeGreaterThan(0.9);
    }
  });

  it('frequency neurons: clamping high moves the prediction towards (+) or away from (-) the unigram distribution', () => {
    const kl = (readouts: Readout[]) =>
      mean(
        readouts.map((r) => {
          let s = 0;
          for (let v = 0; v < model.vocab; v++)
            if (r.probs[v]! > 0) s += r.probs[v]! * Math.log(r.probs[v]! / unigram[v]!);
          return s;
        }),
      );
    // The expected log unigram probability of the predicted token: higher = more frequent tokens.
    const expectedLogFreq = (readouts: Readout[]) =>
      mean(
        readouts.map((r) => {
          let s = 0;
          for (let v = 0; v < model.vocab; v++) s += r.probs[v]! * Math.log(unigram[v]!);
          return s;
        }),
      );
    const baselineKl = kl(clean);
    const baselineLogFreq = expectedLogFreq(clean);
    planted.frequency.forEach((n, j) => {
      const moved = clamped(n, HIGH);
      if (planted.frequencySigns[j]! > 0) {
        expect(kl(moved), `neuron ${n}`).toBeLessThan(baselineKl - 0.2);
        expect(expectedLogFreq(moved), `neuron ${n}`).toBeGreaterThan(baselineLogFreq + 1);
      } else {
        expect(kl(moved), `neuron ${n}`).toBeGreaterThan(baselineKl + 0.5);
        expect(expectedLogFreq(moved), `neuron ${n}`).toBeLessThan(baselineLogFreq - 1);
      }
    });
  });
});
