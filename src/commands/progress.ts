// A progress bar on stderr for long steps; plain lines when stderr is not a terminal (CI logs).

export class ProgressBar {
  private lastStage = '';
  private lastLine = 0;
  constructor(private readonly out: NodeJS.WriteStream) {}

  update(stage: string, done: number, total: number): void {
    const tty = this.out.isTTY === true;
    if (tty) {
      const width = 30;
      const filled = total > 0 ? Math.round((done / total) * width) : width;
      this.out.write(`\r${stage.padEnd(22)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}  `);
      if (done >= total) this.out.write('\n');
      return;
    }
    // Not a terminal: one line per stage start and end, and at most one a second in between.
    const now = Date.now();
    if (stage !== this.lastStage || done >= total || now - this.lastLine > 1000) {
      this.out.write(`${stage}: ${done}/${total}\n`);
      this.lastStage = stage;
      this.lastLine = now;
    }
  }

  done(): void {
    this.lastStage = '';
  }
}

const SPIN = ['|', '/', '-', '\\'];

/**
 * Long first-start work whose size is not known up front (hashing the weights, building the
 * graph, the weight-only catalogue): on a terminal, a spinner with the elapsed seconds that turns
 * into "done in N s"; off a terminal, nothing (the caller's own log lines suffice). Work that
 * finishes within a quarter second (a warm cache) prints nothing at all.
 */
export async function withStage<T>(out: NodeJS.WriteStream, label: string, work: () => Promise<T>): Promise<T> {
  if (out.isTTY !== true) return work();
  const started = Date.now();
  let frame = 0;
  let shown = false;
  const draw = () => {
    shown = true;
    const s = ((Date.now() - started) / 1000).toFixed(1);
    out.write(`\r${label} ${SPIN[frame++ % SPIN.length]} ${s} s   `);
  };
  const timer = setInterval(draw, 250);
  try {
    const result = await work();
    if (shown) out.write(`\r${label} done in ${((Date.now() - started) / 1000).toFixed(1)} s   \n`);
    return result;
  } catch (e) {
    if (shown) out.write('\n');
    throw e;
  } finally {
    clearInterval(timer);
  }
}
