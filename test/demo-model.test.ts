// The demo model folder: deterministic bytes, Hugging Face GPT-2 layout, and planted neurons that an
// independent weight analysis (written here, with ml-matrix's eigendecomposition) finds.

import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getEncoding } from 'js-tiktoken';
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_MODEL_VERSION, demoModelDir, writeDemoModel } from '../src/demo/index.ts';
import { SafetensorsCheckpoint } from '../src/model/safetensors.ts';
import { Tokenizer } from '../src/model/tokenizer.ts';

const scratch = mkdtempSync(join(tmpdir(), 'demo-model-test-'));
const first = join(scratch, 'first');
const second = join(scratch, 'second');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const D = 64;
const L = 2;
const D_MLP = 256;
const V = 50257;
const readJson = (dir: string, file: string) => JSON.parse(readFileSync(join(dir, file), 'utf8'));
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

beforeAll(async () => {
  await writeDemoModel(first, 'tiny');
  await writeDemoModel(second, 'tiny');
});

describe('writeDemoModel files', () => {
  it('writes the same bytes every time', () => {
    const files = readdirSync(first).sort();
    expect(files).toEqual([
      'README.md',
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'planted.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'unigram.json',
    ]);
    expect(readdirSync(second).sort()).toEqual(files);
    for (const f of files) expect(sha256(join(second, f)), f).toBe(sha256(join(first, f)));
  });

  it('writes a GPT-2 config.json', () => {
    expect(readJson(first, 'config.json')).toMatchObject({
      model_type: 'gpt2',
      vocab_size: V,
      n_positions: 1024,
      n_embd: D,
      n_layer: L,
      n_head: 4,
      n_inner: D_MLP,
      activation_function: 'gelu_new',
      tie_word_embeddings: true,
      eos_token_id: 50256,
    });
    expect(readJson(first, 'generation_config.json')).toMatchObject({ eos_token_id: 50256 });
  });

  it('writes tensors with Hugging Face GPT-2 names and shapes (tied: no lm_head)', () => {
    const ckpt = SafetensorsCheckpoint.openDir(first);
    const expected: Record<string, number[]> = {
      'wte.weight': [V, D],
      'wpe.weight': [1024, D],
      'ln_f.weight': [D],
      'ln_f.bias': [D],
    };
    for (let l = 0; l < L; l++) {
      Object.assign(expected, {
        [`h.${l}.ln_1.weight`]: [D],
        [`h.${l}.ln_1.bias`]: [D],
        [`h.${l}.attn.c_attn.weight`]: [D, 3 * D],
        [`h.${l}.attn.c_attn.bias`]: [3 * D],
        [`h.${l}.attn.c_proj.weight`]: [D, D],
        [`h.${l}.attn.c_proj.bias`]: [D],
        [`h.${l}.ln_2.weight`]: [D],
        [`h.${l}.ln_2.bias`]: [D],
        [`h.${l}.mlp.c_fc.weight`]: [D, D_MLP],
        [`h.${l}.mlp.c_fc.bias`]: [D_MLP],
        [`h.${l}.mlp.c_proj.weight`]: [D_MLP, D],
        [`h.${l}.mlp.c_proj.bias`]: [D],
      });
    }
    const actual = Object.fromEntries([...ckpt.tensors].map(([name, info]) => [name, info.shape]));
    expect(actual).toEqual(expected);
    for (const name of Object.keys(expected)) {
      expect(ckpt.info(name).dtype).toBe('F32');
      expect(ckpt.float32(name).every(Number.isFinite), name).toBe(true);
    }
  });

  it('ships the real GPT-2 tokenizer', () => {
    const tok = Tokenizer.load(first);
    expect(tok.vocabSize).toBe(V);
    expect(tok.eosTokenId).toBe(50256);
    tok.checkVocab(V, join(first, 'model.safetensors'));
    const text = "The moon is bright, isn't it? 🌕";
    expect(tok.encode(text)).toEqual(getEncoding('gpt2').encode(text));
    expect(tok.chatTemplate).toBeNull();
  });

  it('labels the unigram counts synthetic, in the file and in the README', () => {
    const unigram = readJson(first, 'unigram.json');
    expect(unigram.synthetic).toBe(true);
    expect(unigram.tokenizer).toBe('gpt2');
    expect(unigram.description).toMatch(/synthetic/i);
    expect(unigram.counts).toHaveLength(V);
    expect(unigram.counts.every((c: number) => Number.isInteger(c) && c > 0)).toBe(true);
    const readme = readFileSync(join(first, 'README.md'), 'utf8');
    expect(readme).toMatch(/SYNTHETIC/);
    for (const address of [
      ...readJson(first, 'planted.json').entropy,
      ...readJson(first, 'planted.json').frequency,
    ]) {
      expect(readme).toContain(address);
    }
  });

  it('lists planted neurons of the last layer as LAYER.INDEX', () => {
    const planted = readJson(first, 'planted.json');
    expect(planted.k).toBe(1);
    expect(planted.entropy.length).toBeGreaterThanOrEqual(2);
    expect(planted.frequency.length).toBeGreaterThanOrEqual(2);
    const all = [...planted.entropy, ...planted.frequency] as string[];
    for (const a of all) expect(a).toMatch(/^1\.\d+$/);
    const indices = all.map((a) => Number(a.split('.')[1]));
    expect(new Set(indices).size).toBe(indices.length);
    expect(Math.max(...indices)).toBeLessThan(D_MLP);
    expect(planted.frequency_signs).toEqual([1, -1]);
    expect(typeof planted.notes).toBe('string');
  });
});

