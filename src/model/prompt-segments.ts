// Where a prompt made of template markup and user text may hold special tokens. Only markup
// (non-plain segments) can: a user who writes "</s><s>" must get the tokens of that text, not a
// real end of sequence and a new turn (vLLM and transformers encode chat messages this way).

/**
 * A piece of a prompt for Tokenizer.encodeSegments: `plain` text (what a user wrote) never
 * produces special tokens, even when it spells one; other text (a chat template's own markup) does.
 */
export interface PromptSegment {
  text: string;
  plain: boolean;
}

export interface SpecialMatcher {
  id: number;
  content: string;
  /** The added_tokens entry's whitespace handling: strip spaces before / after the token. */
  lstrip: boolean;
  rstrip: boolean;
}

/** The prompt cut into text to tokenize and special token ids, in order. */
export type PromptPiece = { text: string } | { id: number };

/**
 * Splits the concatenated segments at the special tokens that lie wholly in markup, longest
 * token first at each position, the way the tokenizer library splits added tokens.
 */
export function splitAtSpecialTokens(
  segments: readonly PromptSegment[],
  specials: SpecialMatcher[],
): PromptPiece[] {
  const text = segments.map((s) => s.text).join('');
  const ordered = [...specials].sort((a, b) => b.content.length - a.content.length);
  // For each position, the end of the plain range covering it (or -1).
  const plainRanges: [number, number][] = [];
  let at = 0;
  for (const s of segments) {
    if (s.plain && s.text.length > 0) plainRanges.push([at, at + s.text.length]);
    at += s.text.length;
  }
  const overlapsPlain = (from: number, to: number) => plainRanges.some(([a, b]) => from < b && to > a);
  const pieces: PromptPiece[] = [];
  let pieceStart = 0;
  let trimStart = false;
  const pushText = (end: number, trimEnd: boolean) => {
    let piece = text.slice(pieceStart, end);
    if (trimStart) piece = piece.trimStart();
    if (trimEnd) piece = piece.trimEnd();
    if (piece.length > 0) pieces.push({ text: piece });
  };
  if (ordered.length > 0) {
    for (let i = 0; i < text.length;) {
      const hit = ordered.find((t) => text.startsWith(t.content, i));
      if (!hit || overlapsPlain(i, i + hit.content.length)) {
        i++;
        continue;
      }
      pushText(i, hit.lstrip);
      pieces.push({ id: hit.id });
      i += hit.content.length;
      pieceStart = i;
      trimStart = hit.rstrip;
    }
  }
  pushText(text.length, false);
  return pieces;
}

/**
 * `ids` with the special tokens encode() adds around a text, read off a probe text: `full` is the
 * probe encoded with them, `bare` without, so full = prefix + bare + suffix.
 */
export function wrapLike(bare: readonly number[], full: readonly number[], ids: number[]): number[] {
  for (let start = 0; start + bare.length <= full.length; start++) {
    if (bare.every((id, k) => full[start + k] === id))
      return [...full.slice(0, start), ...ids, ...full.slice(start + bare.length)];
  }
  return ids;
}
