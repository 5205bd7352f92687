// Weight quantization against independent truth: the block codes against hand-derived values and
// error bounds, onnxruntime's MatMulNBits (fed our packing) against a float64 product with the
// dequantized matrix, float16 bits against IEEE values worked out by hand, and the per-MatMul
// dtype policy.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidInputError } from '../src/errors.ts';
import { dtypeFlag } from '../src/commands/options.ts';
import {
  dtypeFor,
  emitMatMul,
  quantBlockSize,
  setWeightEmission,
  type WeightDtype,
} from '../src/model/architectures/weight-emission.ts';
import { GraphBuilder } from '../src/model/onnx/graph-builder.ts';
import { DataType } from '../src/model/onnx/proto.ts';
import {
  dequantizeBlocks,
  fromHalfBits,
  quantizeBlocks,
  toFloat16,
  toHalfBits,
  type QuantBits,
} from '../src/model/onnx/quantize.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomMatrix(n: number, seed: number, spread = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.3) * spread);
}

describe('block quantization', () => {
  it('codes a hand-worked int4 block: scale (max-min)/15, zero point round(-min/scale)', () => {
    // One column, K = 16: values -1.5 .. 6 in steps of 0.5. min -1.5, max 6 -> scale 0.5, zp 3.
    const k = 16;
    const w = Float32Array.from({ length: k }, (_, i) => -1.5 + 0.5 * i);
    const q = quantizeBlocks(w, k, 1, 4, 16);
    expect(q.scales[0]).toBeCloseTo(0.5, 7);
    expect(q.zeroPoints![0]! & 15).toBe(3);
    // code_i = i: bytes pack (2j) low, (2j+1) high.
    expect(Array.from(q.packed)).toEqual(Array.from({ length: 8 }, (_, j) => (2 * j) | ((2 * j + 1) << 4)));
    expect(Array.from(dequantizeBlocks(q, k, 1, 4, 16))).toEqual(Array.from(w));
  });

  for (const bits of [4, 8] as QuantBits[]) {
    it(`int${bits}: every value within half a step of its block's scale, zero exact`, () => {
      const k = 64;
      const n = 5;
      const w = randomMatrix(k * n, bits);
      w[7 * n + 2] = 0;
      const q = quantizeBlocks(w, k, n, bits, 32);
      const back = dequantizeBlocks(q, k, n, bits, 32);
      for (let r = 0; r < k; r++) {
        for (let c = 0; c < n; c++) {
          const scale = q.scales[c * 2 + Math.floor(r / 32)]!;
          expect(Math.abs(back[r * n + c]! - w[r * n + c]!)).toBeLessThanOrEqual(scale / 2 + 1e-6);
        }
      }
      expect(back[7 * n + 2]).toBe(0);
    });
  }
});

/** y = x @ W through emitMatMul under `dtype`, run by onnxruntime. */
async function runEmitted(dtype: WeightDtype, x: Float32Array, m: number, k: number, n: number, w: Float32Array) {
  const dir = mkdtempSync(join(tmpdir(), 'cs-quant-'));
  dirs.push(dir);
  const g = new GraphBuilder({ dataPath: join(dir, 'm.onnx.data') });
  setWeightEmission(g, { dtype, quantizeLastLayer: false, lastLayer: 9 });
  const input = g.input('x', DataType.FLOAT, [m, k]);
  emitMatMul(g, input, 'layers.0.mlp.in', k, n, w, 'y');
  g.output('y', DataType.FLOAT, [m, n]);
  g.save(join(dir, 'm.onnx'));
  const session = await ort.InferenceSession.create(join(dir, 'm.onnx'));
  const out = await session.run({ x: new ort.Tensor('float32', x, [m, k]) });
  await session.release();
  return out.y!.data as Float32Array;
}

function matmul64(x: Float32Array, w: Float32Array, m: number, k: number, n: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += x[i * k + t]! * w[t * n + j]!;
      y[i * n + j] = s;
    }
  return y;
}