// REFERENCE.md's weight processing and metrics, implemented independently of src/monitor.
describe('planted neurons, by an independent weight analysis', () => {
  let P: Float64Array; // processed W_U [D, V]
  let wOut: Float64Array; // processed w_out [D_MLP, D]
  let gram: Matrix; // P P^T
  let planted: { entropy: number[]; frequency: number[]; k: number };

  beforeAll(() => {
    const ckpt = SafetensorsCheckpoint.openDir(first);
    const wte = ckpt.float32('wte.weight');
    const gamma = ckpt.float32('ln_f.weight');
    P = new Float64Array(D * V);
    for (let v = 0; v < V; v++) {
      let mean = 0;
      for (let i = 0; i < D; i++) mean += gamma[i]! * wte[v * D + i]!;
      mean /= D;
      for (let i = 0; i < D; i++) P[i * V + v] = gamma[i]! * wte[v * D + i]! - mean; // fold gamma, centre over d_model
    }
    for (let i = 0; i < D; i++) {
      let mean = 0;
      for (let v = 0; v < V; v++) mean += P[i * V + v]!;
      mean /= V;
      for (let v = 0; v < V; v++) P[i * V + v] -= mean; // centre over the vocabulary
    }
    const raw = ckpt.float32(`h.${L - 1}.mlp.c_proj.weight`);
    wOut = new Float64Array(D_MLP * D);
    for (let n = 0; n < D_MLP; n++) {
      let mean = 0;
      for (let i = 0; i < D; i++) mean += raw[n * D + i]!;
      mean /= D;
      for (let i = 0; i < D; i++) wOut[n * D + i] = raw[n * D + i]! - mean;
    }
    gram = new Matrix(D, D);
    for (let i = 0; i < D; i++) {
      for (let j = i; j < D; j++) {
        let s = 0;
        for (let v = 0; v < V; v++) s += P[i * V + v]! * P[j * V + v]!;
        gram.set(i, j, s);
        gram.set(j, i, s);
      }
    }
    const json = readJson(first, 'planted.json');
    const index = (a: string) => Number(a.split('.')[1]);
    planted = { entropy: json.entropy.map(index), frequency: json.frequency.map(index), k: json.k };
  });

  const neuron = (n: number) => wOut.subarray(n * D, (n + 1) * D);
  const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
    return s;
  };
  const others = () =>
    Array.from({ length: D_MLP }, (_, n) => n).filter(
      (n) => !planted.entropy.includes(n) && !planted.frequency.includes(n),
    );

  it('entropy neurons write into the k directions W_U barely reads (rho_k > 0.9, the top ones)', () => {
    const eig = new EigenvalueDecomposition(gram, { assumeSymmetric: true });
    const values = eig.realEigenvalues;
    const order = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
    const vector = (c: number) => eig.eigenvectorMatrix.getColumn(c);

    // Centring over d_model makes the all-ones direction an exact null direction of the processed W_U.
    // Every processed w_out is orthogonal to it, so it carries no information and rho_k skips it.
    const onesCos = Math.abs(vector(order[0]!).reduce((a, b) => a + b, 0)) / Math.sqrt(D);
    expect(onesCos).toBeGreaterThan(0.999);
    expect(values[order[0]!]!).toBeLessThan(1e-9 * values[order[D - 1]!]!);

    const k = planted.k;
    expect(k).toBe(Math.max(1, Math.round(D / 64)));
    const nullBasis = order.slice(1, 1 + k).map(vector);
    // A clear gap: the planted null directions read out far less than every other direction.
    expect(values[order[k]!]!).toBeLessThan(0.01 * values[order[k + 1]!]!);

    const rho = (n: number) => {
      const w = neuron(n);
      const proj = Math.sqrt(nullBasis.reduce((s, u) => s + dot(u, w) ** 2, 0));
      return proj / Math.sqrt(dot(w, w));
    };
    const ranked = Array.from({ length: D_MLP }, (_, n) => n).sort((a, b) => rho(b) - rho(a));
    expect(new Set(ranked.slice(0, planted.entropy.length))).toEqual(new Set(planted.entropy));
    for (const n of planted.entropy) expect(rho(n)).toBeGreaterThan(0.9);

    // An ordinary neuron is a random direction: rho^2 averages k / (d_model - 1) (the ones direction excluded).
    const rms = Math.sqrt(others().reduce((s, n) => s + rho(n) ** 2, 0) / others().length);
    expect(rms).toBeGreaterThan(0.7 * Math.sqrt(k / (D - 1)));
    expect(rms).toBeLessThan(1.3 * Math.sqrt(k / (D - 1)));

    // And their norm is unusually large.
    const norms = others()
      .map((n) => Math.sqrt(dot(neuron(n), neuron(n))))
      .sort((a, b) => a - b);
    const median = norms[norms.length >> 1]!;
    for (const n of planted.entropy) expect(Math.sqrt(dot(neuron(n), neuron(n)))).toBeGreaterThan(4 * median);
  });

  it('frequency neurons move the logits along the log-frequency direction (|cos| > 0.9, the top ones, signed)', () => {
    const counts = readJson(first, 'unigram.json').counts as number[];
    const total = counts.reduce((a, c) => a + c + 1, 0);
    const logP = counts.map((c) => Math.log((c + 1) / total));
    const meanLogP = logP.reduce((a, b) => a + b, 0) / V;
    const f = logP.map((x) => x - meanLogP);
    const fNorm = Math.sqrt(dot(f, f));
    // cos(W_U^T w, f) = w.(W_U f) / (||W_U^T w|| ||f||), with ||W_U^T w||^2 = w^T (W_U W_U^T) w.
    const pf = Array.from({ length: D }, (_, i) => {
      let s = 0;
      for (let v = 0; v < V; v++) s += P[i * V + v]! * f[v]!;
      return s;
    });
    const score = (n: number) => {
      const w = neuron(n);
      const gw = gram.mmul(Matrix.columnVector(Array.from(w))).getColumn(0);
      return dot(w, pf) / (Math.sqrt(dot(w, gw)) * fNorm);
    };
    const [plus, minus] = planted.frequency;
    expect(score(plus!)).toBeGreaterThan(0.9);
    expect(score(minus!)).toBeLessThan(-0.9);
    const ranked = Array.from({ length: D_MLP }, (_, n) => n).sort(
      (a, b) => Math.abs(score(b)) - Math.abs(score(a)),
    );
    expect(new Set(ranked.slice(0, 2))).toEqual(new Set(planted.frequency));
    expect(Math.max(...others().map((n) => Math.abs(score(n))))).toBeLessThan(0.5);
  });
});

describe('demoModelDir', () => {
  it('generates the model once into the cache, atomically, and reuses it', async () => {
    const cache = join(scratch, 'cache');
    const saved = process.env.CONFIDENCE_SIDECAR_CACHE;
    process.env.CONFIDENCE_SIDECAR_CACHE = cache;
    try {
      const dir = await demoModelDir();
      expect(dir).toBe(join(cache, `demo-tiny-v${DEMO_MODEL_VERSION}`));
      expect(readdirSync(cache)).toEqual([`demo-tiny-v${DEMO_MODEL_VERSION}`]); // no temporary folder left
      expect(sha256(join(dir, 'model.safetensors'))).toBe(sha256(join(first, 'model.safetensors')));
      const written = statSync(join(dir, 'model.safetensors')).mtimeMs;
      expect(await demoModelDir('tiny')).toBe(dir);
      expect(statSync(join(dir, 'model.safetensors')).mtimeMs).toBe(written);
    } finally {
      if (saved === undefined) delete process.env.CONFIDENCE_SIDECAR_CACHE;
      else process.env.CONFIDENCE_SIDECAR_CACHE = saved;
    }
  });
});
