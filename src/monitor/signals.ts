// Per-position signals from one row of logits (vocab wide), computed in float64 in two passes:
//  pass 1: max logit m (for a stable softmax), argmax, and the top-n candidates;
//  pass 2: with e_v = exp(l_v - m) and S = sum e_v (so log Z = m + log S, log p_v = l_v - log Z):
//    entropy   H = -sum p log p = log S - (sum e_v (l_v - m)) / S
//    top-1     p_max = 1 / S
//    unigram KL(P_model || P_freq) = sum p (log p - log q) = -H - (sum e_v log q_v) / S
// This runs for every generated token on 50257-wide rows, so it allocates nothing per element.
// Note the KL direction: the paper's code computes KL(P_freq || P_model); we report the model's
// divergence from the unigram distribution (how far from "just predicting frequent tokens" it is).

export interface RowSignalOptions {
  /** Token whose log-probability to report; -1 or absent for none (tokenLogprob is then NaN). */
  token?: number;
  /** How many top (id, logprob) pairs to return, best first; 0 or absent for none. */
  topN?: number;
  /** log p_freq over the vocabulary (see frequency.ts); null/absent: unigramKl is null. */
  logPFreq?: ArrayLike<number> | null;
}

export interface RowSignals {
  /** Entropy of softmax(row) in nats (temperature 1, no sampling filters). */
  entropy: number;
  top1Prob: number;
  argmax: number;
  /** log sum exp(row): subtract from a logit to get its log-probability. */
  logZ: number;
  tokenLogprob: number;
  /** [tokenId, logprob] pairs, highest first. */
  top: [number, number][];
  unigramKl: number | null;
}

export function rowSignals(row: ArrayLike<number>, opts: RowSignalOptions = {}): RowSignals {
  const n = row.length;
  if (n === 0) throw new Error('rowSignals: empty logits row');
  const topN = Math.min(Math.max(0, Math.floor(opts.topN ?? 0)), n);
  const logQ = opts.logPFreq ?? null;
  if (logQ && logQ.length !== n) {
    throw new Error(`rowSignals: log p_freq has ${logQ.length} entries, logits have ${n}`);
  }

  let max = -Infinity;
  let argmax = 0;
  for (let v = 0; v < n; v++) {
    const l = row[v]!;
    if (l > max) {
      max = l;
      argmax = v;
    }
  }
  const top = topN > 0 ? topCandidates(row, topN) : null;

  let sumE = 0;
  let sumEL = 0;
  let sumELogQ = 0;
  for (let v = 0; v < n; v++) {
    const shifted = row[v]! - max;
    const e = Math.exp(shifted);
    // Masked (-Infinity) logits contribute nothing; guarding avoids 0 * -Infinity = NaN.
    if (e === 0) continue;
    sumE += e;
    sumEL += e * shifted;
    if (logQ) sumELogQ += e * logQ[v]!;
  }
  const logS = Math.log(sumE);
  const logZ = max + logS;
  const entropy = Math.max(0, logS - sumEL / sumE);
  const token = opts.token ?? -1;
  const tokenLogprob = token >= 0 && token < n ? row[token]! - logZ : NaN;

  return {
    entropy,
    top1Prob: 1 / sumE,
    argmax,
    logZ,
    tokenLogprob,
    top: top ? top.map(([id, l]) => [id, l - logZ] as [number, number]) : [],
    // Clamped at 0: KL is non-negative, a tiny negative value is rounding.
    unigramKl: logQ ? Math.max(0, -entropy - sumELogQ / sumE) : null,
  };
}

/**
 * The k largest logits as [id, logit] pairs, best first (ties: lower id first). A sorted buffer
 * of k entries with an early reject against its smallest element: O(V) for the usual small k.
 */
export function topCandidates(row: ArrayLike<number>, k: number): [number, number][] {
  const ids = new Int32Array(k);
  const vals = new Float64Array(k).fill(-Infinity);
  let filled = 0;
  for (let v = 0; v < row.length; v++) {
    const l = row[v]!;
    if (filled === k && !(l > vals[k - 1]!)) continue;
    // Insertion: shift smaller entries down one slot.
    let pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && vals[pos - 1]! < l) {
      vals[pos] = vals[pos - 1]!;
      ids[pos] = ids[pos - 1]!;
      pos--;
    }
    vals[pos] = l;
    ids[pos] = v;
  }
  const out: [number, number][] = [];
  for (let i = 0; i < filled; i++) out.push([ids[i]!, vals[i]!]);
  return out;
}
