// Text <-> token ids for a model folder, over @huggingface/tokenizers (pure JS, offline) reading the
// folder's tokenizer.json and tokenizer_config.json. On top of the library this adds what the server
// needs: the config's add_bos_token / add_eos_token honoured the way transformers does, the text of a
// single token (for logprobs), and an incremental decoder for streaming.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ModelLoadError } from '../errors.ts';
import {
  splitAtSpecialTokens,
  wrapLike,
  type PromptSegment,
  type SpecialMatcher,
} from './prompt-segments.ts';

export type { PromptSegment } from './prompt-segments.ts';

export interface EncodeOptions {
  /** Add the BOS/EOS/template tokens the tokenizer adds around a text (default true). */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave out special tokens such as <s> or <|endoftext|> (default false). */
  skipSpecialTokens?: boolean;
}

export interface SpecialToken {
  id: number;
  content: string;
}

/** Turns generated ids into text deltas; see Tokenizer.createStreamDecoder. */
export interface StreamDecoder {
  /** Adds one generated id; returns the text it completes ('' while a character is still incomplete). */
  push(id: number): string;
  /** Returns whatever is held back (at the end of generation), even if it ends in an incomplete character. */
  flush(): string;
}

type Json = Record<string, unknown>;

const REPLACEMENT_CHAR = '\uFFFD';
// A byte-fallback token such as <0xE2> stands for one raw byte.
const BYTE_FALLBACK = /^<0x([0-9A-Fa-f]{2})>$/;
// Longest run of tokens that can leave one character incomplete (a 4-byte UTF-8 character written as
// four single-byte tokens): the left context the stream decoder keeps.
const MAX_INCOMPLETE_TOKENS = 4;
// Tokens the stream decoder waits for an incomplete character before it gives up and emits U+FFFD.
const MAX_PENDING_TOKENS = 16;

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  /** The chat template (Jinja) from tokenizer_config.json or chat_template.jinja; null when none. */
  readonly chatTemplate: string | null;
  /** Added tokens marked special (e.g. <s>, </s>, <|endoftext|>), by id. */
  readonly specialTokens: SpecialToken[];

  private readonly addBos: boolean | undefined;
  private readonly addEos: boolean | undefined;
  private readonly cleanUpSpaces: boolean;
  private readonly specialIds: Set<number>;
  private readonly tokenToBytes: (token: string) => Uint8Array;
  private readonly utf8 = new TextDecoder('utf-8');
  /** The same tokenizer without its special added tokens: it reads "</s>" as the text it is. */
  private readonly plainInner: HfTokenizer;
  /** Special tokens with the whitespace handling their added_tokens entry asks for. */
  private readonly specialMatch: SpecialMatcher[];
  /** The model folder, when loaded from one (a tokenizer worker thread loads its own copy). */
  dir: string | null = null;
  private longestToken: number | null = null;

  private constructor(
    private readonly inner: HfTokenizer,
    tokenizerJson: Json,
    config: Json,
    chatTemplate: string | null,
    plainInner: HfTokenizer,
  ) {
    this.plainInner = plainInner;
    this.vocabSize = inner.model!.vocab.length;
    this.specialTokens = [...inner.get_added_tokens_decoder().values()]
      .filter((t) => t.special)
      .map((t) => ({ id: t.id, content: t.content }))
      .sort((a, b) => a.id - b.id);
    this.specialIds = new Set(this.specialTokens.map((t) => t.id));
    this.bosTokenId = this.idOfConfigToken(config.bos_token);
    this.eosTokenId = this.idOfConfigToken(config.eos_token);
    this.addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : undefined;
    this.addEos = typeof config.add_eos_token === 'boolean' ? config.add_eos_token : undefined;
    // transformers now defaults this to false; true would rewrite " ." as "." and make a streamed text
    // differ from the decoded one.
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;
    this.chatTemplate = chatTemplate;
    this.tokenToBytes = tokenBytesReader(tokenizerJson);
    const added = (Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : []) as Json[];
    this.specialMatch = this.specialTokens.map((t) => {
      const entry = added.find((a) => a.id === t.id);
      return { ...t, lstrip: entry?.lstrip === true, rstrip: entry?.rstrip === true };
    });
  }

  /** Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json. */
  static load(dir: string): Tokenizer {
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file))
      throw new ModelLoadError(file, 'file not found (the model folder needs a tokenizer.json)');
    const tokenizerJson = readJsonObject(file);
    const configFile = join(dir, 'tokenizer_config.json');
    const config = existsSync(configFile) ? readJsonObject(configFile) : {};
    const tokenizer = Tokenizer.fromJson(tokenizerJson, config, file, chatTemplateOf(dir, config));
    tokenizer.dir = dir;
    return tokenizer;
  }

  /** Builds a tokenizer from already parsed files; `source` names the tokenizer.json in errors. */
  static fromJson(
    tokenizerJson: Json,
    config: Json = {},
    source = 'tokenizer.json',
    chatTemplate: string | null = null,
  ): Tokenizer {
    if (!tokenizerJson.model || typeof tokenizerJson.model !== 'object') {
      throw new ModelLoadError(source, 'not a Hugging Face tokenizer.json: it has no "model" section');
    }
    let inner: HfTokenizer;
    let plainInner: HfTokenizer;
    try {
      // The library reads optional sections as present-or-null; older files simply omit them.
      const complete = {
        normalizer: null,
        pre_tokenizer: null,
        post_processor: null,
        decoder: null,
        added_tokens: [],
        ...tokenizerJson,
      };
      inner = new HfTokenizer(complete, config);
      const added = complete.added_tokens as Json[];
      const ordinary = added.filter((t) => t.special !== true);
      plainInner =
        ordinary.length === added.length
          ? inner
          : new HfTokenizer({ ...complete, added_tokens: ordinary }, config);
    } catch (e) {
      throw new ModelLoadError(source, `cannot be used as a tokenizer (${(e as Error).message})`);
    }
    if (!inner.model || inner.model.vocab.length === 0)
      throw new ModelLoadError(source, 'the tokenizer has an empty vocabulary');
    return new Tokenizer(inner, tokenizerJson, config, chatTemplate, plainInner);
  }

  /**
   * Encodes a prompt made of template markup and user text. Special tokens are recognised only
   * in non-plain segments; a user who writes "</s><s>" gets the tokens of that text, never a real
   * end of sequence. Text without special tokens encodes exactly as encode() would encode the
   * concatenation: only the spans between special tokens are tokenized, as the library does.
   */
  encodeSegments(
    segments: readonly PromptSegment[],
    { addSpecialTokens = true }: EncodeOptions = {},
  ): number[] {
    const ids = splitAtSpecialTokens(segments, this.specialMatch).flatMap((p) =>
      'id' in p ? [p.id] : this.plainInner.encode(p.text, { add_special_tokens: false }).ids,
    );
    return addSpecialTokens ? this.withSpecialTokens(ids) : ids;
  }

  /** Upper bound on a token's UTF-8 bytes (3 per UTF-16 unit of the longest entry): a cheap scan. */
  maxTokenBytes(): number {
    if (this.longestToken === null) {
      let longest = 1;
      for (const piece of this.inner.model!.vocab)
        if (piece && piece.length > longest) longest = piece.length;
      this.longestToken = 3 * longest;
    }
    return this.longestToken;
  }

  /** ids (encoded without special tokens) with the BOS/EOS encode() would put around them. */
  private withSpecialTokens(ids: number[]): number[] {
    const probe = 'a';
    return wrapLike(this.inner.encode(probe, { add_special_tokens: false }).ids, this.encode(probe), ids);
  }

  encode(text: string, { addSpecialTokens = true }: EncodeOptions = {}): number[] {
    const ids = this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    if (!addSpecialTokens) return ids;
    // tokenizer.json's post-processor bakes in whether BOS/EOS are added; transformers lets
    // tokenizer_config.json override that (add_bos_token / add_eos_token), and so do we.
    const bos = this.bosTokenId;
    if (bos !== null && this.addBos !== undefined && (ids[0] === bos) !== this.addBos) {
      if (this.addBos) ids.unshift(bos);
      else if (this.encode(text, { addSpecialTokens: false })[0] !== bos) ids.shift();
    }
    const eos = this.eosTokenId;
    if (eos !== null && this.addEos !== undefined && (ids.at(-1) === eos) !== this.addEos) {
      if (this.addEos) ids.push(eos);
      else if (this.encode(text, { addSpecialTokens: false }).at(-1) !== eos) ids.pop();
    }
    return ids;
  }

  /** Ids the tokenizer does not know are skipped (as Hugging Face tokenizers do). */
  decode(ids: readonly number[], { skipSpecialTokens = false }: DecodeOptions = {}): string {
    const known = ids.filter(
      (id) =>
        Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.inner.id_to_token(id) !== undefined,
    );
    if (known.length === 0) return '';
    return this.inner.decode(known, {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /** The raw bytes one token stands for (a byte-fallback or byte-level piece may be part of a character). */
  tokenBytes(id: number): Uint8Array {
    const token = this.inner.id_to_token(id);
    if (token === undefined) return new Uint8Array(0);
    if (this.specialIds.has(id)) return new TextEncoder().encode(token);
    return this.tokenToBytes(token);
  }

  /**
   * The text of one token as it reads inside a text, leading space included (" moon", not "moon").
   * A token holding part of a multi-byte character yields U+FFFD for the incomplete part.
   */
  tokenText(id: number): string {
    return this.utf8.decode(this.tokenBytes(id));
  }

  /**
   * An incremental decoder: push(id) returns exactly the text that id adds. While the text ends in an
   * incomplete UTF-8 character (byte-level or byte-fallback pieces) it returns '' and holds the text
   * back, so the deltas concatenated (plus flush()) equal decode(promptIds + ids) minus decode(promptIds).
   * promptIds give context, so that a first token's leading space comes out as it would mid-text.
   * Special tokens are skipped unless skipSpecialTokens is false.
   */
  createStreamDecoder(
    promptIds: readonly number[] = [],
    { skipSpecialTokens = true }: DecodeOptions = {},
  ): StreamDecoder {
    const ids = [...promptIds];
    const decode = (from: number, to: number) => this.decode(ids.slice(from, to), { skipSpecialTokens });
    // Text is decoded over a short window instead of from the start: ids[prefix, read) is text already
    // emitted (or prompt), and decoding the window with and without the newer ids gives the delta.
    // Starting the window a few tokens back keeps leading-space handling (e.g. LLaMA's decoder strips
    // the first space of a text) identical to a full decode, at a constant cost per token.
    let read = ids.length;
    // A prompt that ends in part of a character: those tokens have produced no text yet, so re-read them.
    const oldestRereadable = Math.max(0, read - MAX_INCOMPLETE_TOKENS);
    while (read > oldestRereadable && decode(0, read).endsWith(REPLACEMENT_CHAR)) read--;
    let prefix = Math.max(0, read - MAX_INCOMPLETE_TOKENS);
    // Characters of decode(prefix, ids.length) past decode(prefix, read) already emitted: the complete
    // part of a text whose last character is still incomplete.
    let emittedPastRead = 0;

    const emit = (force: boolean): string => {
      if (read === ids.length) return '';
      const base = decode(prefix, read).length;
      const text = decode(prefix, ids.length);
      const complete = trimIncompleteTail(text);
      // Wait for an incomplete character's remaining bytes, but not indefinitely: a model can emit
      // bytes that never form a character, and the window must not grow without bound.
      if (complete.length < text.length && !force && ids.length - read <= MAX_PENDING_TOKENS) {
        const delta = complete.slice(base + emittedPastRead);
        emittedPastRead += delta.length;
        return delta;
      }
      const delta = text.slice(base + emittedPastRead);
      prefix = read;
      read = ids.length;
      emittedPastRead = 0;
      return delta;
    };

    return {
      push(id: number): string {
        ids.push(id);
        return emit(false);
      },
      flush(): string {
        return emit(true);
      },
    };
  }

  /** Throws when the tokenizer can produce ids that the model's embedding has no row for. */
  checkVocab(modelVocabSize: number, file: string): void {
    if (this.vocabSize > modelVocabSize) {
      const lastId = this.vocabSize - 1;
      throw new ModelLoadError(
        file,
        `the tokenizer has ids up to ${lastId} (${JSON.stringify(this.inner.id_to_token(lastId))}) but the model's ` +
          `vocabulary has only ${modelVocabSize} entries: tokenizer and weights do not belong together`,
      );
    }
  }

  private idOfConfigToken(token: unknown): number | null {
    // tokenizer_config.json writes a special token as a string or as {"content": "...", ...}.
    const content = typeof token === 'string' ? token : (token as { content?: unknown } | null)?.content;
    if (typeof content !== 'string') return null;
    return this.inner.token_to_id(content) ?? null;
  }
}

/** text without the U+FFFD run that an incomplete trailing UTF-8 sequence decodes to. */
function trimIncompleteTail(text: string): string {
  let end = text.length;
  while (end > 0 && text[end - 1] === REPLACEMENT_CHAR) end--;
  return text.slice(0, end);
}

function readJsonObject(file: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new ModelLoadError(file, 'expected a JSON object');
  return parsed as Json;
}

/** tokenizer_config.json's chat_template (a string, or a list of named templates), else chat_template.jinja. */
function chatTemplateOf(dir: string, config: Json): string | null {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t as { name?: unknown; template?: unknown }[];
    const chosen = named.find((x) => x.name === 'default') ?? named[0];
    if (typeof chosen?.template === 'string') return chosen.template;
  }
  const jinja = join(dir, 'chat_template.jinja');
  return existsSync(jinja) ? readFileSync(jinja, 'utf8') : null;
}

/**
 * How a vocabulary entry maps to bytes, read from the decoder section:
 *  - ByteLevel (GPT-2 style): every character stands for one byte through GPT-2's byte alphabet;
 *  - otherwise the piece is text: Replace / Metaspace decoders turn "▁" into a space, and with
 *    ByteFallback a piece "<0xNN>" is the single byte NN.
 */
function tokenBytesReader(tokenizerJson: Json): (token: string) => Uint8Array {
  const decoders = flattenDecoders(tokenizerJson.decoder);
  const encoder = new TextEncoder();
  if (decoders.some((d) => d.type === 'ByteLevel')) {
    const byteOf = new Map<string, number>();
    byteLevelAlphabet().forEach((ch, b) => byteOf.set(ch, b));
    return (token) => {
      const out: number[] = [];
      for (const ch of token) {
        const b = byteOf.get(ch);
        if (b === undefined) out.push(...encoder.encode(ch));
        else out.push(b);
      }
      return Uint8Array.from(out);
    };
  }
  const byteFallback = decoders.some((d) => d.type === 'ByteFallback');
  const replacements: [string, string][] = [];
  for (const d of decoders) {
    const pattern = (d.pattern as { String?: unknown } | undefined)?.String;
    if (d.type === 'Replace' && typeof pattern === 'string' && typeof d.content === 'string')
      replacements.push([pattern, d.content]);
    if (d.type === 'Metaspace')
      replacements.push([typeof d.replacement === 'string' ? d.replacement : '▁', ' ']);
  }
  return (token) => {
    const byte = byteFallback ? BYTE_FALLBACK.exec(token) : null;
    if (byte) return Uint8Array.of(Number.parseInt(byte[1]!, 16));
    let text = token;
    for (const [from, to] of replacements) text = text.split(from).join(to);
    return encoder.encode(text);
  };
}

function flattenDecoders(decoder: unknown): Json[] {
  if (!decoder || typeof decoder !== 'object') return [];
  const d = decoder as Json;
  if (d.type === 'Sequence' && Array.isArray(d.decoders)) return d.decoders.flatMap(flattenDecoders);
  return [d];
}

/** GPT-2's byte -> printable character table (bytes_to_unicode), shared by every byte-level BPE. */
export function byteLevelAlphabet(): string[] {
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(printable(b) ? b : next++);
  return out;
}
