// Questions about a decoded ONNX graph: who produces or consumes a tensor, which tensors are
// constants and what they hold. The graph surgery (instrument.ts) walks exported graphs by
// structure alone, so everything it needs to know about a tensor is answered here; plus the
// upkeep a graph needs after edits (dropping dead nodes, restoring topological order).
//
// The index is a snapshot: rebuild it after editing the graph.

import {
  AttrType,
  DataType,
  type AttributeProto,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from './proto.ts';
import { halfToFloat } from '../safetensors.ts';

/** Ops that only move or relabel data, so a walk may look straight through them. */
export const PASSTHROUGH_OPS: ReadonlySet<string> = new Set([
  'Identity',
  'Cast',
  'Reshape',
  'Flatten',
  'Squeeze',
  'Unsqueeze',
]);

/** Reads the bytes of a tensor stored outside the model file (see external-data.ts). */
export type ExternalReader = (t: TensorProto) => Uint8Array;

export class GraphIndex {
  private readonly producers = new Map<string, NodeProto>();
  private readonly consumerMap = new Map<string, NodeProto[]>();
  private readonly initializers = new Map<string, TensorProto>();
  private readonly graphInputs = new Set<string>();
  private readonly graphOutputs = new Set<string>();

  constructor(readonly graph: GraphProto) {
    for (const t of graph.initializer) this.initializers.set(t.name, t);
    for (const v of graph.input) this.graphInputs.add(v.name);
    for (const v of graph.output) this.graphOutputs.add(v.name);
    for (const node of graph.node) {
      for (const o of node.output) if (o) this.producers.set(o, node);
      // A node also "consumes" whatever its subgraphs (If/Loop bodies) read from this scope.
      for (const name of new Set([...node.input, ...outerScopeReads(node)])) {
        if (!name) continue;
        let list = this.consumerMap.get(name);
        if (!list) this.consumerMap.set(name, (list = []));
        list.push(node);
      }
    }
  }

  producer(name: string): NodeProto | undefined {
    return this.producers.get(name);
  }

  consumers(name: string): NodeProto[] {
    return this.consumerMap.get(name) ?? [];
  }

  initializer(name: string): TensorProto | undefined {
    return this.initializers.get(name);
  }

  isGraphInput(name: string): boolean {
    return this.graphInputs.has(name) && !this.initializers.has(name);
  }

  isGraphOutput(name: string): boolean {
    return this.graphOutputs.has(name);
  }

  /** Every tensor name in use in this scope (inputs, initializers, node outputs). */
  allNames(): Set<string> {
    return new Set([
      ...this.graphInputs,
      ...this.graphOutputs,
      ...this.initializers.keys(),
      ...this.producers.keys(),
    ]);
  }

  /** The constant behind a name: an initializer or the value of a Constant node; undefined otherwise. */
  constant(name: string): TensorProto | undefined {
    // Old exports (IR < 4) also list initializers as graph inputs; they are still weights.
    const init = this.initializers.get(name);
    if (init) return init;
    const node = this.producers.get(name);
    if (!node || node.opType !== 'Constant' || (node.domain !== '' && node.domain !== 'ai.onnx'))
      return undefined;
    return constantNodeValue(node);
  }

  isConstant(name: string): boolean {
    return this.constant(name) !== undefined;
  }

  /**
   * A weight matrix behind a matmul operand: an initializer (or Constant), possibly through a
   * Transpose node (tied embeddings are often exported as Transpose(embedding table)).
   * `transposed` says the stored tensor is the transpose of the operand the matmul sees.
   */
  weight(name: string): { tensor: TensorProto; transposed: boolean } | undefined {
    const direct = this.constant(name);
    if (direct) return { tensor: direct, transposed: false };
    const node = this.producers.get(name);
    if (node?.opType !== 'Transpose') return undefined;
    const source = this.constant(node.input[0]!);
    if (!source || source.dims.length !== 2) return undefined;
    const perm = attrInts(node, 'perm');
    if (perm && !(perm[0] === 1 && perm[1] === 0)) return undefined;
    return { tensor: source, transposed: true };
  }

  /** Follows a tensor back through PASSTHROUGH_OPS to the first tensor something else produced. */
  skipPassthrough(name: string, ops: ReadonlySet<string> = PASSTHROUGH_OPS): string {
    let current = name;
    for (
      let node = this.producers.get(current);
      node && ops.has(node.opType);
      node = this.producers.get(current)
    ) {
      current = node.input[0]!;
    }
    return current;
  }
}

// ------------------------------------------------------------------ whole-graph upkeep after edits

/** Drops nodes none of whose outputs is read (e.g. shape arithmetic the new tail replaced). */
export function removeDeadNodes(graph: GraphProto): void {
  for (;;) {
    const used = new Set<string>(graph.output.map((o) => o.name));
    for (const n of graph.node) for (const i of [...n.input, ...outerScopeReads(n)]) used.add(i);
    const before = graph.node.length;
    graph.node = graph.node.filter((n) => n.output.some((o) => o && used.has(o)));
    if (graph.node.length === before) break;
  }
  const used = new Set<string>(graph.output.map((o) => o.name));
  for (const n of graph.node) for (const i of [...n.input, ...outerScopeReads(n)]) used.add(i);
  const inputs = new Set(graph.input.map((i) => i.name));
  graph.initializer = graph.initializer.filter((t) => used.has(t.name) || inputs.has(t.name));
}

/** Orders nodes so each comes after the producers of what it reads, keeping the existing order where it already does. */
export function topoSort(graph: GraphProto): void {
  const producerOf = new Map<string, number>();
  graph.node.forEach((n, i) => n.output.forEach((o) => o && producerOf.set(o, i)));
  const placed = new Uint8Array(graph.node.length);
  const order: NodeProto[] = [];
  const visiting = new Uint8Array(graph.node.length);
  // Iterative depth-first placement: a node goes in once everything it reads is in.
  for (let root = 0; root < graph.node.length; root++) {
    const stack: number[] = [root];
    while (stack.length > 0) {
      const i = stack[stack.length - 1]!;
      if (placed[i]) {
        stack.pop();
        continue;
      }
      const node = graph.node[i]!;
      const pending = [...node.input, ...outerScopeReads(node)]
        .map((name) => producerOf.get(name))
        .filter((p): p is number => p !== undefined && !placed[p]);
      if (pending.length === 0) {
        placed[i] = 1;
        order.push(node);
        stack.pop();
        continue;
      }
      if (visiting[i]) throw new Error('the graph has a cycle');
      visiting[i] = 1;
      stack.push(...pending.reverse());
    }
  }
  graph.node = order;
}

/** Names a node's subgraphs read from enclosing scopes (used but not defined inside them). */
export function outerScopeReads(node: NodeProto): string[] {
  const reads: string[] = [];
  for (const a of node.attribute) {
    if (a.g) reads.push(...graphFreeNames(a.g));
  }
  return reads;
}

function graphFreeNames(g: GraphProto): string[] {
  const defined = new Set<string>([...g.input.map((v) => v.name), ...g.initializer.map((t) => t.name)]);
  for (const n of g.node) for (const o of n.output) defined.add(o);
  const free = new Set<string>();
  for (const n of g.node) {
    for (const i of [...n.input, ...outerScopeReads(n)]) if (i && !defined.has(i)) free.add(i);
  }
  for (const o of g.output) if (!defined.has(o.name)) free.add(o.name);
  return [...free];
}

export function attr(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name);
}

