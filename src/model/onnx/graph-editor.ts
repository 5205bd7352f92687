// Adding nodes and constants to an existing graph under fresh names (graph surgery).

import { GraphIndex } from './graph-query.ts';
import { AttrType, DataType, type AttributeProto, type GraphProto } from './proto.ts';
import type { HookAttrs, OpEmitter } from './last-layer-hook.ts';

/** Adds nodes and constants under fresh names in the `instrument/` namespace. */
export class GraphEditor {
  private readonly taken: Set<string>;
  private readonly nodeNames: Set<string>;

  constructor(
    readonly graph: GraphProto,
    readonly opset: number,
  ) {
    this.taken = new GraphIndex(graph).allNames();
    this.nodeNames = new Set(graph.node.map((n) => n.name));
  }

  isTaken(name: string): boolean {
    return this.taken.has(name);
  }

  fresh(base: string): string {
    let name = `instrument/${base}`;
    for (let i = 1; this.taken.has(name); i++) name = `instrument/${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** Appends a node (order is fixed by topoSort afterwards) and returns its output name. */
  op(
    opType: string,
    inputs: string[],
    base: string,
    attributes: AttributeProto[] = [],
    output?: string,
  ): string {
    return this.opN(opType, inputs, base, attributes, [output ?? this.fresh(base)])[0]!;
  }

  /** A node with several outputs, named `outputs`. */
  opN(opType: string, inputs: string[], base: string, attributes: AttributeProto[], outputs: string[]): string[] {
    for (const o of outputs) this.taken.add(o);
    let nodeName = `instrument/${base}_node`;
    for (let i = 1; this.nodeNames.has(nodeName); i++) nodeName = `instrument/${base}_node_${i}`;
    this.nodeNames.add(nodeName);
    this.graph.node.push({
      input: inputs,
      output: outputs,
      name: nodeName,
      opType,
      domain: '',
      attribute: attributes,
    });
    return outputs;
  }

  int64s(base: string, values: (number | bigint)[]): string {
    const name = this.fresh(base);
    const raw = new BigInt64Array(values.map((v) => BigInt(v)));
    this.graph.initializer.push({
      name,
      dataType: DataType.INT64,
      dims: [values.length],
      rawData: new Uint8Array(raw.buffer),
    });
    return name;
  }

  float(base: string, value: number): string {
    const name = this.fresh(base);
    this.graph.initializer.push({
      name,
      dataType: DataType.FLOAT,
      dims: [],
      rawData: new Uint8Array(Float32Array.of(value).buffer),
    });
    return name;
  }

  /** Mean over the last axis; opset 18 moved ReduceMean's axes from an attribute to an input. */
  reduceMeanLastAxis(input: string, base: string, keepdims: boolean): string {
    const keep: AttributeProto = { name: 'keepdims', type: AttrType.INT, i: keepdims ? 1 : 0 };
    if (this.opset >= 18)
      return this.op('ReduceMean', [input, this.int64s(`${base}_axes`, [-1])], base, [keep]);
    return this.op('ReduceMean', [input], base, [{ name: 'axes', type: AttrType.INTS, ints: [-1] }, keep]);
  }

  /** This editor seen through the hook's OpEmitter (last-layer-hook.ts). */
  emitter(base: string): OpEmitter {
    const attrs = (a: HookAttrs = {}): AttributeProto[] =>
      Object.entries(a).map(([name, v]) =>
        Array.isArray(v) ? { name, type: AttrType.INTS, ints: v } : { name, type: AttrType.INT, i: v },
      );
    return {
      opset: this.opset,
      op: (opType, inputs, out, a) => this.op(opType, inputs, base, attrs(a), out),
      opN: (opType, inputs, n, a, outs) =>
        this.opN(opType, inputs, base, attrs(a), outs ?? Array.from({ length: n }, () => this.fresh(base))),
      int64s: (values) => this.int64s(`${base}_const`, values),
      float: (value) => this.float(`${base}_const`, value),
      reduceMeanLastAxis: (x, keepdims) => this.reduceMeanLastAxis(x, `${base}_mean`, keepdims),
      unsqueeze: (x, axes) =>
        this.opset >= 13
          ? this.op('Unsqueeze', [x, this.int64s(`${base}_axes`, axes)], base)
          : this.op('Unsqueeze', [x], base, [{ name: 'axes', type: AttrType.INTS, ints: axes }]),
    };
  }
}
