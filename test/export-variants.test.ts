// Other exporters write the same models differently: fused norms (LayerNormalization,
// com.microsoft Simplified/Skip*LayerNormalization), Gemm with transB, 2-D reshapes around the
// MLP, tied unembeddings through a Transpose or the Gather table itself, opset 18 ReduceMean,
// Optimum's merged decoder (If on use_cache_branch), external-data files. No fixture exists for
// these, so each test rewrites a fixture export into that form (by node names: the test knows
// the fixture), checks the rewritten graph still computes the same model, then instruments it
// and checks it against expected.json and the checkpoint's weights.

import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { lastLayerWeightsFromExport, prepareExportGraph } from '../src/model/onnx/export-source.ts';
import {
  AttrType,
  DataType,
  concat,
  decodeModel,
  encodeModel,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from '../src/model/onnx/proto.ts';
import type { LastLayerWeights } from '../src/model/types.ts';
import {
  deviationsFromExpected,
  exportFixture,
  floats,
  maxAbsDiff,
  presentsAsPast,
  row,
  run,
  type ExportFixture,
} from './helpers/export-session.ts';
import { aidreamsWeights, gpt2TinyWeights } from './helpers/monitor-fixtures.ts';

const scratch = mkdtempSync(join(tmpdir(), 'export-variants-'));
const cacheDir = join(scratch, 'cache');
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

type FixtureName = 'aidreams260K-onnx' | 'gpt2-tiny-random-onnx';

// ------------------------------------------------------------ building variants

function loadExport(name: FixtureName): ModelProto {
  return decodeModel(readFileSync(join(exportFixture(name).dir, 'onnx', 'model.onnx')));
}

function attrs(values: Record<string, number | number[] | GraphProto>): AttributeProto[] {
  return Object.entries(values).map(([name, v]) => {
    if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: v };
    if (typeof v === 'object') return { name, type: AttrType.GRAPH, g: v };
    return Number.isInteger(v) ? { name, type: AttrType.INT, i: v } : { name, type: AttrType.FLOAT, f: v };
  });
}

function node(
  opType: string,
  input: string[],
  output: string[],
  attributes: AttributeProto[] = [],
  domain = '',
): NodeProto {
  return { opType, input, output, name: `variant/${output[0]}`, domain, attribute: attributes };
}

function floatTensor(name: string, dims: number[], data: Float32Array): TensorProto {
  return {
    name,
    dataType: DataType.FLOAT,
    dims,
    rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)),
  };
}

function int64Tensor(name: string, values: number[]): TensorProto {
  return {
    name,
    dataType: DataType.INT64,
    dims: [values.length],
    rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
  };
}

function initializerData(g: GraphProto, name: string): { dims: number[]; data: Float32Array } {
  const t = g.initializer.find((i) => i.name === name)!;
  const raw = t.rawData!;
  // A copy: rawData may be a view into a pooled Node Buffer.
  return { dims: t.dims, data: new Float32Array(new Uint8Array(raw).buffer) };
}

function transposed(g: GraphProto, name: string, newName: string): TensorProto {
  const { dims, data } = initializerData(g, name);
  const [r, c] = dims as [number, number];
  const out = new Float32Array(data.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j]!;
  return floatTensor(newName, [c, r], out);
}

/** Removes the nodes producing `outputs` (or whose first output starts with a prefix ending in '/'); inserts `added` where the first one was. */
function replaceNodes(g: GraphProto, outputs: string[], added: NodeProto[]): void {
  const doomed = (n: NodeProto) =>
    outputs.some((o) => (o.endsWith('/') ? n.output[0]!.startsWith(o) : n.output.includes(o)));
  const at = g.node.findIndex(doomed);
  if (at < 0) throw new Error(`variant: nothing produces ${outputs}`);
  const kept = g.node.filter((n) => !doomed(n));
  const before = g.node.slice(0, at).filter((n) => !doomed(n)).length;
  g.node = [...kept.slice(0, before), ...added, ...kept.slice(before)];
}

