// out += A B^T for row-major float64 matrices, the one hot loop of the weight metrics (Gram matrices
// of the unembedding, and quadratic forms of every w_out). Plain JavaScript reaches about 2 GFLOP/s
// on it; this WebAssembly SIMD kernel works on two vocabulary columns per instruction (f64x2) and
// is several times faster, which is what brings GPT-2 small (768 x 50257) to seconds.
//
// The module is assembled here from its instructions (no toolchain, no binary blob). It exports
// its memory and one function:
//
//   rowTiles(a, b, bEnd, stride, width, out, outStride)        all byte addresses / byte counts
//     for each group of 4 B rows from b up to bEnd:
//       acc[r][q] = sum over c of A[r][c] * B[q][c]   for the 2 A rows at a, a + stride and the 4
//                                                     B rows; c advances 2 doubles per step
//       out[r][q] += lane0(acc[r][q]) + lane1(acc[r][q])
//       out moves 4 doubles right
//
// 8 f64x2 accumulators + 2 A values + 1 B value fit the 16 SIMD registers of x86-64 and arm64
// without spilling; each loaded pair is used 2 or 4 times. Callers keep rows a multiple of
// 2 doubles wide, B rows in groups of 4 and A rows in pairs, padding with zeros.

const I32 = 0x7f;
const V128 = 0x7b;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n) byte |= 0x80;
    out.push(byte);
  } while (n);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(byte & 0x40)) || (n === -1 && byte & 0x40)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const op = {
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32const: (n: number) => [0x41, ...sleb(n)],
  i32add: [0x6a],
  i32ltu: [0x49],
  loop: [0x03, 0x40],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  end: [0x0b],
  // memarg = alignment exponent, constant offset
  f64load: (offset: number) => [0x2b, 3, ...uleb(offset)],
  f64store: (offset: number) => [0x39, 3, ...uleb(offset)],
  f64add: [0xa0],
  v128load: [0xfd, ...uleb(0), 3, 0],
  v128zero: [0xfd, ...uleb(12), ...new Array(16).fill(0)],
  f64x2add: [0xfd, ...uleb(240)],
  f64x2mul: [0xfd, ...uleb(242)],
  f64x2lane: (lane: number) => [0xfd, ...uleb(33), lane],
};

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function name(s: string): number[] {
  return [...uleb(s.length), ...Buffer.from(s, 'ascii')];
}

