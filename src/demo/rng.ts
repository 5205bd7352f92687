// A small seeded PRNG so that the demo model's weights are the same bytes on every machine and run:
// xoshiro128** (four 32-bit state words, exact in JS int32 arithmetic) seeded through splitmix32,
// with Marsaglia's polar method for normal deviates. Not for cryptography; ample for weights.

export class Rng {
  // State words are kept as signed int32 (what JS bit operators produce); only outputs are unsigned.
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number | string) {
    let x = typeof seed === 'string' ? fnv1a(seed) : seed | 0;
    const next = () => {
      // splitmix32: spreads a small or structured seed over all four state words.
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return z ^ (z >>> 16);
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Uniform 32-bit unsigned integer (one xoshiro128** step). */
  nextU32(): number {
    const s1 = this.s1;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9);
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 = s1 ^ this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result >>> 0;
  }

  /** Uniform in the open interval (0, 1). */
  uniform(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal deviate. */
  normal(): number {
    const one = new Float64Array(1);
    this.fillNormal(one, 1);
    return one[0]!;
  }

  /**
   * Fills out[offset, offset + length) with N(mean, std^2) values. This is the hot path when writing
   * GPT-2-sized weights (~10^8 values), so the generator is inlined with its state in locals, and
   * normals come in pairs from the polar method (one log and one sqrt per pair, no trigonometry).
   */
  fillNormal(
    out: Float32Array | Float64Array,
    std: number,
    mean = 0,
    offset = 0,
    length = out.length - offset,
  ): void {
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const end = offset + length;
    let i = offset;
    while (i < end) {
      let u: number;
      let v: number;
      let r: number;
      do {
        let m = Math.imul(s1, 5);
        let x = Math.imul((m << 7) | (m >>> 25), 9);
        let t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 11) | (s3 >>> 21);
        u = ((x >>> 0) + 0.5) / 2147483648 - 1;
        m = Math.imul(s1, 5);
        x = Math.imul((m << 7) | (m >>> 25), 9);
        t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 11) | (s3 >>> 21);
        v = ((x >>> 0) + 0.5) / 2147483648 - 1;
        r = u * u + v * v;
      } while (r >= 1);
      const f = std * Math.sqrt((-2 * Math.log(r)) / r);
      out[i++] = mean + u * f;
      if (i < end) out[i++] = mean + v * f;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }

  /** A new Float32Array of N(mean, std^2) values. */
  normalArray(n: number, std: number, mean = 0): Float32Array {
    const out = new Float32Array(n);
    this.fillNormal(out, std, mean);
    return out;
  }
}

/** FNV-1a hash of a string, to seed from a name such as "demo-tiny". */
function fnv1a(s: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}