function setOpset(m: ModelProto, domain: string, version: number): void {
  const o = m.opsetImport.find((x) => x.domain === domain);
  if (o) o.version = version;
  else m.opsetImport.push({ domain, version });
}

function dropInitializer(g: GraphProto, name: string): void {
  g.initializer = g.initializer.filter((t) => t.name !== name);
}

/** Writes the variant as an export folder (config and tokenizer from the fixture). */
function writeExport(name: FixtureName, label: string, m: ModelProto, file = 'onnx/model.onnx'): string {
  const src = exportFixture(name).dir;
  const dir = join(scratch, label);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(src, f), join(dir, f));
  writeFileSync(join(dir, file), concat(encodeModel(m)));
  return dir;
}

const EPS = 1e-5;

interface Variant {
  fixture: FixtureName;
  build: () => ModelProto;
  /** What the variant adds to every logit (softmax does not see it). */
  logitOffset?: number;
  weightsCheck?: (w: LastLayerWeights) => void;
}

const variants: Record<string, Variant> = {
  'LayerNormalization (opset 17)': {
    fixture: 'gpt2-tiny-random-onnx',
    build() {
      const m = loadExport('gpt2-tiny-random-onnx');
      replaceNodes(
        m.graph,
        ['/ln_f/'],
        [
          node(
            'LayerNormalization',
            ['/h.1/Add_4_output_0', 'ln_f.weight', 'ln_f.bias'],
            ['/ln_f/Add_1_output_0'],
            attrs({ axis: -1, epsilon: EPS }),
          ),
        ],
      );
      setOpset(m, '', 17);
      return m;
    },
  },
  // onnxruntime registers this contrib op in the default domain (not com.microsoft).
  SimplifiedLayerNormalization: {
    fixture: 'aidreams260K-onnx',
    build() {
      const m = loadExport('aidreams260K-onnx');
      replaceNodes(
        m.graph,
        ['/norm/'],
        [
          node(
            'SimplifiedLayerNormalization',
            ['/layers.3/Add_1_output_0', 'model.norm.weight'],
            ['/norm/Mul_1_output_0'],
            attrs({ axis: -1, epsilon: EPS }),
          ),
        ],
      );
      return m;
    },
  },
  'com.microsoft SkipSimplifiedLayerNormalization with its residual-sum output': {
    fixture: 'aidreams260K-onnx',
    build() {
      const m = loadExport('aidreams260K-onnx');
      replaceNodes(
        m.graph,
        ['/norm/', '/layers.3/Add_1_output_0'],
        [
          node(
            'SkipSimplifiedLayerNormalization',
            ['/layers.3/Add_output_0', '/layers.3/mlp/down_proj/MatMul_output_0', 'model.norm.weight'],
            ['/norm/Mul_1_output_0', '', '', '/layers.3/Add_1_output_0'],
            attrs({ epsilon: EPS }),
            'com.microsoft',
          ),
        ],
      );
      setOpset(m, 'com.microsoft', 1);
      return m;
    },
  },
  'com.microsoft SkipLayerNormalization folding the MLP bias': {
    fixture: 'gpt2-tiny-random-onnx',
    build() {
      const m = loadExport('gpt2-tiny-random-onnx');
      replaceNodes(
        m.graph,
        ['/ln_f/', '/h.1/Add_4_output_0', '/h.1/c_proj_1/Add_output_0'],
        [
          node(
            'SkipLayerNormalization',
            [
              '/h.1/Add_1_output_0',
              '/h.1/c_proj_1/MatMul_output_0',
              'ln_f.weight',
              'ln_f.bias',
              'h.1.mlp.c_proj.bias',
            ],
            ['/ln_f/Add_1_output_0'],
            attrs({ epsilon: EPS }),
            'com.microsoft',
          ),
        ],
      );
      setOpset(m, 'com.microsoft', 1);
      return m;
    },
  },
  'Gemm (transB) on a 2-D MLP and a 2-D unembedding by the tied Gather table': {
    fixture: 'gpt2-tiny-random-onnx',
    build() {
      const m = loadExport('gpt2-tiny-random-onnx');
      const g = m.graph;
      g.initializer.push(
        transposed(g, 'h.1.mlp.c_fc.weight', 'variant/c_fc_t'),
        transposed(g, 'h.1.mlp.c_proj.weight', 'variant/c_proj_t'),
        int64Tensor('variant/rows_by_64', [-1, 64]),
        int64Tensor('variant/zero', [0]),
        int64Tensor('variant/two', [2]),
        int64Tensor('variant/vocab', [50257]),
      );
      replaceNodes(
        g,
        ['/h.1/c_fc/MatMul_output_0', '/h.1/c_fc/Add_output_0'],
        [
          node('Reshape', ['/h.1/ln_2/Add_1_output_0', 'variant/rows_by_64'], ['variant/mlp_in_2d']),
          node(
            'Gemm',
            ['variant/mlp_in_2d', 'variant/c_fc_t', 'h.1.mlp.c_fc.bias'],
            ['/h.1/c_fc/Add_output_0'],
            attrs({ transB: 1 }),
          ),
        ],
      );
      replaceNodes(
        g,
        ['/h.1/c_proj_1/MatMul_output_0', '/h.1/c_proj_1/Add_output_0'],
        [
          node(
            'Gemm',
            ['/h.1/Mul_3_output_0', 'variant/c_proj_t', 'h.1.mlp.c_proj.bias'],
            ['variant/mlp_out_2d'],
            attrs({ transB: 1 }),
          ),
          node('Shape', ['/h.1/Add_1_output_0'], ['variant/residual_shape']),
          node('Reshape', ['variant/mlp_out_2d', 'variant/residual_shape'], ['/h.1/c_proj_1/Add_output_0']),
        ],
      );
      // Logits as [batch*seq, vocab] reshaped back with a shape computed from the full sequence.
      replaceNodes(
        g,
        ['logits'],
        [
          node('Reshape', ['/ln_f/Add_1_output_0', 'variant/rows_by_64'], ['variant/hidden_2d']),
          node('Gemm', ['variant/hidden_2d', 'wte.weight'], ['variant/logits_2d'], attrs({ transB: 1 })),
          node('Shape', ['/ln_f/Add_1_output_0'], ['variant/hidden_shape']),
          node('Slice', ['variant/hidden_shape', 'variant/zero', 'variant/two'], ['variant/batch_seq']),
          node(
            'Concat',
            ['variant/batch_seq', 'variant/vocab'],
            ['variant/logits_shape'],
            attrs({ axis: 0 }),
          ),
          node('Reshape', ['variant/logits_2d', 'variant/logits_shape'], ['logits']),
        ],
      );
      for (const unused of ['onnx::MatMul_317', 'h.1.mlp.c_fc.weight', 'h.1.mlp.c_proj.weight'])
        dropInitializer(g, unused);
      return m;
    },
  },
  'tied unembedding through a Transpose node, with a logits bias': {
    fixture: 'aidreams260K-onnx',
    build() {
      const m = loadExport('aidreams260K-onnx');
      // A bias equal for every token leaves softmax, entropy and argmax unchanged.
      m.graph.initializer.push(floatTensor('variant/logits_bias', [512], new Float32Array(512).fill(0.5)));
      replaceNodes(
        m.graph,
        ['logits'],
        [
          node('Transpose', ['model.embed_tokens.weight'], ['variant/unembedding'], attrs({ perm: [1, 0] })),
          node('MatMul', ['/norm/Mul_1_output_0', 'variant/unembedding'], ['variant/logits_no_bias']),
          node('Add', ['variant/logits_no_bias', 'variant/logits_bias'], ['logits']),
        ],
      );
      dropInitializer(m.graph, 'onnx::MatMul_880');
      return m;
    },
    logitOffset: 0.5,
    weightsCheck: (w) => expect(Array.from(w.unembedBias!)).toEqual(new Array(512).fill(0.5)),
  },
  'opset 18 (ReduceMean axes as an input)': {
    fixture: 'aidreams260K-onnx',
    build() {
      const m = loadExport('aidreams260K-onnx');
      m.graph.initializer.push(int64Tensor('variant/last_axis', [-1]));
      for (const n of m.graph.node) {
        if (n.opType !== 'ReduceMean') continue;
        n.attribute = n.attribute.filter((a) => a.name !== 'axes');
        n.input.push('variant/last_axis');
      }
      setOpset(m, '', 18);
      return m;
    },
  },
  'Optimum merged decoder (If on use_cache_branch)': {
    fixture: 'aidreams260K-onnx',
    build: () => mergedDecoder(loadExport('aidreams260K-onnx')),
  },
};

