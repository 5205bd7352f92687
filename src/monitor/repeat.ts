// The induction setting: does the current position continue text that already occurred earlier in
// the context? repeat(end) = the length of the longest suffix of ids[0..end] (end inclusive) that
// also occurs starting at an earlier position (overlaps allowed); 0 when none. "the cat sat the cat"
// gives 0 0 0 1 2 at each position. Such a suffix also ends earlier, so equivalently it is the
// longest suffix of ids[0..end] that is a substring of ids[0..end-1].
//
// The tracker keeps a suffix automaton of the tokens seen so far. Appending token c runs the
// standard online construction, whose first loop walks the suffix links from the state of the
// whole text looking for a state with a transition on c: the first such state p holds the longest
// suffix s of the old text for which s + c already occurred, so the answer is len(p) + 1 (0 when
// no state has one). The answer comes for free with the construction: amortised O(1) per token
// (Map operations), at most 2n states, each with a Map of its outgoing transitions.

export class RepeatTracker {
  private len: number[] = [0];
  private link: number[] = [-1];
  private next: Map<number, number>[] = [new Map()];
  private last = 0;
  private count = 0;
  private current = 0;

  /** Tokens pushed so far. */
  get size(): number {
    return this.count;
  }

  /** repeat length at the last pushed position (0 before any push). */
  get repeat(): number {
    return this.current;
  }

  /** Appends one token and returns the repeat length at its position. */
  push(token: number): number {
    const cur = this.newState(this.len[this.last]! + 1, -1, new Map());
    let p = this.last;
    while (p !== -1 && !this.next[p]!.has(token)) {
      this.next[p]!.set(token, cur);
      p = this.link[p]!;
    }
    let repeat = 0;
    if (p === -1) {
      this.link[cur] = 0;
    } else {
      repeat = this.len[p]! + 1;
      const q = this.next[p]!.get(token)!;
      if (this.len[p]! + 1 === this.len[q]) {
        this.link[cur] = q;
      } else {
        // Split q: the clone takes the strings of q up to length len(p) + 1, with q's transitions.
        const clone = this.newState(this.len[p]! + 1, this.link[q]!, new Map(this.next[q]!));
        while (p !== -1 && this.next[p]!.get(token) === q) {
          this.next[p]!.set(token, clone);
          p = this.link[p]!;
        }
        this.link[q] = clone;
        this.link[cur] = clone;
      }
    }
    this.last = cur;
    this.count++;
    this.current = repeat;
    return repeat;
  }

  /** Pushes every token; returns the repeat length at each position. */
  pushAll(tokens: Iterable<number>): number[] {
    const out: number[] = [];
    for (const t of tokens) out.push(this.push(t));
    return out;
  }

  reset(): void {
    this.len = [0];
    this.link = [-1];
    this.next = [new Map()];
    this.last = 0;
    this.count = 0;
    this.current = 0;
  }

  private newState(len: number, link: number, edges: Map<number, number>): number {
    this.len.push(len);
    this.link.push(link);
    this.next.push(edges);
    return this.len.length - 1;
  }
}

/** repeat length at position `end` (inclusive) of ids; see the top of this file. */
export function repeatLength(ids: ArrayLike<number>, end: number): number {
  if (!Number.isInteger(end) || end < 0 || end >= ids.length) {
    throw new RangeError(`repeatLength: end ${end} is outside 0..${ids.length - 1}`);
  }
  const tracker = new RepeatTracker();
  let r = 0;
  for (let i = 0; i <= end; i++) r = tracker.push(ids[i]!);
  return r;
}
