// A small typed builder for ONNX graphs on top of proto.ts. Large initializers are written to
// the external-data file the moment they are added (4 KiB aligned, so ONNX Runtime can map
// them), so building a multi-gigabyte model holds one tensor in memory at a time.

import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import {
  AttrType,
  DataType,
  encodeModel,
  type AttributeProto,
  type Dim,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.ts';

/** Plain numbers are INT attributes (must be integers); wrap floats explicitly so 1.0 stays a float. */
export type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

/** A dimension: a fixed size or a symbolic name such as "batch". */
export type DimSpec = number | string;

export interface GraphBuilderOptions {
  /** Path of the external-data file; the model must be saved in the same directory. */
  dataPath: string;
  opset?: number;
  /** Initializers at least this big go to the data file; smaller ones stay inline. */
  externalThresholdBytes?: number;
}

const ALIGNMENT = 4096;
const IR_VERSION = 8; // the IR version that goes with opset 17

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly taken = new Set<string>();
  private readonly constants = new Map<string, string>();
  /** Operator domains beyond the default one that nodes use (e.g. com.microsoft for MatMulNBits). */
  private readonly domains = new Set<string>();
  private readonly opset: number;
  private readonly threshold: number;
  private readonly dataLocation: string;
  private dataFd: number | null;
  private dataEnd = 0;

  constructor(opts: GraphBuilderOptions) {
    this.opset = opts.opset ?? 17;
    this.threshold = opts.externalThresholdBytes ?? 1024;
    this.dataLocation = basename(opts.dataPath);
    this.dataFd = openSync(opts.dataPath, 'w');
  }

  /** Declares a graph input and returns its name (used as given: it is part of the IO contract). */
  input(name: string, elemType: number, dims: DimSpec[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Declares an existing value as a graph output. */
  output(name: string, elemType: number, dims: DimSpec[]): void {
    if (!this.taken.has(name)) throw new Error(`graph output "${name}" is not produced by any node`);
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  /** Adds a single-output node and returns the output's name (`out` fixes it, e.g. for graph outputs). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, out?: string): string {
    return this.nodeN(op, inputs, 1, attrs, out ? [out] : undefined)[0]!;
  }

  nodeN(
    op: string,
    inputs: string[],
    outputs: number,
    attrs: Record<string, AttrValue> = {},
    names?: string[],
    domain = '',
  ): string[] {
    if (domain) this.domains.add(domain);
    const nodeName = this.unique(op);
    const out = names ?? Array.from({ length: outputs }, (_, i) => this.unique(`${nodeName}_out${i}`));
    if (names) for (const n of names) this.claim(n);
    this.nodes.push({
      input: inputs,
      output: out,
      name: nodeName,
      opType: op,
      domain,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return out;
  }

  /** A float32 initializer (a weight); written to the data file right away when large. */
  weight(nameHint: string, dims: number[], data: Float32Array): string {
    const expected = dims.reduce((a, d) => a * d, 1);
    if (expected !== data.length)
      throw new Error(`weight ${nameHint}: dims [${dims}] need ${expected} values, got ${data.length}`);
    return this.addInitializer(
      nameHint,
      DataType.FLOAT,
      dims,
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
  }

  /** An initializer of any element type from its little-endian bytes (quantized weights, fp16). */
  tensor(nameHint: string, dataType: number, dims: number[], bytes: Uint8Array): string {
    return this.addInitializer(nameHint, dataType, dims, bytes);
  }

  /** A single-output node of onnxruntime's com.microsoft contrib domain (version 1). */
  contribNode(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.nodeN(op, inputs, 1, attrs, undefined, 'com.microsoft')[0]!;
  }

  /** An int64 constant (shapes, axes, indices); identical constants are shared. */
  int64(values: number | number[], dims?: number[]): string {
    const list = Array.isArray(values) ? values : [values];
    const shape = dims ?? (Array.isArray(values) ? [list.length] : []);
    return this.constant(`i64[${shape}]:${list}`, () => {
      const bytes = new Uint8Array(list.length * 8);
      const view = new DataView(bytes.buffer);
      list.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
      return this.addInitializer('const_i64', DataType.INT64, shape, bytes);
    });
  }

  /** A float32 constant; a plain number gives a scalar. */
  float(values: number | number[], dims?: number[]): string {
    const list = Array.isArray(values) ? values : [values];
    const shape = dims ?? (Array.isArray(values) ? [list.length] : []);
    return this.constant(`f32[${shape}]:${list}`, () => {
      const data = Float32Array.from(list);
      return this.addInitializer('const_f32', DataType.FLOAT, shape, new Uint8Array(data.buffer));
    });
  }

  /** Writes `modelPath` (which must sit beside the data file) and closes the data file. */
  save(modelPath: string, metadata: Record<string, string> = {}): void {
    this.closeData();
    const encoded = encodeModel({
      irVersion: IR_VERSION,
      opsetImport: [
        { domain: '', version: this.opset },
        ...[...this.domains].map((domain) => ({ domain, version: 1 })),
      ],
      producerName: 'confidence-sidecar',
      producerVersion: '',
      graph: {
        name: 'decoder',
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
        valueInfo: [],
      },
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    });
    const fd = openSync(modelPath, 'w');
    try {
      for (const part of encoded.parts) writeAll(fd, part, null);
    } finally {
      closeSync(fd);
    }
  }

  /** Releases the data file after a failed build. */
  abort(): void {
    this.closeData();
  }

  private closeData(): void {
    if (this.dataFd !== null) closeSync(this.dataFd);
    this.dataFd = null;
  }

  private constant(key: string, create: () => string): string {
    let name = this.constants.get(key);
    if (name === undefined) {
      name = create();
      this.constants.set(key, name);
    }
    return name;
  }

  private addInitializer(nameHint: string, dataType: number, dims: number[], bytes: Uint8Array): string {
    const name = this.unique(nameHint);
    if (bytes.byteLength < this.threshold) {
      // Copy: the caller may reuse its buffer, and inline data is encoded only at save().
      this.initializers.push({ name, dataType, dims, rawData: bytes.slice() });
      return name;
    }
    if (this.dataFd === null) throw new Error('graph builder: data file already closed');
    const offset = Math.ceil(this.dataEnd / ALIGNMENT) * ALIGNMENT;
    writeAll(this.dataFd, bytes, offset);
    this.dataEnd = offset + bytes.byteLength;
    this.initializers.push({
      name,
      dataType,
      dims,
      dataLocation: 1, // EXTERNAL
      externalData: [
        { key: 'location', value: this.dataLocation },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ],
    });
    return name;
  }

  private claim(name: string): void {
    if (this.taken.has(name)) throw new Error(`graph value "${name}" defined twice`);
    this.taken.add(name);
  }

  /** `hint` if free, else `hint_2`, `hint_3`, ... */
  private unique(hint: string): string {
    let name = hint;
    for (let i = 2; this.taken.has(name); i++) name = `${hint}_${i}`;
    this.taken.add(name);
    return name;
  }
}

function writeAll(fd: number, bytes: Uint8Array, position: number | null): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += writeSync(fd, bytes, done, bytes.byteLength - done, position === null ? null : position + done);
  }
}

function valueInfo(name: string, elemType: number, dims: DimSpec[]): ValueInfoProto {
  const shape: Dim[] = dims.map((d) => (typeof d === 'number' ? { value: d } : { param: d }));
  return { name, elemType, shape };
}

function attribute(name: string, v: AttrValue): AttributeProto {
  if (typeof v === 'number') {
    if (!Number.isInteger(v))
      throw new Error(`attribute ${name}: ${v} is not an integer; use { float: ${v} }`);
    return { name, type: AttrType.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: v };
  if ('float' in v) return { name, type: AttrType.FLOAT, f: v.float };
  return { name, type: AttrType.FLOATS, floats: v.floats };
}
