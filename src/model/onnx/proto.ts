// A small protobuf codec for the subset of onnx.proto this project reads and writes.
//
// Why not a generated codec: we need (a) zero-copy views of multi-hundred-megabyte raw_data
// fields, (b) encoding that streams large tensors to disk without concatenating them, and
// (c) lossless round-trips of exports we only partly understand. Every message keeps the
// fields it does not model in `unknown`, and they are written back verbatim.

export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

export const AttrType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

/** A field we do not model, kept as its encoded bytes (tag included). */
export interface UnknownField {
  bytes: Uint8Array;
}

export interface StringEntry {
  key: string;
  value: string;
}

export interface TensorProto {
  name: string;
  dataType: number;
  dims: number[];
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  externalData?: StringEntry[];
  /** 1 = EXTERNAL */
  dataLocation?: number;
  unknown?: UnknownField[];
}

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  unknown?: UnknownField[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain: string;
  attribute: AttributeProto[];
  unknown?: UnknownField[];
}

export interface Dim {
  value?: number;
  param?: string;
}

export interface ValueInfoProto {
  name: string;
  /** Tensor element type; undefined when the value info has no tensor type. */
  elemType?: number;
  /** Shape; undefined when unknown rank. */
  shape?: Dim[];
  unknown?: UnknownField[];
}

export interface GraphProto {
  name: string;
  node: NodeProto[];
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  unknown?: UnknownField[];
}

export interface OpsetId {
  domain: string;
  version: number;
}

export interface ModelProto {
  irVersion: number;
  opsetImport: OpsetId[];
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  metadataProps: StringEntry[];
  unknown?: UnknownField[];
}

// ---------------------------------------------------------------- decoding

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

