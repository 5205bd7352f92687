// Turns what an upstream streams for one choice into local token ids to score. Three sources, best
// first: the upstream's own token ids (vLLM's token_ids), its token strings/bytes (logprobs), and
// failing those its text, re-tokenized with the local tokenizer. When the upstream's tokens have
// no local counterpart the tokenizers disagree: that is reported once (onMismatch) and the rest of
// the choice is scored from its re-tokenized text.
//
// Re-tokenizing a stream must give the ids that tokenizing the whole text would: a token can only
// be committed once no later text can change it. Text is cut at word starts (a whitespace character
// that follows a non-whitespace one), where byte-level BPE pre-tokenizers (GPT-2's and its
// descendants') split anyway. Tokenizers that are not segment-safe there (SentencePiece's dummy
// prefix turns " b" alone into "▁" "▁b") re-encode the text committed so far plus the new segment
// and keep what extends the committed ids.

import type { ChoicePiece, UpstreamToken } from './openai-stream.ts';

export interface AlignTokenizer {
  encode(text: string, opts: { addSpecialTokens: boolean }): number[];
  tokenBytes(id: number): Uint8Array;
  readonly vocabSize: number;
}

export interface AlignedToken {
  id: number;
  /** The upstream's description of this token, when it gave one. */
  upstream?: UpstreamToken;
}

const hex = (b: Uint8Array | number[]) => Buffer.from(b).toString('hex');
const utf8 = new TextEncoder();
const ANCHOR = '\n';

/** Reverse lookup from a token's bytes to its id, built once per tokenizer. */
export class TokenIndex {
  private byBytes: Map<string, number[]> | null = null;
  readonly segmentSafe: boolean;
  private anchor: number[] | null = null;

  constructor(private readonly tok: AlignTokenizer) {
    const e = (s: string) => tok.encode(s, { addSpecialTokens: false });
    const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
    this.segmentSafe = ['a b', 'x. y', 'one  two'].every((s) => {
      const cut = s.lastIndexOf(' ', s.length - 2);
      return same(e(s), [...e(s.slice(0, cut)), ...e(s.slice(cut))]);
    });
  }

  bytes(id: number): Uint8Array {
    return this.tok.tokenBytes(id);
  }

  encode(text: string): number[] {
    return text === '' ? [] : this.tok.encode(text, { addSpecialTokens: false });
  }

  /**
   * The ids of `text` as the continuation of a sequence, not the start of a document: for
   * tokenizers that prefix a document with a dummy space, the text is encoded after an anchor
   * ("\n", which no merge crosses) whose own ids are then dropped.
   */
  encodeContinuation(text: string): number[] {
    if (this.segmentSafe || text === '') return this.encode(text);
    this.anchor ??= this.encode(ANCHOR);
    const all = this.encode(ANCHOR + text);
    const a = this.anchor;
    return a.every((id, i) => all[i] === id) ? all.slice(a.length) : this.encode(text);
  }

  /** The local id of an upstream token, or undefined when no local token has its bytes. */
  idOf(t: UpstreamToken): number | undefined {
    if (t.id !== undefined)
      return Number.isInteger(t.id) && t.id >= 0 && t.id < this.tok.vocabSize ? t.id : undefined;
    const bytes = t.bytes ?? (t.token !== undefined ? utf8.encode(t.token) : undefined);
    if (!bytes) return undefined;
    const ids = this.index().get(hex(bytes));
    if (!ids) return undefined;
    if (ids.length === 1 || t.token === undefined) return ids[0];
    // Several ids spell the same bytes (a byte-fallback token beside a merged one): take the one
    // the tokenizer itself produces for that text (a SentencePiece dummy prefix may come before
    // it), else the last: byte-fallback tokens come first in the vocabularies that have them.
    const own = this.encode(t.token);
    return ids.find((id) => own.includes(id)) ?? ids[ids.length - 1];
  }

  private index(): Map<string, number[]> {
    if (this.byBytes) return this.byBytes;
    const m = new Map<string, number[]>();
    for (let id = 0; id < this.tok.vocabSize; id++) {
      const k = hex(this.tok.tokenBytes(id));
      const list = m.get(k);
      if (list) list.push(id);
      else m.set(k, [id]);
    }
    return (this.byBytes = m);
  }
}

/** The last word start of `s` (a whitespace character after a non-whitespace one), or 0. */
function lastCut(s: string): number {
  for (let i = s.length - 1; i > 0; i--) {
    if (/\s/.test(s[i]!) && !/\s/.test(s[i - 1]!)) return i;
  }
  return 0;
}

export class ChoiceAligner {
  private mode: 'unknown' | 'tokens' | 'text' = 'unknown';
  /** Everything the upstream streamed for this choice. */
  private all = '';
  /** Text covered by committed ids (token mode: their bytes; text mode: the committed segments). */
  private covered = '';
  private coveredBytes: number[] = [];
  private pending = '';
  /** Ids committed in text mode (the prefix a non-segment-safe tokenizer must reproduce). */
  private textIds: number[] = [];
  private textBase = '';

  constructor(
    private readonly index: TokenIndex,
    private readonly onMismatch: (detail: string) => void,
  ) {}

  /** The completion text streamed so far. */
  get text(): string {
    return this.all;
  }

  push(piece: ChoicePiece): AlignedToken[] {
    this.all += piece.text;
    if (this.mode !== 'text' && piece.tokens && piece.tokens.length > 0) {
      const out: AlignedToken[] = [];
      for (const t of piece.tokens) {
        const id = this.index.idOf(t);
        if (id === undefined) {
          this.onMismatch(
            `upstream token ${JSON.stringify(t.token ?? t.bytes ?? t.id)} has no local counterpart`,
          );
          return [...out, ...this.toText()];
        }
        this.coveredBytes.push(...this.index.bytes(id));
        out.push({ id, upstream: t });
      }
      this.mode = 'tokens';
      this.covered = Buffer.from(this.coveredBytes).toString('utf8');
      return out;
    }
    if (piece.text === '') return [];
    if (this.mode === 'tokens') return this.toText();
    this.mode = 'text';
    this.pending += piece.text;
    return this.cutPending(false);
  }

  /** The stream ended: what text remains is complete, so all of it is committed. */
  finish(): AlignedToken[] {
    return this.mode === 'text' ? this.cutPending(true) : [];
  }

  /** Switches to re-tokenizing: the text the committed tokens do not cover becomes pending. */
  private toText(): AlignedToken[] {
    this.mode = 'text';
    this.pending = this.all.startsWith(this.covered) ? this.all.slice(this.covered.length) : '';
    this.textBase = this.covered;
    return this.cutPending(false);
  }

  private cutPending(final: boolean): AlignedToken[] {
    const cut = final ? this.pending.length : lastCut(this.pending);
    if (cut === 0) return [];
    const segment = this.pending.slice(0, cut);
    this.pending = this.pending.slice(cut);
    return this.encodeSegment(segment).map((id) => ({ id }));
  }

  private encodeSegment(segment: string): number[] {
    if (this.index.segmentSafe) return this.index.encode(segment);
    const before = this.textIds;
    const all = this.index.encodeContinuation(this.textBase + segment);
    const extends_ = before.every((id, i) => all[i] === id);
    const ids = extends_ ? all.slice(before.length) : this.index.encodeContinuation(segment);
    this.textIds = extends_ ? all : [...before, ...ids];
    this.textBase += segment;
    return ids;
  }
}
