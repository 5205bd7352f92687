// GraphBuilder: the model it writes decodes to what was added, large initializers live in the
// 4 KiB-aligned external data file, and ONNX Runtime runs the result.

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/model/onnx/graph-builder.ts';
import { DataType, decodeModel } from '../src/model/onnx/proto.ts';

const dir = mkdtempSync(join(tmpdir(), 'cs-builder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('GraphBuilder', () => {
  it('writes a runnable model with external, aligned initializers and shared constants', async () => {
    const g = new GraphBuilder({ dataPath: join(dir, 'model.onnx.data') });
    const inF = 4;
    const outF = 300;
    const w = Float32Array.from({ length: inF * outF }, (_, i) => Math.sin(i));
    const b = Float32Array.from({ length: outF }, (_, i) => i / 100);
    const x = g.input('x', DataType.FLOAT, ['batch', inF]);
    const wName = g.weight('w', [inF, outF], w);
    const bName = g.weight('b', [outF], b);
    const tiny = g.weight('gamma', [2], Float32Array.from([1, 2]));
    expect(g.int64([0, -1])).toBe(g.int64([0, -1]));
    expect(g.float(0.5)).toBe(g.float(0.5));
    expect(g.float(0.5)).not.toBe(g.float([0.5]));
    const y = g.node('Add', [g.node('MatMul', [x, wName]), bName]);
    // A FLOAT attribute and a named output.
    g.node('LeakyRelu', [y], { alpha: { float: 0.25 } }, 'out');
    g.output('out', DataType.FLOAT, ['batch', outF]);
    expect(() => g.node('Softmax', [y], { axis: 1.5 })).toThrow(/not an integer/);
    expect(() => g.output('nope', DataType.FLOAT, [1])).toThrow(/not produced/);
    const modelPath = join(dir, 'model.onnx');
    g.save(modelPath, { purpose: 'test' });

    const model = decodeModel(readFileSync(modelPath));
    expect(model.opsetImport).toEqual([{ domain: '', version: 17 }]);
    expect(model.metadataProps).toEqual([{ key: 'purpose', value: 'test' }]);
    const inits = new Map(model.graph.initializer.map((t) => [t.name, t]));
    const ext = (name: string) =>
      Object.fromEntries(inits.get(name)!.externalData!.map((e) => [e.key, e.value]));
    expect(inits.get(wName)!.dataLocation).toBe(1);
    expect(ext(wName)).toEqual({ location: 'model.onnx.data', offset: '0', length: String(w.byteLength) });
    expect(Number(ext(bName).offset) % 4096).toBe(0);
    expect(Number(ext(bName).offset)).toBeGreaterThanOrEqual(w.byteLength);
    expect(statSync(join(dir, 'model.onnx.data')).size).toBe(Number(ext(bName).offset) + b.byteLength);
    // Small tensors stay inline.
    expect(Array.from(new Uint8Array(inits.get(tiny)!.rawData!))).toEqual(
      Array.from(new Uint8Array(Float32Array.from([1, 2]).buffer)),
    );

    const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
    const input = Float32Array.from([1, -2, 0.5, 3, 0, 1, 0, -1]);
    const out = (await session.run({ x: new ort.Tensor('float32', input, [2, inF]) })).out!
      .data as Float32Array;
    for (let r = 0; r < 2; r++) {
      for (let o = 0; o < outF; o++) {
        let s = b[o]!;
        for (let i = 0; i < inF; i++) s += input[r * inF + i]! * w[i * outF + o]!;
        expect(out[r * outF + o]).toBeCloseTo(s > 0 ? s : 0.25 * s, 5);
      }
    }
    await session.release();
  });
});