export class ProtoError extends Error {}

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }
  done(): boolean {
    return this.pos >= this.end;
  }
  varint(): number {
    // Fast path for values below 2^28; BigInt for the rest (int64 negatives take 10 bytes).
    let result = 0;
    let shift = 0;
    const start = this.pos;
    while (this.pos < this.end) {
      const b = this.buf[this.pos++]!;
      if (shift < 28) {
        result |= (b & 0x7f) << shift;
        if (b < 0x80) return result >>> 0;
        shift += 7;
        continue;
      }
      // Slow path.
      this.pos = start;
      return this.varintBig();
    }
    throw new ProtoError('truncated varint');
  }
  private varintBig(): number {
    let result = 0n;
    let shift = 0n;
    while (this.pos < this.end) {
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return Number(BigInt.asIntN(64, result));
      shift += 7n;
      if (shift > 70n) break;
    }
    throw new ProtoError('malformed varint');
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (len < 0 || this.pos + len > this.end) throw new ProtoError('length-delimited field runs past the end');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  string(): string {
    return textDecoder.decode(this.bytes());
  }
  float32(): number {
    if (this.pos + 4 > this.end) throw new ProtoError('truncated fixed32');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  float64(): number {
    if (this.pos + 8 > this.end) throw new ProtoError('truncated fixed64');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 8).getFloat64(0, true);
    this.pos += 8;
    return v;
  }
  /** Skips the value of a field with the given wire type and returns the whole field's bytes. */
  skip(tagStart: number, wire: number): UnknownField {
    switch (wire) {
      case 0:
        this.varint();
        break;
      case 1:
        this.pos += 8;
        break;
      case 2: {
        const len = this.varint();
        this.pos += len;
        break;
      }
      case 5:
        this.pos += 4;
        break;
      default:
        throw new ProtoError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new ProtoError('field runs past the end');
    return { bytes: this.buf.subarray(tagStart, this.pos) };
  }
}

type FieldHandler = (r: Reader, field: number, wire: number) => boolean;

function readMessage(buf: Uint8Array, handle: FieldHandler): UnknownField[] {
  const r = new Reader(buf);
  const unknown: UnknownField[] = [];
  while (!r.done()) {
    const tagStart = r.pos;
    const tag = r.varint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (!handle(r, field, wire)) unknown.push(r.skip(tagStart, wire));
  }
  return unknown;
}

function packedOrSingle(r: Reader, wire: number, out: number[], kind: 'varint' | 'f32' | 'f64'): void {
  const one = (rr: Reader) => (kind === 'varint' ? rr.varint() : kind === 'f32' ? rr.float32() : rr.float64());
  if (wire === 2) {
    const b = r.bytes();
    const sub = new Reader(b);
    while (!sub.done()) out.push(one(sub));
  } else {
    out.push(one(r));
  }
}

function decodeStringEntry(buf: Uint8Array): StringEntry {
  const e: StringEntry = { key: '', value: '' };
  readMessage(buf, (r, f) => {
    if (f === 1) e.key = r.string();
    else if (f === 2) e.value = r.string();
    else return false;
    return true;
  });
  return e;
}

export function decodeTensor(buf: Uint8Array): TensorProto {
  const t: TensorProto = { name: '', dataType: 0, dims: [] };
  t.unknown = readMessage(buf, (r, f, w) => {
    switch (f) {
      case 1:
        packedOrSingle(r, w, t.dims, 'varint');
        return true;
      case 2:
        t.dataType = r.varint();
        return true;
      case 4:
        packedOrSingle(r, w, (t.floatData ??= []), 'f32');
        return true;
      case 5:
        packedOrSingle(r, w, (t.int32Data ??= []), 'varint');
        return true;
      case 7:
        packedOrSingle(r, w, (t.int64Data ??= []), 'varint');
        return true;
      case 8:
        t.name = r.string();
        return true;
      case 9:
        t.rawData = r.bytes();
        return true;
      case 10:
        packedOrSingle(r, w, (t.doubleData ??= []), 'f64');
        return true;
      case 13:
        (t.externalData ??= []).push(decodeStringEntry(r.bytes()));
        return true;
      case 14:
        t.dataLocation = r.varint();
        return true;
      default:
        return false;
    }
  });
  return t;
}

function decodeAttribute(buf: Uint8Array): AttributeProto {
  const a: AttributeProto = { name: '', type: 0 };
  a.unknown = readMessage(buf, (r, f, w) => {
    switch (f) {
      case 1:
        a.name = r.string();
        return true;
      case 20:
        a.type = r.varint();
        return true;
      case 2:
        a.f = r.float32();
        return true;
      case 3:
        a.i = r.varint();
        return true;
      case 4:
        a.s = r.bytes();
        return true;
      case 5:
        a.t = decodeTensor(r.bytes());
        return true;
      case 6:
        a.g = decodeGraph(r.bytes());
        return true;
      case 7:
        packedOrSingle(r, w, (a.floats ??= []), 'f32');
        return true;
      case 8:
        packedOrSingle(r, w, (a.ints ??= []), 'varint');
        return true;
      case 9:
        (a.strings ??= []).push(r.bytes());
        return true;
      default:
        return false;
    }
  });
  return a;
}

function decodeNode(buf: Uint8Array): NodeProto {
  const n: NodeProto = { input: [], output: [], name: '', opType: '', domain: '', attribute: [] };
  n.unknown = readMessage(buf, (r, f) => {
    switch (f) {
      case 1:
        n.input.push(r.string());
        return true;
      case 2:
        n.output.push(r.string());
        return true;
      case 3:
        n.name = r.string();
        return true;
      case 4:
        n.opType = r.string();
        return true;
      case 7:
        n.domain = r.string();
        return true;
      case 5:
        n.attribute.push(decodeAttribute(r.bytes()));
        return true;
      default:
        return false;
    }
  });
  return n;
}

function decodeDim(buf: Uint8Array): Dim {
  const d: Dim = {};
  readMessage(buf, (r, f) => {
    if (f === 1) d.value = r.varint();
    else if (f === 2) d.param = r.string();
    else return false;
    return true;
  });
  return d;
}

function decodeValueInfo(buf: Uint8Array): ValueInfoProto {
  const v: ValueInfoProto = { name: '' };
  v.unknown = readMessage(buf, (r, f) => {
    if (f === 1) {
      v.name = r.string();
      return true;
    }
    if (f !== 2) return false;
    // TypeProto: only tensor_type (1) is modelled; other kinds stay unknown.
    const typeBytes = r.bytes();
    let tensor: Uint8Array | undefined;
    readMessage(typeBytes, (tr, tf) => {
      if (tf === 1) {
        tensor = tr.bytes();
        return true;
      }
      return false;
    });
    if (!tensor) {
      // Not a tensor type: keep the whole field verbatim by re-encoding it.
      (v.unknown ??= []).push({ bytes: concat(lenField(2, typeBytes)) });
      return true;
    }
    readMessage(tensor, (tt, ttf) => {
      if (ttf === 1) v.elemType = tt.varint();
      else if (ttf === 2) {
        v.shape = [];
        readMessage(tt.bytes(), (sr, sf) => {
          if (sf !== 1) return false;
          v.shape!.push(decodeDim(sr.bytes()));
          return true;
        });
      } else return false;
      return true;
    });
    return true;
  });
  return v;
}

export function decodeGraph(buf: Uint8Array): GraphProto {
  const g: GraphProto = { name: '', node: [], initializer: [], input: [], output: [], valueInfo: [] };
  g.unknown = readMessage(buf, (r, f) => {
    switch (f) {
      case 1:
        g.node.push(decodeNode(r.bytes()));
        return true;
      case 2:
        g.name = r.string();
        return true;
      case 5:
        g.initializer.push(decodeTensor(r.bytes()));
        return true;
      case 11:
        g.input.push(decodeValueInfo(r.bytes()));
        return true;
      case 12:
        g.output.push(decodeValueInfo(r.bytes()));
        return true;
      case 13:
        g.valueInfo.push(decodeValueInfo(r.bytes()));
        return true;
      default:
        return false;
    }
  });
  return g;
}

export function decodeModel(buf: Uint8Array): ModelProto {
  const m: ModelProto = {
    irVersion: 0,
    opsetImport: [],
    producerName: '',
    producerVersion: '',
    graph: { name: '', node: [], initializer: [], input: [], output: [], valueInfo: [] },
    metadataProps: [],
  };
  let sawGraph = false;
  m.unknown = readMessage(buf, (r, f) => {
    switch (f) {
      case 1:
        m.irVersion = r.varint();
        return true;
      case 2:
        m.producerName = r.string();
        return true;
      case 3:
        m.producerVersion = r.string();
        return true;
      case 7:
        m.graph = decodeGraph(r.bytes());
        sawGraph = true;
        return true;
      case 8: {
        const o: OpsetId = { domain: '', version: 0 };
        readMessage(r.bytes(), (or, of) => {
          if (of === 1) o.domain = or.string();
          else if (of === 2) o.version = or.varint();
          else return false;
          return true;
        });
        m.opsetImport.push(o);
        return true;
      }
      case 14:
        m.metadataProps.push(decodeStringEntry(r.bytes()));
        return true;
      default:
        return false;
    }
  });
  if (!sawGraph) throw new ProtoError('no graph in model');
  return m;
}

// ---------------------------------------------------------------- encoding

/**
 * An encoded message as a list of byte chunks plus its total length. Large tensors stay as
 * the caller's views; nothing is concatenated until (and unless) the caller asks.
 */
export interface Encoded {
  parts: Uint8Array[];
  length: number;
}

function varintBytes(value: number): Uint8Array {
  const out: number[] = [];
  if (value < 0 || !Number.isSafeInteger(value)) {
    let v = BigInt.asUintN(64, BigInt(Math.trunc(value)));
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    return Uint8Array.from(out);
  }
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
}

class Writer {
  parts: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
  }
  tag(field: number, wire: number): void {
    this.push(varintBytes(field * 8 + wire));
  }
  varintField(field: number, v: number | undefined): void {
    if (v === undefined) return;
    this.tag(field, 0);
    this.push(varintBytes(v));
  }
  bytesField(field: number, b: Uint8Array | undefined): void {
    if (b === undefined) return;
    this.tag(field, 2);
    this.push(varintBytes(b.length));
    this.push(b);
  }
  stringField(field: number, s: string | undefined): void {
    if (s === undefined || s === '') return;
    this.bytesField(field, textEncoder.encode(s));
  }
  messageField(field: number, e: Encoded): void {
    this.tag(field, 2);
    this.push(varintBytes(e.length));
    for (const p of e.parts) this.push(p);
  }
  packedVarints(field: number, vs: number[] | undefined): void {
    if (!vs || vs.length === 0) return;
    const inner = new Writer();
    for (const v of vs) inner.push(varintBytes(v));
    this.messageField(field, inner.done());
  }
  packedFloat32(field: number, vs: number[] | undefined): void {
    if (!vs || vs.length === 0) return;
    this.bytesField(field, new Uint8Array(Float32Array.from(vs).buffer));
  }
  packedFloat64(field: number, vs: number[] | undefined): void {
    if (!vs || vs.length === 0) return;
    this.bytesField(field, new Uint8Array(Float64Array.from(vs).buffer));
  }
  float32Field(field: number, v: number | undefined): void {
    if (v === undefined) return;
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
  }
  unknown(u: UnknownField[] | undefined): void {
    for (const f of u ?? []) this.push(f.bytes);
  }
  done(): Encoded {
    return { parts: this.parts, length: this.length };
  }
}