export function attrInt(node: NodeProto, name: string, fallback: number): number {
  return attr(node, name)?.i ?? fallback;
}

export function attrFloat(node: NodeProto, name: string, fallback: number): number {
  return attr(node, name)?.f ?? fallback;
}

export function attrInts(node: NodeProto, name: string): number[] | undefined {
  return attr(node, name)?.ints;
}

/** The tensor a Constant node produces, whichever of its value_* attributes it uses. */
function constantNodeValue(node: NodeProto): TensorProto | undefined {
  const a = node.attribute[0];
  if (!a) return undefined;
  const name = node.output[0]!;
  switch (a.name) {
    case 'value':
      return a.t;
    case 'value_float':
      return { name, dataType: DataType.FLOAT, dims: [], floatData: [a.f ?? 0] };
    case 'value_floats':
      return { name, dataType: DataType.FLOAT, dims: [a.floats?.length ?? 0], floatData: a.floats ?? [] };
    case 'value_int':
      return { name, dataType: DataType.INT64, dims: [], int64Data: [a.i ?? 0] };
    case 'value_ints':
      return { name, dataType: DataType.INT64, dims: [a.ints?.length ?? 0], int64Data: a.ints ?? [] };
    default:
      return a.type === AttrType.TENSOR ? a.t : undefined;
  }
}