/**
 * Wraps a decoder into Optimum's merged layout: the main graph keeps the inputs and weights;
 * an If on use_cache_branch holds a copy of the nodes in each branch. The no-cache branch here
 * negates the logits, so inlining the wrong branch cannot go unnoticed.
 */
function mergedDecoder(m: ModelProto): ModelProto {
  const g = m.graph;
  const outer = new Set([...g.input.map((v) => v.name), ...g.initializer.map((t) => t.name)]);
  const branch = (prefix: string, negateLogits: boolean): GraphProto => {
    const rename = (n: string) => (n && !outer.has(n) ? `${prefix}/${n}` : n);
    const nodes = g.node.map((n) => ({
      ...n,
      name: `${prefix}/${n.name}`,
      input: n.input.map(rename),
      output: n.output.map(rename),
    }));
    const outputs = g.output.map((o) => ({ ...o, name: rename(o.name) }));
    if (negateLogits) {
      nodes.push(node('Neg', [rename('logits')], [`${prefix}/negated_logits`]));
      outputs[0] = { ...outputs[0]!, name: `${prefix}/negated_logits` };
    }
    return { name: prefix, node: nodes, initializer: [], input: [], output: outputs, valueInfo: [] };
  };
  g.node = [
    node(
      'If',
      ['use_cache_branch'],
      g.output.map((o) => o.name),
      attrs({ then_branch: branch('with_past', false), else_branch: branch('without_past', true) }),
    ),
  ];
  g.input.push({ name: 'use_cache_branch', elemType: DataType.BOOL, shape: [{ value: 1 }] });
  return m;
}

