// GPT-2's tokenizer.json, rebuilt offline from the BPE ranks that the js-tiktoken package ships, so
// the built-in demo model needs no download. tiktoken's "gpt2" ranks are GPT-2's token ids: ranks 0..255
// are the single bytes, rank 256 + m is the token created by merge number m, and <|endoftext|> is 50256.
//
// Two things tiktoken does not store have to be derived:
//  - the byte-level alphabet: Hugging Face's byte-level BPE writes each byte as a printable unicode
//    character (bytes that are printable Latin-1 map to themselves, the rest to U+0100 onwards);
//  - the merge list: tiktoken merges "the adjacent pair whose concatenation has the lowest rank", so the
//    merge that creates token t is found by running that procedure on t's bytes with only ranks below
//    t's own allowed: it stops with exactly two parts, and those are the merge's operands.

import gpt2Ranks from 'js-tiktoken/ranks/gpt2';
import { byteLevelAlphabet } from './tokenizer.ts';

export const GPT2_EOS_TOKEN = '<|endoftext|>';
export const GPT2_EOS_ID = 50256;

/** Token bytes in rank order, decoded from js-tiktoken's compact "! <offset> <base64>..." format. */
function rankedTokenBytes(): Buffer[] {
  const tokens: Buffer[] = [];
  for (const line of gpt2Ranks.bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, offsetStr, ...encoded] = line.split(' ');
    const offset = Number.parseInt(offsetStr!, 10);
    encoded.forEach((b64, i) => {
      tokens[offset + i] = Buffer.from(b64, 'base64');
    });
  }
  for (let r = 0; r < tokens.length; r++) {
    if (!tokens[r]) throw new Error(`js-tiktoken gpt2 ranks: rank ${r} is missing`);
  }
  return tokens;
}

/**
 * The two parts tiktoken's BPE leaves when it may only use merges ranked below maxRank.
 * Keys are latin1 strings (one char per byte), which makes byte sequences cheap Map keys.
 */
function splitBeforeRank(token: string, maxRank: number, rankOf: Map<string, number>): string[] {
  const parts = [...token];
  for (;;) {
    let best = -1;
    let bestRank = maxRank;
    for (let i = 0; i + 1 < parts.length; i++) {
      const r = rankOf.get(parts[i]! + parts[i + 1]!);
      if (r !== undefined && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) return parts;
    parts.splice(best, 2, parts[best]! + parts[best + 1]!);
  }
}

let cached: object | null = null;

/**
 * GPT-2's tokenizer.json (the Hugging Face `tokenizers` format): byte-level BPE with the vocab,
 * the merges in rank order, ByteLevel pre-tokenizer/post-processor/decoder and <|endoftext|> as the
 * one added special token. Built once per process and then shared: treat it as read-only.
 */
export function buildGpt2TokenizerJson(): object {
  if (cached) return cached;
  const tokens = rankedTokenBytes();
  const byteChar = byteLevelAlphabet();
  const toUnicode = (bytes: string) => {
    let s = '';
    for (let i = 0; i < bytes.length; i++) s += byteChar[bytes.charCodeAt(i)];
    return s;
  };

  const latin1 = tokens.map((b) => b.toString('latin1'));
  const rankOf = new Map<string, number>();
  latin1.forEach((t, r) => rankOf.set(t, r));

  const vocab: Record<string, number> = {};
  latin1.forEach((t, r) => {
    vocab[toUnicode(t)] = r;
  });
  if (GPT2_EOS_ID !== latin1.length) {
    throw new Error(
      `js-tiktoken gpt2 ranks: expected ${GPT2_EOS_ID} tokens before <|endoftext|>, got ${latin1.length}`,
    );
  }
  vocab[GPT2_EOS_TOKEN] = GPT2_EOS_ID;

  const merges: string[] = [];
  for (let r = 256; r < latin1.length; r++) {
    const parts = splitBeforeRank(latin1[r]!, r, rankOf);
    if (parts.length !== 2) {
      throw new Error(`js-tiktoken gpt2 ranks: token ${r} is not a merge of two lower-ranked tokens`);
    }
    merges.push(`${toUnicode(parts[0]!)} ${toUnicode(parts[1]!)}`);
  }

  // The flags are the ones Hugging Face's gpt2 tokenizer.json carries; only the pre-tokenizer's matter
  // for ids (no prefix space: "Hello" and " Hello" are different tokens).
  cached = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: GPT2_EOS_ID,
        content: GPT2_EOS_TOKEN,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return cached;
}

/** tokenizer_config.json matching the tokenizer above (what Hugging Face ships for gpt2). */
export function gpt2TokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: 'GPT2Tokenizer',
    bos_token: GPT2_EOS_TOKEN,
    eos_token: GPT2_EOS_TOKEN,
    unk_token: GPT2_EOS_TOKEN,
    model_max_length: 1024,
    add_prefix_space: false,
    add_bos_token: false,
    clean_up_tokenization_spaces: false,
  };
}
