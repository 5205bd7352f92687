// Weight-only quantization math, independent of any graph: symmetric per-block int8 / int4 in
// the layout of onnxruntime's com.microsoft MatMulNBits, and float32 -> float16 conversion.
//
// Layout (MatMulNBits, for a MatMul weight W stored as [K, N] = [in, out]):
//  - B           uint8 [N, K / block, block * bits / 8]: column n's K values, block by block;
//                4-bit codes are packed two per byte, the even element in the low nibble;
//  - scales      float [N * K / block], column-major like B;
//  - zero_points uint8 [N, ceil(blocks * bits / 8)], 4-bit ones two per byte likewise;
//  W ~= (code - zero_point) * scale.
// Asymmetric (with zero points) rather than symmetric: measured on the fixtures, symmetric
// int4 (q4_0 style, even with an MSE search over the scale) gave 0.12 nats mean |d entropy| on
// aidreams260K against 0.11 asymmetric at block 32 and 0.096 at block 16; zero points cost
// 1/2 byte (int4) or 1 byte (int8) per block. Speed does not argue for symmetric either: ORT's
// symmetric int4 kernel is 3-6x faster on a cache-resident 768x3072 matrix (0.26 vs 1.54 ms), but
// in a whole GPT-2-small decode step, where every weight comes from memory once, the int4
// MatMulNBits took no less time (6.7-8.3 ms against 6.0-6.9 ms asymmetric).

export type QuantBits = 4 | 8;

export interface BlockQuantized {
  /** MatMulNBits' B, [N, blocks, blockBytes]. */
  packed: Uint8Array;
  /** [N * blocks] float32. */
  scales: Float32Array;
  blocksPerColumn: number;
  blockBytes: number;
  /** Asymmetric only: MatMulNBits' zero_points, uint8 [N, ceil(blocks * bits / 8)] (4-bit: two per byte). */
  zeroPoints: Uint8Array | null;
}

/** True when a [K, N] weight can be blocked without padding (K a multiple of the block size). */
export function quantizable(k: number, blockSize: number): boolean {
  return k >= blockSize && k % blockSize === 0;
}

/**
 * Quantizes W ([K, N] row-major float32) per column block of `blockSize` rows, asymmetric:
 * each block's [min, max] (widened to include 0, so 0 stays exact) spans all 2^bits codes,
 * scale = (max - min) / (2^bits - 1), zero point = round(-min / scale).
 */
export function quantizeBlocks(
  w: Float32Array,
  k: number,
  n: number,
  bits: QuantBits,
  blockSize: number,
): BlockQuantized {
  if (!quantizable(k, blockSize)) throw new Error(`quantizeBlocks: K=${k} is not a multiple of block ${blockSize}`);
  const blocks = k / blockSize;
  const blockBytes = (blockSize * bits) / 8;
  const levels = (1 << bits) - 1;
  const zpBytesPerColumn = Math.ceil((blocks * bits) / 8);
  const packed = new Uint8Array(n * blocks * blockBytes);
  const scales = new Float32Array(n * blocks);
  const zeroPoints = new Uint8Array(n * zpBytesPerColumn);
  const codes = new Uint8Array(blockSize);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < blocks; b++) {
      const row0 = b * blockSize;
      let lo = 0;
      let hi = 0;
      for (let i = 0; i < blockSize; i++) {
        const v = w[(row0 + i) * n + col]!;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      const scale = Math.fround((hi - lo) / levels);
      const zp = scale === 0 ? 0 : Math.min(levels, Math.max(0, Math.round(-lo / scale)));
      for (let i = 0; i < blockSize; i++) {
        const q = scale === 0 ? zp : Math.round(w[(row0 + i) * n + col]! / scale) + zp;
        codes[i] = Math.min(levels, Math.max(0, q));
      }
      scales[col * blocks + b] = scale;
      if (bits === 8) zeroPoints[col * zpBytesPerColumn + b] = zp;
      else zeroPoints[col * zpBytesPerColumn + (b >> 1)]! |= b & 1 ? zp << 4 : zp;
      const base = (col * blocks + b) * blockBytes;
      if (bits === 8) packed.set(codes, base);
      else for (let i = 0; i < blockBytes; i++) packed[base + i] = codes[2 * i]! | (codes[2 * i + 1]! << 4);
    }
  }
  return { packed, scales, blocksPerColumn: blocks, blockBytes, zeroPoints };
}

/** The float32 [K, N] matrix a BlockQuantized stands for (tests, and dequantizing at surgery). */
export function dequantizeBlocks(q: BlockQuantized, k: number, n: number, bits: QuantBits, blockSize: number): Float32Array {
  const out = new Float32Array(k * n);
  const zpBytesPerColumn = Math.ceil((q.blocksPerColumn * bits) / 8);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < q.blocksPerColumn; b++) {
      const scale = q.scales[col * q.blocksPerColumn + b]!;
      let offset = 1 << (bits - 1);
      if (q.zeroPoints) {
        const byte = q.zeroPoints[col * zpBytesPerColumn + (bits === 8 ? b : b >> 1)]!;
        offset = bits === 8 ? byte : b & 1 ? byte >> 4 : byte & 15;
      }
      const base = (col * q.blocksPerColumn + b) * q.blockBytes;
      for (let i = 0; i < blockSize; i++) {
        const byte = q.packed[base + (bits === 8 ? i : i >> 1)]!;
        const code = bits === 8 ? byte : i & 1 ? byte >> 4 : byte & 15;
        out[(b * blockSize + i) * n + col] = (code - offset) * scale;
      }
    }
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits of a float32, round-to-nearest-even, with subnormals, inf and NaN. */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to signed zero
    mant |= 0x800000; // the implicit leading 1 becomes explicit in a subnormal
    const shift = 14 - e;
    const half = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    const midpoint = 1 << (shift - 1);
    return sign | (half + (rest > midpoint || (rest === midpoint && half & 1) ? 1 : 0));
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++; // may carry into the exponent: still correct
  return sign | half;
}

/** float32 value of IEEE half bits. */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function toFloat16(w: Float32Array): Uint16Array {
  const out = new Uint16Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = toHalfBits(w[i]!);
  return out;
}

export function fromFloat16(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = fromHalfBits(h[i]!);
  return out;
}
