// Awkward network chunkings of a byte stream, for replaying recorded SSE bodies: every cut a
// recorder cannot keep and a real network makes, on purpose. A seeded generator so a failure
// reproduces.

/** Mulberry32: a tiny seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Cut points: inside every multi-byte UTF-8 character (after its lead byte), between the two
 * bytes of every blank line's line ends, just after every `data:`'s colon, plus random cuts
 * 1..64 bytes apart.
 */
export function awkwardCuts(bytes: Uint8Array, seed: number): number[] {
  const cuts = new Set<number>();
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b >= 0xc0) cuts.add(i + 1);
    if (b === 0x0a && bytes[i + 1] === 0x0a) cuts.add(i + 1);
    if (b === 0x0d && bytes[i + 1] === 0x0a) cuts.add(i + 1);
    if (b === 0x3a && bytes[i - 1] === 0x61 && bytes[i - 2] === 0x74) cuts.add(i + 1);
  }
  const r = rng(seed);
  for (let i = 1 + Math.floor(r() * 64); i < bytes.length; i += 1 + Math.floor(r() * 64)) cuts.add(i);
  return [...cuts].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
}

export function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let from = 0;
  for (const c of cuts) {
    out.push(bytes.subarray(from, c));
    from = c;
  }
  out.push(bytes.subarray(from));
  return out;
}

/** The same stream with CRLF line ends (no capture has them; the spec allows them). */
export function toCrlf(bytes: Uint8Array): Uint8Array {
  return Buffer.from(Buffer.from(bytes).toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
}
