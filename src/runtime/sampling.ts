// Next-token selection: greedy, or temperature + top-k + top-p sampling with a seeded PRNG.
// Confidence signals are NOT computed from the filtered distribution: the monitor reports the
// model's own temperature-1 distribution (see src/monitor/signals.ts); this module only picks.

/** xoshiro128** — small, fast, and reproducible across platforms (unlike Math.random). */
export class Rng {
  private s: Uint32Array;
  constructor(seed: number) {
    // Expand the seed with splitmix32 so that nearby seeds give unrelated streams.
    this.s = new Uint32Array(4);
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }
  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export interface SamplerParams {
  temperature: number;
  topK: number;
  topP: number;
}

export function argmax(row: Float32Array): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/**
 * Picks the next token from one logits row. temperature 0 means greedy. top-k and top-p are
 * applied to the temperature-scaled distribution, as in vLLM and HF transformers.
 */
export function sampleToken(row: Float32Array, p: SamplerParams, rng: Rng): number {
  if (p.temperature <= 0) return argmax(row);
  const invT = 1 / p.temperature;
  const V = row.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (row[i]! > max) max = row[i]!;

  const useTopK = p.topK > 0 && p.topK < V;
  const useTopP = p.topP > 0 && p.topP < 1;
  if (!useTopK && !useTopP) {
    // Fast path: one pass for the normaliser, one inverse-CDF walk.
    let z = 0;
    for (let i = 0; i < V; i++) z += Math.exp((row[i]! - max) * invT);
    let u = rng.next() * z;
    for (let i = 0; i < V; i++) {
      u -= Math.exp((row[i]! - max) * invT);
      if (u <= 0) return i;
    }
    return argmax(row);
  }

  // Candidate set: sort ids by logit (descending), keep top-k, then the smallest prefix whose
  // probability mass reaches top_p. Sorting all V ids costs ~5 ms at V = 50k, so pre-select
  // with a threshold when top-k is small.
  let ids: number[];
  if (useTopK) {
    ids = topKIndices(row, p.topK);
  } else {
    ids = Array.from({ length: V }, (_, i) => i);
    ids.sort((a, b) => row[b]! - row[a]!);
  }
  const probs = new Float64Array(ids.length);
  let z = 0;
  for (let j = 0; j < ids.length; j++) {
    probs[j] = Math.exp((row[ids[j]!]! - max) * invT);
    z += probs[j]!;
  }
  let keep = ids.length;
  if (useTopP) {
    let cum = 0;
    for (let j = 0; j < ids.length; j++) {
      cum += probs[j]! / z;
      if (cum >= p.topP) {
        keep = j + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let j = 0; j < keep; j++) mass += probs[j]!;
  let u = rng.next() * mass;
  for (let j = 0; j < keep; j++) {
    u -= probs[j]!;
    if (u <= 0) return ids[j]!;
  }
  return ids[keep - 1]!;
}

/** Indices of the k largest entries, sorted descending by value (ties: lower id first). */
export function topKIndices(row: Float32Array, k: number): number[] {
  const n = Math.min(k, row.length);
  // A small sorted buffer beats a full sort when k << V.
  const idx: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (idx.length === n && v <= val[n - 1]!) continue;
    let pos = idx.length === n ? n - 1 : idx.length;
    while (pos > 0 && val[pos - 1]! < v) {
      if (pos < n) {
        idx[pos] = idx[pos - 1]!;
        val[pos] = val[pos - 1]!;
      }
      pos--;
    }
    idx[pos] = i;
    val[pos] = v;
  }
  return idx;
}

/** One sequence's sampler: its parameters and its own seeded generator (batch-independent). */
export interface RowSampler {
  params: SamplerParams;
  rng: Rng;
}

/**
 * The one place a batch row's next token is chosen from its logits row. Each row draws from its
 * own generator, so a seeded request gives the same tokens alone or in a batch.
 */
export function sampleRow(row: Float32Array, s: RowSampler): number {
  return sampleToken(row, s.params, s.rng);
}
