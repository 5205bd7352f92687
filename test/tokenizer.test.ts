// Tokenizer behaviour against the fixtures' expected.json (ids computed by Hugging Face's reference
// tokenizers), js-tiktoken (an independent GPT-2 BPE implementation) and plain UTF-8 arithmetic.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getEncoding } from 'js-tiktoken';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../src/errors.ts';
import { Tokenizer } from '../src/model/tokenizer.ts';
import { fixture } from './helpers/shared.ts';

const aidreamsDir = fixture('aidreams260K');
const gpt2Dir = fixture('gpt2-tiny-random');
const aidreams = Tokenizer.load(aidreamsDir);
const gpt2 = Tokenizer.load(gpt2Dir);
const expectedOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8'));

// Multi-byte characters of every UTF-8 length, emoji split across tokens, whitespace runs, code.
const MIXED_TEXTS = [
  'The moon is bright tonight.',
  'héllo wörld — naïve café',
  '日本語のテキストと한국어',
  'emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷',
  '  leading   spaces\n\n\ttabs\r\n',
  'function f(x) { return x ** 2; } // 3.14159',
  'Ünïcödé ∑∫√ ≠ ≤ 1,234,567.89',
];

const scratch = mkdtempSync(join(tmpdir(), 'tokenizer-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function folderWith(name: string, files: Record<string, string>): string {
  const dir = join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
  return dir;
}

describe('encode', () => {
  it('gives the prompt ids of expected.json for aidreams260K (BOS from add_bos_token)', () => {
    const expected = expectedOf(aidreamsDir);
    expect(aidreams.encode(expected.prompt)).toEqual(expected.prompt_ids);
    expect(aidreams.encode(expected.prompt, { addSpecialTokens: false })).toEqual(
      expected.prompt_ids.slice(1),
    );
  });

  it('honours tokenizer_config add_bos_token in both directions', () => {
    const json = readJson(join(aidreamsDir, 'tokenizer.json'));
    const config = readJson(join(aidreamsDir, 'tokenizer_config.json'));
    const ids = aidreams.encode('The moon', { addSpecialTokens: false });

    // The post-processor adds <s>, the config says not to: no BOS.
    const noBos = Tokenizer.fromJson(json, { ...config, add_bos_token: false });
    expect(noBos.encode('The moon')).toEqual(ids);

    // No post-processor at all, the config asks for BOS: it is added.
    const bare = Tokenizer.fromJson({ ...json, post_processor: null }, { ...config, add_bos_token: true });
    expect(bare.encode('The moon')).toEqual([1, ...ids]);
    expect(
      Tokenizer.fromJson(
        { ...json, post_processor: null },
        { ...config, add_bos_token: true, add_eos_token: true },
      ).encode('The moon'),
    ).toEqual([1, ...ids, 2]);
  });

  it('decodes and re-encodes the GPT-2 fixture prompt ids', () => {
    const { prompt_ids: ids } = expectedOf(gpt2Dir);
    const text = gpt2.decode(ids);
    expect(text.length).toBeGreaterThan(0);
    expect(gpt2.encode(text)).toEqual(ids);
  });

  it('matches js-tiktoken (an independent BPE implementation) on GPT-2 text', () => {
    const tiktoken = getEncoding('gpt2');
    for (const text of MIXED_TEXTS) expect(gpt2.encode(text), text).toEqual(tiktoken.encode(text));
  });

  it('round-trips mixed text through decode', () => {
    for (const text of MIXED_TEXTS) {
      expect(gpt2.decode(gpt2.encode(text))).toBe(text);
      expect(aidreams.decode(aidreams.encode(text), { skipSpecialTokens: true })).toBe(text);
    }
  });
});

describe('metadata', () => {
  it('reports vocabulary size, BOS/EOS and special tokens', () => {
    expect(aidreams.vocabSize).toBe(512);
    expect(aidreams.bosTokenId).toBe(1);
    expect(aidreams.eosTokenId).toBe(2);
    expect(aidreams.specialTokens).toEqual([
      { id: 0, content: '<unk>' },
      { id: 1, content: '<s>' },
      { id: 2, content: '</s>' },
    ]);
    expect(gpt2.vocabSize).toBe(50257);
    expect(gpt2.bosTokenId).toBe(50256);
    expect(gpt2.eosTokenId).toBe(50256);
    expect(gpt2.specialTokens).toEqual([{ id: 50256, content: '<|endoftext|>' }]);
  });

  it('skips special tokens on request', () => {
    const ids = aidreams.encode('The moon');
    expect(aidreams.decode(ids)).toBe('<s> The moon');
    expect(aidreams.decode(ids, { skipSpecialTokens: true })).toBe('The moon');
    expect(gpt2.decode([...gpt2.encode('Hi'), 50256], { skipSpecialTokens: true })).toBe('Hi');
  });

  it('reads the chat template from tokenizer_config.json or chat_template.jinja', () => {
    expect(aidreams.chatTemplate).toBeNull();
    const tokenizerJson = readFileSync(join(aidreamsDir, 'tokenizer.json'), 'utf8');
    const inConfig = folderWith('template-config', {
      'tokenizer.json': tokenizerJson,
      'tokenizer_config.json': JSON.stringify({ chat_template: '{{ messages[0].content }}' }),
    });
    expect(Tokenizer.load(inConfig).chatTemplate).toBe('{{ messages[0].content }}');
    const inFile = folderWith('template-file', {
      'tokenizer.json': tokenizerJson,
      'chat_template.jinja': '{{ x }}',
    });
    expect(Tokenizer.load(inFile).chatTemplate).toBe('{{ x }}');
  });
});

describe('tokenText and tokenBytes', () => {
  it('give the text a token stands for, leading space included', () => {
    expect(gpt2.tokenText(gpt2.encode(' moon')[0]!)).toBe(' moon');
    expect(aidreams.tokenText(aidreams.encode('The moon', { addSpecialTokens: false })[2]!)).toBe(' m');
    expect(aidreams.tokenText(1)).toBe('<s>');
    expect(gpt2.tokenText(50256)).toBe('<|endoftext|>');
  });

  it('concatenate, token by token, to the UTF-8 bytes of the text', () => {
    for (const text of MIXED_TEXTS) {
      const concat = (t: Tokenizer, ids: number[]) => Buffer.concat(ids.map((id) => t.tokenBytes(id)));
      expect(concat(gpt2, gpt2.encode(text)).toString('hex'), text).toBe(Buffer.from(text).toString('hex'));
      // The LLaMA normalizer prepends "▁", which reads as one leading space.
      const ids = aidreams.encode(text, { addSpecialTokens: false });
      expect(concat(aidreams, ids).toString('hex'), text).toBe(Buffer.from(' ' + text).toString('hex'));
    }
  });

  it('give single bytes for byte-fallback pieces', () => {
    const ids = aidreams.encode('日', { addSpecialTokens: false });
    const bytes = ids.flatMap((id) => [...aidreams.tokenBytes(id)]);
    expect(bytes).toEqual([0x20, 0xe6, 0x97, 0xa5]);
  });
});

describe('stream decoder', () => {
  const cases: [string, Tokenizer][] = [
    ['gpt2', gpt2],
    ['aidreams260K', aidreams],
  ];

  it.each(cases)('%s: deltas concatenate to the full decode and never split a character', (_name, tok) => {
    for (const text of MIXED_TEXTS) {
      const ids = tok.encode(text);
      const stream = tok.createStreamDecoder();
      const deltas = ids.map((id) => stream.push(id));
      deltas.push(stream.flush());
      expect(deltas.join(''), text).toBe(tok.decode(ids, { skipSpecialTokens: true }));
      for (const d of deltas) expect(d).not.toContain('\uFFFD');
    }
  });

  it.each(cases)('%s: with a prompt, deltas are exactly the text the generated ids add', (_name, tok) => {
    for (const text of MIXED_TEXTS) {
      const ids = tok.encode(text);
      for (const cut of [1, 2, 3, Math.floor(ids.length / 2), ids.length - 1]) {
        if (cut <= 0 || cut >= ids.length) continue;
        const prompt = ids.slice(0, cut);
        const stream = tok.createStreamDecoder(prompt);
        let out = '';
        for (const id of ids.slice(cut)) out += stream.push(id);
        out += stream.flush();
        const full = tok.decode(ids, { skipSpecialTokens: true });
        const promptText = tok.decode(prompt, { skipSpecialTokens: true });
        if (promptText.endsWith('\uFFFD')) {
          // The prompt stops inside a character: the stream re-reads those bytes.
          expect(full.endsWith(out), `${text} cut ${cut}`).toBe(true);
          expect(out).not.toContain('\uFFFD');
        } else {
          expect(promptText + out, `${text} cut ${cut}`).toBe(full);
        }
      }
    }
  });

  it('holds back the bytes of a character until it is complete', () => {
    const prompt = aidreams.encode('Look');
    const ids = aidreams.encode('😀', { addSpecialTokens: false }); // "▁" then four <0x..> pieces
    expect(ids).toHaveLength(5);
    const stream = aidreams.createStreamDecoder(prompt);
    const deltas = ids.map((id) => stream.push(id));
    expect(deltas).toEqual([' ', '', '', '', '😀']);
  });

  it('gives up waiting on bytes that never form a character', () => {
    const stray = aidreams.encode('😀', { addSpecialTokens: false }).slice(1, 2); // a lone <0xF0>
    const stream = aidreams.createStreamDecoder();
    let out = '';
    for (let i = 0; i < 40; i++) out += stream.push(stray[0]!);
    out += stream.flush();
    expect(out.length).toBeGreaterThan(0);
    expect([...out].every((c) => c === '\uFFFD')).toBe(true);
  });
});

describe('errors', () => {
  it('checkVocab rejects a tokenizer with ids beyond the model vocabulary', () => {
    expect(() => gpt2.checkVocab(50257, 'model.safetensors')).not.toThrow();
    expect(() => gpt2.checkVocab(50304, 'model.safetensors')).not.toThrow();
    expect(() => gpt2.checkVocab(50000, '/m/model.safetensors')).toThrow(ModelLoadError);
    expect(() => gpt2.checkVocab(50000, '/m/model.safetensors')).toThrow(
      /\/m\/model\.safetensors: .*50256.*50000/,
    );
  });

  it('a missing or corrupt tokenizer.json is a ModelLoadError naming the file', () => {
    const empty = folderWith('empty', { 'README.md': 'no tokenizer' });
    expect(() => Tokenizer.load(empty)).toThrow(ModelLoadError);
    expect(() => Tokenizer.load(empty)).toThrow(join(empty, 'tokenizer.json'));

    const corrupt = folderWith('corrupt', { 'tokenizer.json': '{"model": {"type": "BPE", "vocab": {' });
    expect(() => Tokenizer.load(corrupt)).toThrow(ModelLoadError);
    expect(() => Tokenizer.load(corrupt)).toThrow(join(corrupt, 'tokenizer.json'));

    const notTokenizer = folderWith('not-tokenizer', { 'tokenizer.json': '{"hello": 1}' });
    expect(() => Tokenizer.load(notTokenizer)).toThrow(/tokenizer\.json: .*"model"/);

    const badConfig = folderWith('bad-config', {
      'tokenizer.json': readFileSync(join(gpt2Dir, 'tokenizer.json'), 'utf8'),
      'tokenizer_config.json': 'not json',
    });
    expect(() => Tokenizer.load(badConfig)).toThrow(join(badConfig, 'tokenizer_config.json'));
  });
});
