// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {...}}, then the bytes.
// Weights are converted to float32 on read (F32/F16/BF16), which is what the graph builder needs.

import { closeSync, existsSync, openSync, readFileSync, readSync, fstatSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ModelLoadError } from '../errors.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'U8' | 'BOOL';

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, U8: 1, BOOL: 1 };

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The file holding it and the absolute byte range in that file. */
  file: string;
  begin: number;
  end: number;
}

/** A checkpoint's tensors (one file or a sharded set), read lazily by name. */
export class SafetensorsCheckpoint {
  private constructor(
    readonly tensors: Map<string, TensorInfo>,
    readonly files: string[],
  ) {}

  /** Opens `model.safetensors` or the shards listed in `model.safetensors.index.json` in dir. */
  static openDir(dir: string): SafetensorsCheckpoint {
    const single = join(dir, 'model.safetensors');
    const index = join(dir, 'model.safetensors.index.json');
    if (existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw new ModelLoadError(index, `not valid JSON (${(e as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new ModelLoadError(index, 'has no "weight_map"');
      const shards = [...new Set(Object.values(weightMap))].map((s) => join(dirname(index), s));
      return SafetensorsCheckpoint.openFiles(shards);
    }
    if (existsSync(single)) return SafetensorsCheckpoint.openFiles([single]);
    throw new ModelLoadError(dir, 'no model.safetensors or model.safetensors.index.json found');
  }

  static openFiles(files: string[]): SafetensorsCheckpoint {
    const tensors = new Map<string, TensorInfo>();
    for (const file of files) {
      for (const [name, info] of readHeader(file)) tensors.set(name, info);
    }
    return new SafetensorsCheckpoint(tensors, files);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new ModelLoadError(this.files[0]!, `missing tensor "${name}"`);
    return t;
  }

  /** Reads a tensor as float32 (converting F16/BF16/F64). */
  float32(name: string): Float32Array {
    const t = this.info(name);
    const raw = readRange(t.file, t.begin, t.end);
    return toFloat32(raw, t.dtype, `${t.file}: tensor "${name}"`);
  }
}

function readRange(file: string, begin: number, end: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const out = new Uint8Array(end - begin);
    let off = 0;
    while (off < out.length) {
      const n = readSync(fd, out, off, out.length - off, begin + off);
      if (n === 0) throw new ModelLoadError(file, 'truncated: tensor data ends early');
      off += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

function readHeader(file: string): Map<string, TensorInfo> {
  if (!existsSync(file)) throw new ModelLoadError(file, 'file not found');
  const fd = openSync(file, 'r');
  let size: number;
  let header: Record<string, unknown>;
  let dataStart: number;
  try {
    size = fstatSync(fd).size;
    if (size < 8) throw new ModelLoadError(file, 'truncated: shorter than the 8-byte header length');
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > 100_000_000 || 8 + headerLen > size) {
      throw new ModelLoadError(file, `corrupt or truncated: header length ${headerLen} exceeds file size ${size}`);
    }
    const hb = Buffer.alloc(headerLen);
    readSync(fd, hb, 0, headerLen, 8);
    try {
      header = JSON.parse(hb.toString('utf8'));
    } catch {
      throw new ModelLoadError(file, 'corrupt: the safetensors header is not valid JSON');
    }
    dataStart = 8 + headerLen;
  } finally {
    closeSync(fd);
  }
  const out = new Map<string, TensorInfo>();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const info = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (!(info.dtype in BYTES)) throw new ModelLoadError(file, `tensor "${name}" has unsupported dtype ${info.dtype}`);
    const [b, e] = info.data_offsets;
    const expected = info.shape.reduce((a, d) => a * d, 1) * BYTES[info.dtype]!;
    if (e - b !== expected) throw new ModelLoadError(file, `tensor "${name}": byte range does not match its shape`);
    if (dataStart + e > size) {
      throw new ModelLoadError(file, `truncated: tensor "${name}" ends at byte ${dataStart + e}, file has ${size}`);
    }
    out.set(name, {
      dtype: info.dtype as SafetensorsDtype,
      shape: info.shape,
      file,
      begin: dataStart + b,
      end: dataStart + e,
    });
  }
  return out;
}

function toFloat32(raw: Uint8Array, dtype: SafetensorsDtype, what: string): Float32Array {
  const n = raw.length / BYTES[dtype]!;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (dtype) {
    case 'F32':
      return new Float32Array(raw.buffer, raw.byteOffset, n).slice();
    case 'F64': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    }
    case 'BF16': {
      const out = new Float32Array(n);
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u32[i] = dv.getUint16(i * 2, true) << 16;
      return out;
    }
    case 'F16': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
      return out;
    }
    default:
      throw new ModelLoadError(what, `dtype ${dtype} cannot be read as floating point weights`);
  }
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

export interface TensorToWrite {
  dtype?: 'F32';
  shape: number[];
  data: Float32Array;
}

/** Writes float32 tensors as one safetensors file (names sorted, 8-byte aligned header). */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const count = t.shape.reduce((a, d) => a * d, 1);
    if (count !== t.data.length) throw new Error(`tensor ${name}: shape ${t.shape} does not match ${t.data.length} values`);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hb.length));
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, lenBuf);
    writeSync(fd, hb);
    for (const name of names) {
      const d = tensors[name]!.data;
      writeSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  } finally {
    closeSync(fd);
  }
}