describe('emitted MatMuls run by onnxruntime', () => {
  const m = 3;
  const k = 64;
  const n = 24;
  const w = randomMatrix(k * n, 11, 0.2);
  const x = randomMatrix(m * k, 12);

  // K = 64 and 256: int4 blocks of 16 and of 32 (quantBlockSize).
  for (const [dtype, bits, k] of [
    ['int8', 8, 64],
    ['int4', 4, 64],
    ['int8', 8, 256],
    ['int4', 4, 256],
  ] as const) {
    const w = randomMatrix(k * n, 11, 0.2);
    const x = randomMatrix(m * k, 12);
    it(`${dtype}, K ${k}: MatMulNBits on our packing equals x @ dequantize(W) (float64)`, async () => {
      const block = quantBlockSize(dtype, k);
      const wq = dequantizeBlocks(quantizeBlocks(w, k, n, bits, block), k, n, bits, block);
      const expected = matmul64(x, wq, m, k, n);
      const got = await runEmitted(dtype, x, m, k, n, w);
      // accuracy_level 4 rounds the activations to int8 per block: allow 1% of sum |x||w|.
      let worst = 0;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let mass = 0;
          for (let t = 0; t < k; t++) mass += Math.abs(x[i * k + t]! * wq[t * n + j]!);
          worst = Math.max(worst, Math.abs(got[i * n + j]! - expected[i * n + j]!) / mass);
        }
      }
      console.log(`${dtype} MatMulNBits vs float64 x @ dequantized W: worst error ${worst.toExponential(2)} of sum|x||w|`);
      expect(worst).toBeLessThan(0.01);
      // And the quantization itself is visible: the product differs from the float32 one.
      const exact = matmul64(x, w, m, k, n);
      expect(got.some((v, i) => Math.abs(v - exact[i]!) > 1e-5)).toBe(true);
    });
  }

  it('fp16: half weights and half activations, within float16 rounding of the exact product', async () => {
    const got = await runEmitted('fp16', x, m, k, n, w);
    const exact = matmul64(x, w, m, k, n);
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - exact[i]!)).toBeLessThan(2e-2);
  });
});

describe('float16 conversion', () => {
  it('matches IEEE half bit patterns worked out by hand', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // largest finite half
      [65520, 0x7c00], // rounds up past the largest: inf
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -14, 0x0400], // smallest normal
      [1 + 2 ** -11, 0x3c00], // exactly halfway between 1 and 1+2^-10: ties to even (1)
      [1 + 3 * 2 ** -11, 0x3c02], // halfway between 1+2^-10 and 1+2^-9: ties to even
      [0.1, 0x2e66],
      [-0, 0x8000],
    ];
    for (const [v, bits] of cases) expect([v, toHalfBits(v)]).toEqual([v, bits]);
    expect(toHalfBits(NaN) & 0x7c00).toBe(0x7c00);
    expect(fromHalfBits(0x2e66)).toBeCloseTo(0.0999755859375, 12);
  });

  it('round-trips every finite half exactly', () => {
    const all = Uint16Array.from({ length: 0x7c00 }, (_, i) => i);
    const back = toFloat16(Float32Array.from(all, (h) => fromHalfBits(h)));
    expect(back).toEqual(all);
  });
});

describe('dtype policy', () => {
  const g = new GraphBuilder({ dataPath: join(mkdtempSync(join(tmpdir(), 'cs-quant-')), 'x.data') });
  setWeightEmission(g, { dtype: 'int4', quantizeLastLayer: false, lastLayer: 3 });
  it('keeps the last layer MLP and the unembedding float32, quantizes the rest', () => {
    expect(dtypeFor(g, 'layers.0.attention.qkv', 64)).toBe('int4');
    expect(dtypeFor(g, 'layers.3.attention.qkv', 64)).toBe('int4');
    expect(dtypeFor(g, 'layers.2.mlp.out', 256)).toBe('int4');
    expect(dtypeFor(g, 'layers.3.mlp.in', 64)).toBe('fp32');
    expect(dtypeFor(g, 'layers.3.mlp.out', 256)).toBe('fp32');
    expect(dtypeFor(g, 'unembedding', 64)).toBe('fp32');
  });
  it('falls back to float32 for a K that is not a whole number of blocks', () => {
    expect(dtypeFor(g, 'layers.0.mlp.out', 172)).toBe('fp32');
    expect(dtypeFor(g, 'layers.0.mlp.out', 8)).toBe('fp32');
  });
  it('--quantize-last-layer quantizes the last MLP too', () => {
    const h = new GraphBuilder({ dataPath: join(mkdtempSync(join(tmpdir(), 'cs-quant-')), 'x.data') });
    setWeightEmission(h, { dtype: 'int8', quantizeLastLayer: true, lastLayer: 3 });
    expect(dtypeFor(h, 'layers.3.mlp.in', 64)).toBe('int8');
    h.abort();
  });
  it('--dtype accepts the four dtypes and refuses anything else with an InvalidInputError', () => {
    for (const d of ['fp32', 'fp16', 'int8', 'int4']) expect(dtypeFlag({ dtype: d })).toBe(d);
    expect(dtypeFlag({})).toBe('fp32');
    expect(() => dtypeFlag({ dtype: 'q4' })).toThrow(InvalidInputError);
  });
  afterAll(() => g.abort());
});