function assemble(): Uint8Array<ArrayBuffer> {
  // Locals: params 0..6, then i32 a1 (7), b1..b3 (8..10), off (11), out1 (12); v128 acc 13..20, x0 x1 (21, 22), y (23).
  const [A, B, B_END, STRIDE, WIDTH, OUT, OUT_STRIDE] = [0, 1, 2, 3, 4, 5, 6];
  const A1 = 7;
  const BQ = [B, 8, 9, 10];
  const OFF = 11;
  const OUT1 = 12;
  const ACC = (r: number, q: number) => 13 + r * 4 + q;
  const X = [21, 22];
  const Y = 23;

  const code: number[] = [];
  code.push(...op.get(A), ...op.get(STRIDE), ...op.i32add, ...op.set(A1));
  code.push(...op.loop); // over groups of 4 B rows
  code.push(...op.get(B), ...op.get(STRIDE), ...op.i32add, ...op.tee(BQ[1]!));
  code.push(...op.get(STRIDE), ...op.i32add, ...op.tee(BQ[2]!));
  code.push(...op.get(STRIDE), ...op.i32add, ...op.set(BQ[3]!));
  for (let r = 0; r < 2; r++) for (let q = 0; q < 4; q++) code.push(...op.v128zero, ...op.set(ACC(r, q)));
  code.push(...op.i32const(0), ...op.set(OFF));
  code.push(...op.loop); // over column pairs
  code.push(...op.get(A), ...op.get(OFF), ...op.i32add, ...op.v128load, ...op.set(X[0]!));
  code.push(...op.get(A1), ...op.get(OFF), ...op.i32add, ...op.v128load, ...op.set(X[1]!));
  for (let q = 0; q < 4; q++) {
    code.push(...op.get(BQ[q]!), ...op.get(OFF), ...op.i32add, ...op.v128load, ...op.set(Y));
    for (let r = 0; r < 2; r++) {
      code.push(
        ...op.get(ACC(r, q)),
        ...op.get(X[r]!),
        ...op.get(Y),
        ...op.f64x2mul,
        ...op.f64x2add,
        ...op.set(ACC(r, q)),
      );
    }
  }
  code.push(
    ...op.get(OFF),
    ...op.i32const(16),
    ...op.i32add,
    ...op.tee(OFF),
    ...op.get(WIDTH),
    ...op.i32ltu,
    ...op.brIf(0),
  );
  code.push(...op.end);
  // out[r][q] += both lanes of acc[r][q]
  code.push(...op.get(OUT), ...op.get(OUT_STRIDE), ...op.i32add, ...op.set(OUT1));
  for (let r = 0; r < 2; r++) {
    const row = r === 0 ? OUT : OUT1;
    for (let q = 0; q < 4; q++) {
      code.push(...op.get(row), ...op.get(row), ...op.f64load(q * 8));
      code.push(...op.get(ACC(r, q)), ...op.f64x2lane(0), ...op.f64add);
      code.push(...op.get(ACC(r, q)), ...op.f64x2lane(1), ...op.f64add);
      code.push(...op.f64store(q * 8));
    }
  }
  code.push(...op.get(OUT), ...op.i32const(32), ...op.i32add, ...op.set(OUT));
  code.push(
    ...op.get(BQ[3]!),
    ...op.get(STRIDE),
    ...op.i32add,
    ...op.tee(B),
    ...op.get(B_END),
    ...op.i32ltu,
    ...op.brIf(0),
  );
  code.push(...op.end, ...op.end);

  const locals = [2, ...uleb(6), I32, ...uleb(11), V128];
  const body = [...locals, ...code];
  const header = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]; // "\0asm", version 1
  return new Uint8Array([
    ...header,
    ...section(1, [1, 0x60, 7, I32, I32, I32, I32, I32, I32, I32, 0]), // type: 7 x i32 -> ()
    ...section(3, [1, 0]), // one function of type 0
    ...section(5, [1, 0, 1]), // one memory, at least 1 page
    ...section(7, [2, ...name('rowTiles'), 0, 0, ...name('memory'), 2, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

let compiled: WebAssembly.Module | null = null;

type RowTiles = (
  a: number,
  b: number,
  bEnd: number,
  stride: number,
  width: number,
  out: number,
  outStride: number,
) => void;

/**
 * A SIMD workspace: one WebAssembly memory holding the caller's matrices. Allocate every region
 * up front (the memory grows once); views stay valid for the workspace's life.
 */
export class SimdWorkspace {
  private readonly memory: WebAssembly.Memory;
  private readonly rowTiles: RowTiles;
  private readonly regions: { offset: number; length: number }[] = [];

  /** `sizes` in doubles; region i starts on a 16-byte boundary. */
  constructor(sizes: readonly number[]) {
    compiled ??= new WebAssembly.Module(assemble());
    const instance = new WebAssembly.Instance(compiled);
    this.memory = instance.exports.memory as WebAssembly.Memory;
    this.rowTiles = instance.exports.rowTiles as RowTiles;
    let offset = 0;
    for (const length of sizes) {
      this.regions.push({ offset, length });
      offset += Math.ceil(length / 2) * 16;
    }
    if (offset > 2 ** 32 - 65536)
      throw new RangeError(`SimdWorkspace: ${offset} bytes exceed WebAssembly's 4 GiB`);
    const pages = Math.ceil(offset / 65536);
    const have = this.memory.buffer.byteLength / 65536;
    if (pages > have) this.memory.grow(pages - have);
  }

  /** Float64 view of region i (zero-filled at creation). */
  view(region: number): Float64Array {
    const r = this.regions[region]!;
    return new Float64Array(this.memory.buffer, r.offset, r.length);
  }

  /**
   * out += A B^T with A [aRows, width], B [bRows, width], out [aRows, outWidth] in regions
   * a, b, out (row-major, rows `width` / `outWidth` doubles apart). aRows must be even, bRows and
   * width multiples of 4 and 2. With `upperOnly` (A = B, a Gram matrix) tiles wholly below the
   * diagonal are skipped: read the result's upper triangle.
   */
  multiplyABt(
    a: number,
    aRows: number,
    b: number,
    bRows: number,
    width: number,
    out: number,
    outWidth: number,
    upperOnly = false,
  ): void {
    if (aRows % 2 || bRows % 4 || width % 2 || width === 0) {
      throw new Error(`multiplyABt: shape ${aRows}x${width} * (${bRows}x${width})^T is not padded to 2/4/2`);
    }
    const aBase = this.regions[a]!.offset;
    const bBase = this.regions[b]!.offset;
    const outBase = this.regions[out]!.offset;
    const stride = width * 8;
    const bEnd = bBase + bRows * stride;
    for (let i = 0; i < aRows; i += 2) {
      const j0 = upperOnly ? i - (i % 4) : 0;
      if (j0 >= bRows) continue;
      this.rowTiles(
        aBase + i * stride,
        bBase + j0 * stride,
        bEnd,
        stride,
        stride,
        outBase + (i * outWidth + j0) * 8,
        outWidth * 8,
      );
    }
  }
}
