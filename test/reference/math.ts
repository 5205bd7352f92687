// Plain float64 building blocks for the reference forward pass. Deliberately naive (nested
// loops over Float64Array, HF weight layouts as stored) so they share nothing with the graph
// builder they check.

export type Vec = Float64Array;

/** HF nn.Linear: y = W x + b with W stored [out, in]. */
export function linear(x: Vec, w: Vec, b: Vec | null, outF: number): Vec {
  const inF = x.length;
  const y = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let s = b ? b[o]! : 0;
    for (let i = 0; i < inF; i++) s += w[o * inF + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

/** GPT-2 Conv1D: y = x W + b with W stored [in, out]. */
export function conv1d(x: Vec, w: Vec, b: Vec, outF: number): Vec {
  const y = Float64Array.from(b);
  for (let i = 0; i < x.length; i++) {
    for (let o = 0; o < outF; o++) y[o]! += x[i]! * w[i * outF + o]!;
  }
  return y;
}

export function add(a: Vec, b: Vec): Vec {
  return a.map((v, i) => v + b[i]!);
}

/** LayerNorm; also returns sqrt(var + eps), the scale it divides by. */
export function layerNorm(x: Vec, gamma: Vec, beta: Vec, eps: number): { y: Vec; scale: number } {
  const n = x.length;
  let mean = 0;
  for (const v of x) mean += v;
  mean /= n;
  let variance = 0;
  for (const v of x) variance += (v - mean) ** 2;
  variance /= n;
  const scale = Math.sqrt(variance + eps);
  return { y: x.map((v, i) => ((v - mean) / scale) * gamma[i]! + beta[i]!), scale };
}

/** RMSNorm; also returns sqrt(mean(x^2) + eps). */
export function rmsNorm(x: Vec, gamma: Vec, eps: number): { y: Vec; scale: number } {
  let ms = 0;
  for (const v of x) ms += v * v;
  const scale = Math.sqrt(ms / x.length + eps);
  return { y: x.map((v, i) => (v / scale) * gamma[i]!), scale };
}

export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** erf to ~1e-14: Maclaurin series near 0, Laplace continued fraction for erfc further out. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 60; n++) {
      term *= (-x * x) / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  let t = ax;
  for (let k = 80; k >= 1; k--) t = ax + k / 2 / t;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / t;
  return Math.sign(x) * (1 - erfc);
}

/**
 * HF rotate_half RoPE, in place, on one head vector `v` (offset `at`, `headDim` long): pairs
 * (i, i + rotaryDim/2) for i < rotaryDim/2 turn by position * theta^(-2i/rotaryDim).
 */
export function rope(v: Vec, at: number, position: number, rotaryDim: number, theta: number): void {
  const half = rotaryDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = position * Math.pow(theta, (-2 * i) / rotaryDim);
    const a = v[at + i]!;
    const b = v[at + i + half]!;
    v[at + i] = a * Math.cos(angle) - b * Math.sin(angle);
    v[at + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
  }
}

/**
 * Causal multi-head attention over one sequence. q[t] holds nHeads heads, k[t] / v[t] hold
 * nKvHeads heads (query head h reads KV head floor(h / (nHeads / nKvHeads))). Query t sees keys
 * j <= t (and t - j < window when a window is given). Returns the concatenated heads per position.
 */
export function causalAttention(
  q: Vec[],
  k: Vec[],
  v: Vec[],
  nHeads: number,
  nKvHeads: number,
  headDim: number,
  window: number | null = null,
): Vec[] {
  const group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  return q.map((qt, t) => {
    const out = new Float64Array(nHeads * headDim);
    for (let h = 0; h < nHeads; h++) {
      const kvh = Math.floor(h / group);
      const keys: number[] = [];
      for (let j = 0; j <= t; j++) if (window === null || t - j < window) keys.push(j);
      const scores = keys.map((j) => {
        let s = 0;
        for (let i = 0; i < headDim; i++) s += qt[h * headDim + i]! * k[j]![kvh * headDim + i]!;
        return s * scale;
      });
      const max = Math.max(...scores);
      const weights = scores.map((s) => Math.exp(s - max));
      const z = weights.reduce((a, b) => a + b, 0);
      keys.forEach((j, n) => {
        for (let i = 0; i < headDim; i++)
          out[h * headDim + i]! += (weights[n]! / z) * v[j]![kvh * headDim + i]!;
      });
    }
    return out;
  });
}

/** logits = W_U x where the unembedding is stored HF-style [vocab, d_model]. */
export function unembed(x: Vec, lmHead: Vec, vocab: number): Vec {
  return linear(x, lmHead, null, vocab);
}
