// Synthetic unigram counts for the demo model's GPT-2 vocabulary, and the log-frequency direction
// of REFERENCE.md computed from them. No corpus is shipped, so counts follow Zipf's law over a proxy
// rank: GPT-2's BPE merge order (early merges joined the most frequent pairs of its training text,
// so a low merge rank roughly means a frequent token). The counts are labelled synthetic wherever
// they are written.

import { GPT2_EOS_ID } from '../model/gpt2-bpe.ts';

const TOTAL_TOKENS = 1e9;
const ZIPF_EXPONENT = 1;
// Shifts the Zipf curve so the most frequent token is not absurdly dominant (a Zipf-Mandelbrot offset).
const ZIPF_OFFSET = 2.7;
// GPT-2's first 94 ids are the printable ASCII characters "!".."~" (punctuation, digits, letters).
const PRINTABLE_ASCII_IDS = 94;

/** Where a token sits in the synthetic frequency order (0 = most frequent). */
function proxyRank(id: number): number {
  if (id === GPT2_EOS_ID) return 500; // one document boundary every few hundred tokens
  if (id < PRINTABLE_ASCII_IDS) return 20 + 5 * id; // single characters: common, punctuation first
  if (id < 256) return 20_000 + id; // other single bytes: pieces of rare multi-byte characters
  return id - 256; // merged tokens: merge rank
}

/** Integer counts per token id for a GPT-2-vocabulary model (50257 entries). */
export function syntheticUnigramCounts(vocabSize = GPT2_EOS_ID + 1): number[] {
  const counts = new Array<number>(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    counts[id] = Math.round(TOTAL_TOKENS / (proxyRank(id) + ZIPF_OFFSET) ** ZIPF_EXPONENT);
  }
  return counts;
}

/**
 * REFERENCE.md's frequency direction in vocabulary space: p = (count + 1) / sum(count + 1),
 * f = log p - mean(log p). (f / ||f|| is f_hat.)
 */
export function logFrequencyDirection(counts: ArrayLike<number>): Float64Array {
  const n = counts.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += counts[i]! + 1;
  const f = new Float64Array(n);
  let mean = 0;
  for (let i = 0; i < n; i++) {
    f[i] = Math.log((counts[i]! + 1) / total);
    mean += f[i]!;
  }
  mean /= n;
  for (let i = 0; i < n; i++) f[i] -= mean;
  return f;
}

export const UNIGRAM_DESCRIPTION =
  'SYNTHETIC counts, not measured on any corpus: count(id) = round(1e9 / (rank(id) + 2.7)), a Zipf law over a ' +
  'proxy rank. rank = BPE merge rank for merged tokens (GPT-2 merged frequent pairs first), 20 + 5 * id for the ' +
  'printable ASCII characters (ids 0-93), 20000 + id for other single bytes, 500 for <|endoftext|>. ' +
  "Good enough to plant and detect token-frequency neurons in the demo model; do not read them as GPT-2's real statistics.";

/** The unigram.json document written into the demo model folder. */
export function unigramJson(counts: number[]): Record<string, unknown> {
  return { tokenizer: 'gpt2', synthetic: true, description: UNIGRAM_DESCRIPTION, counts };
}
