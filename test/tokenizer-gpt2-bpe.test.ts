// The GPT-2 tokenizer.json rebuilt from js-tiktoken's ranks must be GPT-2's real tokenizer: the
// fixture gpt2-tiny-random ships Hugging Face's own tokenizer.json, which is the truth here.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildGpt2TokenizerJson } from '../src/model/gpt2-bpe.ts';
import { Tokenizer } from '../src/model/tokenizer.ts';
import { fixture } from './helpers/shared.ts';

type TokenizerJson = {
  added_tokens: unknown[];
  pre_tokenizer: unknown;
  decoder: unknown;
  model: { type: string; vocab: Record<string, number>; merges: (string | [string, string])[] };
};

const reference = JSON.parse(
  readFileSync(join(fixture('gpt2-tiny-random'), 'tokenizer.json'), 'utf8'),
) as TokenizerJson;
const built = buildGpt2TokenizerJson() as TokenizerJson;

const TEXTS = [
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine, we've won, you'd agree",
  'Ünïcödé: naïve café, Øresund, Ελληνικά, русский, עברית, العربية',
  '中文字符和日本語のテキスト、한국어',
  'emoji 😀🎉 family 👩‍👩‍👧 flag 🇯🇵 skin 👍🏽',
  '   three leading spaces, then\ttab\n\nnewlines\r\n  and trailing   ',
  'numbers 0 7 42 1234567890 3.14159 -2.5e-10 1,000,000',
  'def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n',
  'const x = {a: [1, 2, 3], "b": null}; // comment <tag attr="v">',
  '<|endoftext|> special token in the middle <|endoftext|>',
  '\u0000\u0001 control \u007f bytes \u00a0 nbsp \u200b zwsp',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  ' ',
  '',
];

describe('buildGpt2TokenizerJson', () => {
  it('has exactly the vocabulary of the real GPT-2 tokenizer', () => {
    expect(Object.keys(built.model.vocab)).toHaveLength(50257);
    expect(built.model.vocab).toEqual(reference.model.vocab);
  });

  it('derives the real merge list, in rank order', () => {
    const asString = (m: string | [string, string]) => (Array.isArray(m) ? m.join(' ') : m);
    expect(built.model.merges).toHaveLength(reference.model.merges.length);
    expect(built.model.merges.map(asString)).toEqual(reference.model.merges.map(asString));
  });

  it('has the same added token, pre-tokenizer and decoder', () => {
    expect(built.added_tokens).toEqual(reference.added_tokens);
    expect(built.pre_tokenizer).toEqual(reference.pre_tokenizer);
    expect(built.decoder).toEqual(reference.decoder);
  });

  it('encodes and decodes every test string exactly as the real tokenizer does', () => {
    const ours = Tokenizer.fromJson(built as never, {}, 'built');
    const real = Tokenizer.fromJson(reference as never, {}, 'reference');
    for (const text of TEXTS) {
      const ids = real.encode(text);
      expect(ours.encode(text), JSON.stringify(text)).toEqual(ids);
      expect(ours.decode(ids), JSON.stringify(text)).toBe(real.decode(ids));
    }
    // The special token is one id, not its characters.
    expect(ours.encode('<|endoftext|>')).toEqual([50256]);
  });

  it('is built once and shared', () => {
    expect(buildGpt2TokenizerJson()).toBe(built);
  });
});
