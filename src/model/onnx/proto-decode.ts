// Decoding onnx.proto messages: large raw_data fields stay zero-copy views of the input buffer.

import {
  type UnknownField,
  type StringEntry,
  type TensorProto,
  type AttributeProto,
  type NodeProto,
  type Dim,
  type ValueInfoProto,
  type GraphProto,
  type OpsetId,
  type ModelProto,
} from './proto-types.ts';
import { concat, lenField } from './proto-encode.ts';

const textDecoder = new TextDecoder();

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
