// Histogram bucket boundaries, one list per signal, chosen for the range that signal really takes.
// Classic Prometheus histograms only answer quantile queries to bucket resolution, so the buckets are
// dense where decisions are made (confident tokens, interactive latencies) and sparse in the tails.
// Changing a list changes the exposed series: dashboards and recording rules keyed on `le` values move.

/** 1-2-5 steps per decade from 10^lo to 10^hi: even resolution on a log axis. */
export function decades125(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = lo; e <= hi; e++) {
    for (const m of [1, 2, 5]) {
      if (e === hi && m > 1) break;
      // toPrecision keeps 0.1*2 from printing as 0.20000000000000001 in the exposition.
      out.push(Number((m * 10 ** e).toPrecision(6)));
    }
  }
  return out;
}

/**
 * Next-token entropy in nats. The maximum is ln(V): 10.8 for GPT-2's 50,257 tokens, 11.9 for a
 * 152k vocabulary, 12.5 for 256k. Most generated tokens sit well under 1 nat, and the interesting
 * movements (an entropy neuron hedging on a repeat) are tenths of a nat there, so the low end is fine.
 */
export const ENTROPY_NATS = [
  0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
];

/** Top-1 probability lies in [0, 1]; resolution is highest near 1 where a confident model lives. */
export const TOP1_PROBABILITY = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999];

/**
 * Final norm scale sigma = sqrt(var(x)+eps) or sqrt(mean(x^2)+eps) of the last residual. It spans orders
 * of magnitude between models (tiny models ~1, GPT-2 small tens to hundreds, large LLaMAs thousands on
 * BOS-like positions), so a log grid from 0.01 to 10^5 keeps relative resolution constant.
 */
export const NORM_SCALE = decades125(-2, 5);

/**
 * KL(P_model || P_unigram) in nats. Zero when the model predicts the unigram distribution; a
 * confident prediction of a token of unigram probability p costs about -ln p, i.e. up to ~20 nats for
 * the rarest tokens of a large corpus. Dense below 5 where hedging towards frequent tokens shows.
 */
export const UNIGRAM_KL_NATS = [0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30];

/**
 * Last-layer MLP activations (the input of the down projection). GELU outputs are >= -0.17, SwiGLU
 * products are signed, and entropy neurons routinely fire in the tens. The grid is symmetric and
 * logarithmic in |a| so the same buckets serve every catalogued neuron and every architecture.
 */
export const NEURON_ACTIVATION = (() => {
  const magnitudes = [0.01, 0.03, 0.1, 0.3, 1, 2, 3, 5, 10, 20, 30, 50, 100];
  return [...magnitudes.map((m) => -m).reverse(), 0, ...magnitudes];
})();

/**
 * Time to first token in seconds: prefill of a short prompt on CPU takes milliseconds, a long prompt
 * behind a queue can take minutes. Includes queue wait (measured from when the request was admitted).
 */
export const TIME_TO_FIRST_TOKEN_S = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
];

/** Gap between consecutive tokens of one request: sub-millisecond for tiny models, seconds for big ones on CPU. */
export const INTER_TOKEN_LATENCY_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Whole request, admission to last token: from a one-token reply to a long generation (10 minutes). */
export const REQUEST_DURATION_S = [
  0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600,
];
