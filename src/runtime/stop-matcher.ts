// OpenAI stop-sequence semantics for streamed text: the completion ends just before the first
// occurrence of any stop string, and the stop string itself is never sent. While the tail of the
// text could still become a stop string, it is held back rather than streamed and then retracted.
// Before min_tokens the matcher is not armed (vLLM skips its stop-string check until then): text
// passes, except a tail that could still grow into a stop string completing once it is armed.

export class StopMatcher {
  private pending = '';
  constructor(private readonly stops: string[]) {}

  /**
   * Adds newly decoded text; returns the text safe to emit and whether a stop string was hit.
   * `armed` false (before min_tokens): no stop string can end the completion yet.
   */
  push(delta: string, armed = true): { emit: string; stopped: boolean } {
    this.pending += delta;
    if (this.stops.length === 0) return this.take(this.pending.length, false);
    if (!armed) return this.take(this.pending.length - this.heldBack(), false);
    let first = -1;
    for (const s of this.stops) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      const emit = this.pending.slice(0, first);
      this.pending = '';
      return { emit, stopped: true };
    }
    return this.take(this.pending.length - this.heldBack(), false);
  }

  /** Text still held back (the generation ended for another reason, so it is final). */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }

  /** Length of the longest suffix of pending that is a proper prefix of some stop string. */
  private heldBack(): number {
    let best = 0;
    for (const s of this.stops) {
      const max = Math.min(s.length - 1, this.pending.length);
      for (let len = max; len > best; len--) {
        if (this.pending.endsWith(s.slice(0, len))) {
          best = len;
          break;
        }
      }
    }
    return best;
  }

  private take(n: number, stopped: boolean): { emit: string; stopped: boolean } {
    const emit = this.pending.slice(0, n);
    this.pending = this.pending.slice(n);
    return { emit, stopped };
  }
}