// ------------------------------------------------------------ checks

const checkpointWeights = { 'aidreams260K-onnx': aidreamsWeights, 'gpt2-tiny-random-onnx': gpt2TinyWeights };
let counter = 0;

async function session(path: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path);
}

async function checkInstrumented(
  fx: ExportFixture,
  dir: string,
  logitOffset = 0,
): Promise<ort.InferenceSession> {
  const prepared = await prepareExportGraph(dir, { cacheDir });
  const plain = await session(prepared.plainModelPath);
  const instrumented = await session(prepared.modelPath);
  try {
    // The variant itself must still be the same model as the fixture.
    const original = await session(join(fx.dir, 'onnx', 'model.onnx'));
    const variantLogits = floats((await run(plain, fx.spec, fx.ids)).logits as ort.Tensor);
    const originalLogits = floats((await run(original, fx.spec, fx.ids)).logits as ort.Tensor);
    await original.release();
    expect(
      maxAbsDiff(
        variantLogits,
        originalLogits.map((v) => v + logitOffset),
      ),
    ).toBeLessThan(1e-3);

    const d = await deviationsFromExpected(instrumented, fx);
    expect(d.entropy).toBeLessThan(1e-4);
    expect(d.normScale).toBeLessThan(1e-4);
    expect(d.mlpAct).toBeLessThan(1e-4);
    const logits = floats(d.out.logits as ort.Tensor);
    expect(maxAbsDiff(logits, variantLogits)).toBeLessThanOrEqual(1e-5);

    const V = fx.spec.vocabSize;
    const last = await run(instrumented, fx.spec, fx.ids, { keep: 1 });
    expect((last.logits as ort.Tensor).dims).toEqual([1, 1, V]);
    expect(
      maxAbsDiff(floats(last.logits as ort.Tensor), row(logits, fx.ids.length - 1, V)),
    ).toBeLessThanOrEqual(1e-5);
    return instrumented;
  } finally {
    await plain.release();
  }
}

