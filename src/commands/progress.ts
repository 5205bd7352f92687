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
