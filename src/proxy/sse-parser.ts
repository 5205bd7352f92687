// An incremental parser of server-sent events (the WHATWG EventSource rules) for the streams an
// OpenAI-compatible upstream sends. It takes network chunks as they come, cut anywhere: inside a
// line, between the CR and LF of a CRLF, inside a multi-byte UTF-8 character (a streaming
// TextDecoder holds the incomplete bytes until the rest arrives). It never sees the client's bytes
// change: the relay forwards the raw chunks and hands copies here, for scoring only.
//
// Lines end at LF, CR or CRLF. `:` starts a comment (keep-alives such as `: OPENROUTER
// PROCESSING`), `data:` may or may not have its one space (TGI sends `data:{`), several data lines
// join with LF, and a blank line dispatches the event. At the end of the stream a last event
// without its blank line is still dispatched: some servers (TGI without [DONE]) stop right after
// their last data line, and its tokens were relayed, so they are scored too.

export interface SseEvent {
  /** The `event:` field; 'message' when absent (EventSource's default). */
  event: string;
  data: string;
  id?: string;
}

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  /** The current line, while its end has not arrived. */
  private line = '';
  /** The previous chunk ended with CR: an LF at the start of the next one belongs to it. */
  private afterCr = false;
  private started = false;
  private data: string[] = [];
  private event = '';
  private id: string | undefined;
  /** Comment lines seen (keep-alives), for diagnostics. */
  comments = 0;

  /** Parses one network chunk; returns the events it completed. */
  push(chunk: Uint8Array): SseEvent[] {
    return this.feed(this.decoder.decode(chunk, { stream: true }));
  }

  /** The stream ended: flushes an incomplete character (as U+FFFD), line and event. */
  end(): SseEvent[] {
    const out = this.feed(this.decoder.decode());
    if (this.line !== '') {
      this.field(this.line);
      this.line = '';
    }
    this.dispatch(out);
    return out;
  }

  private feed(text: string): SseEvent[] {
    const out: SseEvent[] = [];
    if (!this.started && text.length > 0) {
      this.started = true;
      // A byte-order mark at the very start is not part of the first field name.
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let from = 0;
    if (this.afterCr && text.startsWith('\n')) from = 1;
    if (text.length > 0) this.afterCr = false;
    for (let i = from; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.line + text.slice(from, i);
      this.line = '';
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else this.afterCr = true;
      }
      from = i + 1;
      if (line === '') this.dispatch(out);
      else this.field(line);
    }
    this.line += text.slice(from);
    return out;
  }

  private field(line: string): void {
    if (line.startsWith(':')) {
      this.comments++;
      return;
    }
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') this.data.push(value);
    else if (name === 'event') this.event = value;
    else if (name === 'id' && !value.includes('\0')) this.id = value;
    // `retry` and unknown fields carry nothing a scorer needs.
  }

  private dispatch(out: SseEvent[]): void {
    if (this.data.length > 0) {
      out.push({
        event: this.event || 'message',
        data: this.data.join('\n'),
        ...(this.id !== undefined ? { id: this.id } : {}),
      });
    }
    this.data = [];
    this.event = '';
  }
}
