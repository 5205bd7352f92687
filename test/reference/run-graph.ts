// Test harness around onnxruntime-node for graphs with the IO contract of src/model/types.ts:
// feeds built from plain arrays, outputs copied out as float32 arrays.

import * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../../src/model/types.ts';

export interface KvCache {
  keys: ort.Tensor[];
  values: ort.Tensor[];
}

export interface GraphRequest {
  /** One row per batch entry, all the same length. */
  ids: number[][];
  /** Defaults to all ones over past + current. */
  attentionMask?: number[][];
  /** Defaults to past, past + 1, ... */
  positionIds?: number[][];
  past?: KvCache;
  /** Defaults to every position. */
  keep?: number;
  scale?: Float32Array;
  shift?: Float32Array;
}

export interface GraphResult {
  /** [batch, keep, vocab] */
  logits: Float32Array;
  keep: number;
  present: KvCache;
  mlpAct?: Float32Array;
  finalNormScale?: Float32Array;
  finalResidual?: Float32Array;
}

export class GraphRunner {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly spec: ModelSpec,
  ) {}

  static async open(modelPath: string, spec: ModelSpec): Promise<GraphRunner> {
    // One thread: vitest runs two files at once on a two-core machine.
    const session = await ort.InferenceSession.create(modelPath, {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
    });
    return new GraphRunner(session, spec);
  }

  get instrumented(): boolean {
    return this.session.inputNames.includes(IO.neuronScale);
  }

  async run(req: GraphRequest): Promise<GraphResult> {
    const { spec } = this;
    const batch = req.ids.length;
    const seq = req.ids[0]!.length;
    const pastLen = req.past ? req.past.keys[0]!.dims[2]! : 0;
    const total = pastLen + seq;
    const int64 = (rows: number[][], width: number) =>
      new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [batch, width]);
    const emptyKv = () =>
      new ort.Tensor('float32', new Float32Array(0), [batch, spec.nKvHeads, 0, spec.headDim]);
    const keep = req.keep ?? seq;
    const feeds: Record<string, ort.Tensor> = {
      [IO.inputIds]: int64(req.ids, seq),
      [IO.attentionMask]: int64(
        req.attentionMask ?? req.ids.map(() => new Array<number>(total).fill(1)),
        total,
      ),
      [IO.positionIds]: int64(
        req.positionIds ?? req.ids.map(() => Array.from({ length: seq }, (_, i) => pastLen + i)),
        seq,
      ),
      [IO.logitsToKeep]: new ort.Tensor('int64', BigInt64Array.from([BigInt(keep)]), [1]),
    };
    for (let l = 0; l < spec.nLayers; l++) {
      feeds[IO.pastKey(l)] = req.past?.keys[l] ?? emptyKv();
      feeds[IO.pastValue(l)] = req.past?.values[l] ?? emptyKv();
    }
    if (this.instrumented) {
      // Per-row interventions ([batch, d_mlp]): the request's one row applies to every row.
      const rows = (v: Float32Array) => {
        const out = new Float32Array(batch * spec.dMlp);
        for (let b = 0; b < batch; b++) out.set(v, b * spec.dMlp);
        return new ort.Tensor('float32', out, [batch, spec.dMlp]);
      };
      feeds[IO.neuronScale] = rows(req.scale ?? new Float32Array(spec.dMlp).fill(1));
      feeds[IO.neuronShift] = rows(req.shift ?? new Float32Array(spec.dMlp));
      feeds[IO.unigramLogProb] = new ort.Tensor('float32', new Float32Array(spec.vocabSize), [spec.vocabSize]);
    }
    const out = await this.session.run(feeds);
    const f32 = (name: string) => (out[name] ? Float32Array.from(out[name].data as Float32Array) : undefined);
    return {
      logits: f32(IO.logits)!,
      keep: out[IO.logits]!.dims[1]!,
      present: {
        keys: Array.from({ length: spec.nLayers }, (_, l) => out[IO.presentKey(l)]!),
        values: Array.from({ length: spec.nLayers }, (_, l) => out[IO.presentValue(l)]!),
      },
      mlpAct: f32(IO.mlpAct),
      finalNormScale: f32(IO.finalNormScale),
      finalResidual: f32(IO.finalResidual),
    };
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Largest |a[i] - b[i]|; throws on a length mismatch so a shape bug cannot pass as "close". */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return Number.isNaN(m) ? Infinity : m;
}

/** Flattens per-position float64 rows into one array. */
export function flatten(rows: ArrayLike<number>[]): Float64Array {
  const width = rows[0]?.length ?? 0;
  const out = new Float64Array(rows.length * width);
  rows.forEach((r, i) => out.set(r, i * width));
  return out;
}