function lenField(field: number, b: Uint8Array): Encoded {
  const w = new Writer();
  w.bytesField(field, b);
  return w.done();
}

export function concat(e: Encoded): Uint8Array {
  const out = new Uint8Array(e.length);
  let off = 0;
  for (const p of e.parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function encodeStringEntry(e: StringEntry): Encoded {
  const w = new Writer();
  w.stringField(1, e.key);
  w.stringField(2, e.value);
  return w.done();
}

export function encodeTensor(t: TensorProto): Encoded {
  const w = new Writer();
  w.packedVarints(1, t.dims);
  w.varintField(2, t.dataType);
  w.packedFloat32(4, t.floatData);
  w.packedVarints(5, t.int32Data);
  w.packedVarints(7, t.int64Data);
  w.stringField(8, t.name);
  if (t.rawData) w.bytesField(9, t.rawData);
  w.packedFloat64(10, t.doubleData);
  for (const e of t.externalData ?? []) w.messageField(13, encodeStringEntry(e));
  if (t.dataLocation) w.varintField(14, t.dataLocation);
  w.unknown(t.unknown);
  return w.done();
}

function encodeAttribute(a: AttributeProto): Encoded {
  const w = new Writer();
  w.stringField(1, a.name);
  if (a.f !== undefined) w.float32Field(2, a.f);
  if (a.i !== undefined) w.varintField(3, a.i);
  if (a.s !== undefined) w.bytesField(4, a.s);
  if (a.t) w.messageField(5, encodeTensor(a.t));
  if (a.g) w.messageField(6, encodeGraph(a.g));
  w.packedFloat32(7, a.floats);
  w.packedVarints(8, a.ints);
  for (const s of a.strings ?? []) w.bytesField(9, s);
  w.varintField(20, a.type);
  w.unknown(a.unknown);
  return w.done();
}

function encodeNode(n: NodeProto): Encoded {
  const w = new Writer();
  // Inputs may be '' (an omitted optional input); those must be written to keep positions.
  for (const s of n.input) w.bytesField(1, textEncoder.encode(s));
  for (const s of n.output) w.bytesField(2, textEncoder.encode(s));
  w.stringField(3, n.name);
  w.stringField(4, n.opType);
  for (const a of n.attribute) w.messageField(5, encodeAttribute(a));
  w.stringField(7, n.domain);
  w.unknown(n.unknown);
  return w.done();
}

function encodeValueInfo(v: ValueInfoProto): Encoded {
  const w = new Writer();
  w.stringField(1, v.name);
  if (v.elemType !== undefined) {
    const tensor = new Writer();
    tensor.varintField(1, v.elemType);
    if (v.shape) {
      const shape = new Writer();
      for (const d of v.shape) {
        const dw = new Writer();
        if (d.value !== undefined) dw.varintField(1, d.value);
        if (d.param !== undefined) dw.stringField(2, d.param);
        shape.messageField(1, dw.done());
      }
      tensor.messageField(2, shape.done());
    }
    const type = new Writer();
    type.messageField(1, tensor.done());
    w.messageField(2, type.done());
  }
  w.unknown(v.unknown);
  return w.done();
}

export function encodeGraph(g: GraphProto): Encoded {
  const w = new Writer();
  for (const n of g.node) w.messageField(1, encodeNode(n));
  w.stringField(2, g.name);
  for (const t of g.initializer) w.messageField(5, encodeTensor(t));
  for (const v of g.input) w.messageField(11, encodeValueInfo(v));
  for (const v of g.output) w.messageField(12, encodeValueInfo(v));
  for (const v of g.valueInfo) w.messageField(13, encodeValueInfo(v));
  w.unknown(g.unknown);
  return w.done();
}

export function encodeModel(m: ModelProto): Encoded {
  const w = new Writer();
  w.varintField(1, m.irVersion);
  w.stringField(2, m.producerName);
  w.stringField(3, m.producerVersion);
  w.messageField(7, encodeGraph(m.graph));
  for (const o of m.opsetImport) {
    const ow = new Writer();
    ow.stringField(1, o.domain);
    ow.varintField(2, o.version);
    w.messageField(8, ow.done());
  }
  for (const e of m.metadataProps) w.messageField(14, encodeStringEntry(e));
  w.unknown(m.unknown);
  return w.done();
}
