// Whether the command's standard output is still read. `generate --json | head` closes the pipe
// early: cli.ts aborts this on EPIPE, and commands that stream stop and shut down cleanly.

export const outputClosed = new AbortController();