export function elementCount(t: TensorProto): number {
  return t.dims.reduce((a, d) => a * d, 1);
}

/**
 * A floating-point constant's values as float32 (FLOAT, FLOAT16, BFLOAT16 or DOUBLE).
 * `readExternal` supplies the bytes of tensors kept in external-data files.
 */
export function tensorToFloat32(t: TensorProto, readExternal?: ExternalReader): Float32Array {
  const n = elementCount(t);
  if (t.dataType === DataType.FLOAT && t.floatData && t.floatData.length)
    return Float32Array.from(t.floatData);
  if (t.dataType === DataType.DOUBLE && t.doubleData && t.doubleData.length)
    return Float32Array.from(t.doubleData);
  if ((t.dataType === DataType.FLOAT16 || t.dataType === DataType.BFLOAT16) && t.int32Data?.length) {
    // Half types without raw_data keep one 16-bit pattern per int32_data entry.
    return Float32Array.from(t.int32Data, (bits) => halfBitsToFloat(bits, t.dataType));
  }
  const bytes = tensorBytes(t, readExternal);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (t.dataType) {
    case DataType.FLOAT:
      expectBytes(t, bytes, n * 4);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      return out;
    case DataType.DOUBLE:
      expectBytes(t, bytes, n * 8);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      return out;
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      expectBytes(t, bytes, n * 2);
      for (let i = 0; i < n; i++) out[i] = halfBitsToFloat(dv.getUint16(i * 2, true), t.dataType);
      return out;
    default:
      throw new Error(`tensor "${t.name}" has data type ${t.dataType}, not floating point`);
  }
}

/** The single value of a one-element floating-point constant, or undefined if it holds more. */
export function scalarValue(t: TensorProto): number | undefined {
  if (elementCount(t) !== 1) return undefined;
  return tensorToFloat32(t)[0];
}

function tensorBytes(t: TensorProto, readExternal?: ExternalReader): Uint8Array {
  if (t.dataLocation === 1 || t.externalData?.length) {
    if (!readExternal)
      throw new Error(`tensor "${t.name}" lives in an external-data file and no reader was given`);
    return readExternal(t);
  }
  return t.rawData ?? new Uint8Array(0);
}

function expectBytes(t: TensorProto, bytes: Uint8Array, want: number): void {
  if (bytes.length !== want) {
    throw new Error(`tensor "${t.name}" holds ${bytes.length} bytes, its shape [${t.dims}] needs ${want}`);
  }
}

function halfBitsToFloat(bits: number, dataType: number): number {
  if (dataType === DataType.BFLOAT16) {
    const f = new Float32Array(1);
    new Uint32Array(f.buffer)[0] = (bits & 0xffff) << 16;
    return f[0]!;
  }
  return halfToFloat(bits & 0xffff);
}