function checkWeights(name: FixtureName, dir: string, extra?: (w: LastLayerWeights) => void): void {
  const w = lastLayerWeightsFromExport(dir);
  const ref = checkpointWeights[name]();
  expect([w.dModel, w.dMlp, w.vocabSize, w.normType]).toEqual([
    ref.dModel,
    ref.dMlp,
    ref.vocabSize,
    ref.normType,
  ]);
  expect(maxAbsDiff(w.unembed, ref.unembed)).toBe(0);
  expect(maxAbsDiff(w.wOut, ref.wOut)).toBe(0);
  expect(maxAbsDiff(w.finalNormWeight, ref.finalNormWeight)).toBe(0);
  if (ref.finalNormBias) expect(maxAbsDiff(w.finalNormBias!, ref.finalNormBias)).toBe(0);
  expect(w.normEps).toBeCloseTo(EPS, 9);
  if (extra) extra(w);
  else expect(w.unembedBias).toBeNull();
}

describe.each(Object.entries(variants))('export variant: %s', (label, variant) => {
  it("instruments to the same signals as expected.json, and yields the checkpoint's weights", async () => {
    const fx = exportFixture(variant.fixture);
    const dir = writeExport(variant.fixture, `variant-${counter++}`, variant.build());
    const instrumented = await checkInstrumented(fx, dir, variant.logitOffset);
    await instrumented.release();
    checkWeights(variant.fixture, dir, variant.weightsCheck);
  });
});

describe('Optimum merged decoder', () => {
  it('is found as decoder_model_merged.onnx, and its inlined cache branch decodes step by step like the full pass', async () => {
    const fx = exportFixture('aidreams260K-onnx');
    const dir = writeExport(
      'aidreams260K-onnx',
      'merged-layout',
      mergedDecoder(loadExport('aidreams260K-onnx')),
      'onnx/decoder_model_merged.onnx',
    );
    const prepared = await prepareExportGraph(dir, { cacheDir });
    expect(prepared.plainModelPath).toBe(join(dir, 'onnx', 'decoder_model_merged.onnx'));
    const s = await session(prepared.modelPath);
    expect(s.inputNames).not.toContain('use_cache_branch');
    const { spec, ids } = fx;
    const full = floats((await run(s, spec, ids)).logits as ort.Tensor);
    let out = await run(s, spec, ids.slice(0, 4), { keep: 1 });
    for (let t = 4; t < ids.length; t++) {
      out = await run(s, spec, [ids[t]!], { keep: 1, past: presentsAsPast(out, spec), pastLength: t });
      expect(maxAbsDiff(floats(out.logits as ort.Tensor), row(full, t, spec.vocabSize))).toBeLessThanOrEqual(
        1e-4,
      );
    }
    await s.release();
  });
});

