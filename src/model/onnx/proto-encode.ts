// Encoding onnx.proto messages as chunk lists: large tensors are never concatenated (see Encoded).

import {
  type UnknownField,
  type StringEntry,
  type TensorProto,
  type AttributeProto,
  type NodeProto,
  type ValueInfoProto,
  type GraphProto,
  type ModelProto,
} from './proto-types.ts';

const textEncoder = new TextEncoder();

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

export function lenField(field: number, b: Uint8Array): Encoded {
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