describe('external data', () => {
  /** Moves every initializer over 1 KiB into one side file, as large exports do. */
  function withExternalData(m: ModelProto, dir: string, file: string): ModelProto {
    const chunks: Uint8Array[] = [];
    let offset = 0;
    for (const t of m.graph.initializer) {
      if (!t.rawData || t.rawData.length <= 1024) continue;
      const padding = (64 - (offset % 64)) % 64;
      chunks.push(new Uint8Array(padding), t.rawData);
      offset += padding;
      t.externalData = [
        { key: 'location', value: file },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(t.rawData.length) },
      ];
      t.dataLocation = 1;
      offset += t.rawData.length;
      delete t.rawData;
    }
    writeFileSync(join(dir, 'onnx', file), Buffer.concat(chunks));
    return m;
  }

  it('keeps working when the weights live in a model.onnx_data file', async () => {
    const fx = exportFixture('gpt2-tiny-random-onnx');
    const dir = join(scratch, 'external');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    const m = withExternalData(loadExport('gpt2-tiny-random-onnx'), dir, 'model.onnx_data');
    writeExport('gpt2-tiny-random-onnx', 'external', m);
    expect(statSync(join(dir, 'onnx', 'model.onnx')).size).toBeLessThan(200_000);

    const instrumented = await checkInstrumented(fx, dir);
    await instrumented.release();
    checkWeights('gpt2-tiny-random-onnx', dir);
    // The cached graph still refers to the side file, which sits next to it.
    const prepared = await prepareExportGraph(dir, { cacheDir });
    expect(readdirSync(join(prepared.modelPath, '..')).sort()).toEqual(['model.onnx', 'model.onnx_data']);
    expect(statSync(prepared.modelPath).size).toBeLessThan(200_000);
  });

  it("re-keys the cache when the side file's weights change and model.onnx does not", async () => {
    const dir = join(scratch, 'external-rekey');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    const m = withExternalData(loadExport('aidreams260K-onnx'), dir, 'model.onnx_data');
    writeExport('aidreams260K-onnx', 'external-rekey', m);
    const a = await prepareExportGraph(dir, { cacheDir });
    const graphBytes = readFileSync(join(dir, 'onnx', 'model.onnx'));
    expect(a.weightFiles).toEqual([join(dir, 'onnx', 'model.onnx'), join(dir, 'onnx', 'model.onnx_data')]);
    const side = join(dir, 'onnx', 'model.onnx_data');
    const data = readFileSync(side);
    data[data.length - 1] ^= 0x01; // one bit of one weight
    writeFileSync(side, data);
    const b = await prepareExportGraph(dir, { cacheDir });
    expect(readFileSync(join(dir, 'onnx', 'model.onnx')).equals(graphBytes)).toBe(true);
    expect(b.cacheKey).not.toBe(a.cacheKey);
    expect(b.identity.weightsHash).not.toBe(a.identity.weightsHash);
    expect(b.identity.configHash).toBe(a.identity.configHash);
    // The new entry carries the changed side file, not the old one.
    expect(readFileSync(join(b.modelPath, '..', 'model.onnx_data')).equals(data)).toBe(true);
  });

  it('names the missing side file', async () => {
    const dir = join(scratch, 'external-missing');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    const m = withExternalData(loadExport('aidreams260K-onnx'), dir, 'weights.bin');
    writeExport('aidreams260K-onnx', 'external-missing', m);
    rmSync(join(dir, 'onnx', 'weights.bin'));
    await expect(prepareExportGraph(dir, { cacheDir })).rejects.toThrow(/weights\.bin.*not found/);
    expect(() => lastLayerWeightsFromExport(dir)).toThrow(/weights\.bin.*not found/);
  });
});

describe('graphs without the expected structure', () => {
  it('a graph whose logits skip the final norm is rejected naming the file', async () => {
    const m = loadExport('aidreams260K-onnx');
    replaceNodes(
      m.graph,
      ['/norm/', 'logits'],
      [node('MatMul', ['/layers.3/Add_1_output_0', 'onnx::MatMul_880'], ['logits'])],
    );
    const dir = writeExport('aidreams260K-onnx', 'no-norm', m);
    await expect(prepareExportGraph(dir, { cacheDir })).rejects.toThrow(
      /model\.onnx: no recognisable final norm/,
    );
  });
});
