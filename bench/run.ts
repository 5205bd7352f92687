// `npm run bench [-- --model DIR ...] [--sizes tiny,gpt2-small] [--tokens N] [--prompt-tokens N] [--reps N] [--dtype int8]
//   [--proxy] [--quant [--dtypes fp32,int8,int4,fp16,int8+last,int4+last]]
//   [--concurrency 1,4,8,16] [--analyze]`
//
// Measures, side by side in one process and with interleaved repetitions (A B C A B C ...) so
// that machine noise hits every variant alike:
//   plain      a bare onnxruntime-node greedy loop on the PLAIN graph (no instrumentation)
//   instr      the same bare loop on the INSTRUMENTED graph (identity interventions)
//   engine     the project's generation loop (worker thread, signals, sampling) on the instrumented graph
// and prints decode and prefill tokens/s with the ratios the project targets:
//   instrumented decode >= 0.97x plain;  engine decode >= 0.95x bare loop on the same graph.
// Then the concurrency table (bench/concurrency.ts): 1/4/8/16 streams through the real server beside
// the bare loop at the same batch sizes. With --analyze, also times `analyze` (weights, calibration).
// The small-d_model/large-vocab foreign export (gpt2-tiny-random-onnx) is included when the shared
// fixtures are present ($CONFIDENCE_SIDECAR_SHARED).
// Not a test: numbers are printed, never asserted.

import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { IO, type ModelSpec } from '../src/model/types.ts';
import { prepareCheckpointGraph } from '../src/model/graph-cache.ts';
import { isExportDir, prepareExportGraph } from '../src/model/onnx/export-source.ts';
import { openModelSource } from '../src/model/source.ts';
import { createEngineFromSource, defaultIntraOpThreads, defaultUnigramFile } from '../src/runtime/index.ts';
import { analyzeModel } from '../src/monitor/analysis.ts';
import { demoModelDir } from '../src/demo/index.ts';
import { computeWeightMetrics, defaultK } from '../src/monitor/weight-metrics.ts';
import { benchQuant } from './quant.ts';
import { parseVariant } from '../test/helpers/quant-fidelity.ts';
import { benchConcurrency } from './concurrency.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { greedyParams } from '../test/helpers/sampling.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', multiple: true },
    sizes: { type: 'string', default: 'tiny,gpt2-small' },
    tokens: { type: 'string', default: '64' },
    'prompt-tokens': { type: 'string', default: '32' },
    reps: { type: 'string', default: '5' },
    /** Also run the proxy-mode bench (bench/proxy.ts); `--sizes ''` skips the model benches. */
    proxy: { type: 'boolean', default: false },
    // --quant: compare the weight dtypes (bench/quant.ts) on each model instead of the sections above.
    quant: { type: 'boolean', default: false },
    dtypes: { type: 'string', default: 'fp32,int8,int4,fp16,int8+last,int4+last' },
    // The weight dtype of the sections above (both bare-loop graphs and the engine): fp32 by default.
    dtype: { type: 'string', default: 'fp32' },
    concurrency: { type: 'string', default: '1,4,8,16' },
    analyze: { type: 'boolean', default: false },
  },
});
// The README test runs the README's bench command line with this set: it checks how npm forwarded the
// arguments and that they parse, without the minutes a run takes.
if (process.env.CONFIDENCE_SIDECAR_BENCH_PARSE_ONLY) {
  console.log(JSON.stringify(values));
  process.exit(0);
}
const TOKENS = Number(values.tokens);
const CORPUS = new URL('../test/fixtures/corpus/stories.txt', import.meta.url).pathname;
const PROMPT = Number(values['prompt-tokens']);
const REPS = Number(values.reps);

interface Timing {
  prefillS: number;
  decodeS: number;
}

function int64(vals: number[], dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(vals.map(BigInt)), dims);
}

/** The simplest correct greedy loop over the raw session: the baseline the engine is held to. */
async function bareLoop(session: ort.InferenceSession, spec: ModelSpec, prompt: number[], n: number): Promise<Timing> {
  const instrumented = session.inputNames.includes(IO.neuronScale);
  const hasKeep = session.inputNames.includes(IO.logitsToKeep);
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < spec.nLayers; l++) {
    for (const name of [IO.pastKey(l), IO.pastValue(l)]) {
      past[name] = new ort.Tensor('float32', new Float32Array(0), [1, spec.nKvHeads, 0, spec.headDim]);
    }
  }
  const scale = new Float32Array(spec.dMlp).fill(1);
  const shift = new Float32Array(spec.dMlp);
  const unigram = new ort.Tensor('float32', new Float32Array(spec.vocabSize), [spec.vocabSize]);
  let feed = prompt;
  let len = 0;
  let prefillS = 0;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const feeds: Record<string, ort.Tensor> = {
      ...past,
      [IO.inputIds]: int64(feed, [1, feed.length]),
      [IO.attentionMask]: int64(new Array(len + feed.length).fill(1), [1, len + feed.length]),
      [IO.positionIds]: int64(feed.map((_, j) => len + j), [1, feed.length]),
    };
    if (hasKeep) feeds[IO.logitsToKeep] = int64([1], [1]);
    if (instrumented) {
      feeds[IO.neuronScale] = new ort.Tensor('float32', scale, [1, spec.dMlp]);
      feeds[IO.neuronShift] = new ort.Tensor('float32', shift, [1, spec.dMlp]);
      feeds[IO.unigramLogProb] = unigram;
    }
    const out = await session.run(feeds);
    for (let l = 0; l < spec.nLayers; l++) {
      past[IO.pastKey(l)] = out[IO.presentKey(l)]!;
      past[IO.pastValue(l)] = out[IO.presentValue(l)]!;
    }
    const logits = out[IO.logits]!.data as Float32Array;
    const row = logits.subarray(logits.length - spec.vocabSize);
    let best = 0;
    for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
    len += feed.length;
    feed = [best];
    if (i === 0) prefillS = (performance.now() - t0) / 1000;
  }
  return { prefillS, decodeS: (performance.now() - t0) / 1000 - prefillS };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => x.toFixed(1).padStart(9);

async function benchModel(label: string, dir: string): Promise<void> {
  process.stderr.write(`\n[${label}] preparing graphs (cached after the first run)...\n`);
  const { dtype, quantizeLastLayer } = parseVariant(String(values.dtype));
  const source = await openModelSource(dir, { dtype, quantizeLastLayer });
  const spec = source.spec;
  const plainPath = isExportDir(dir)
    ? (await prepareExportGraph(dir, { dtype })).plainModelPath
    : (await prepareCheckpointGraph(dir, { instrument: false, dtype, quantizeLastLayer })).modelPath;
  // The bare loops get the engine's thread count, so the ratios compare loops, not thread pools.
  const opts: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    intraOpNumThreads: defaultIntraOpThreads(),
  };
  const plain = await ort.InferenceSession.create(plainPath, opts);
  const instr = await ort.InferenceSession.create(source.modelPath, opts);
  const engine = await createEngineFromSource(source, {});
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % spec.vocabSize);
  const params = greedyParams(TOKENS);

  const engineRun = async (): Promise<Timing> => {
    const it = engine.generate({ promptIds: prompt, params });
    const t0 = performance.now();
    let prefillS = 0;
    let first = true;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      if (first) {
        prefillS = (performance.now() - t0) / 1000;
        first = false;
      }
    }
    return { prefillS, decodeS: (performance.now() - t0) / 1000 - prefillS };
  };

  // Warm-up (first runs allocate arenas), then interleaved repetitions.
  await bareLoop(plain, spec, prompt, 4);
  await bareLoop(instr, spec, prompt, 4);
  await engineRun();
  const results: Record<'plain' | 'instr' | 'engine', Timing[]> = { plain: [], instr: [], engine: [] };
  for (let r = 0; r < REPS; r++) {
    results.plain.push(await bareLoop(plain, spec, prompt, TOKENS));
    results.instr.push(await bareLoop(instr, spec, prompt, TOKENS));
    results.engine.push(await engineRun());
  }
  await engine.close();

  const decode = (k: keyof typeof results) => (TOKENS - 1) / median(results[k].map((t) => t.decodeS));
  const prefill = (k: keyof typeof results) => PROMPT / median(results[k].map((t) => t.prefillS));
  console.log(`\n## ${label}  (${spec.architecture}, ${spec.nLayers} layers, d_model ${spec.dModel}, vocab ${spec.vocabSize}, dtype ${values.dtype})`);
  console.log(`prompt ${PROMPT} tokens, ${TOKENS} generated, median of ${REPS} interleaved runs`);
  console.log('variant                          decode tok/s  prefill tok/s');
  console.log(`bare loop, plain graph        ${fmt(decode('plain'))}      ${fmt(prefill('plain'))}`);
  console.log(`bare loop, instrumented graph ${fmt(decode('instr'))}      ${fmt(prefill('instr'))}`);
  console.log(`engine (worker + signals)     ${fmt(decode('engine'))}      ${fmt(prefill('engine'))}`);
  const r1 = decode('instr') / decode('plain');
  const r2 = decode('engine') / decode('instr');
  console.log(`ratio instrumented/plain decode: ${r1.toFixed(3)}  (target >= 0.97) ${r1 >= 0.97 ? 'OK' : 'BELOW TARGET'}`);
  console.log(`ratio engine/bare-loop decode:   ${r2.toFixed(3)}  (target >= 0.95) ${r2 >= 0.95 ? 'OK' : 'BELOW TARGET'}`);

  const levels = String(values.concurrency).split(',').filter(Boolean).map(Number);
  if (levels.length > 0)
    await benchConcurrency(label, dir, instr, spec, levels, TOKENS, prompt, {
      dtype,
      'quantize-last-layer': quantizeLastLayer,
    });
  if (!values.analyze) return;

  const t0 = performance.now();
  computeWeightMetrics(source.lastLayerWeights(), { k: defaultK(spec.dModel) });
  console.log(`weight metrics (analyze's weight step): ${((performance.now() - t0) / 1000).toFixed(2)} s`);

  // `analyze` end to end with its defaults on the project's own story corpus (target: < 1 min
  // at GPT-2 small size): weights, calibration, causal verification of candidates and baseline.
  const t1 = performance.now();
  const analysisEngine = await createEngineFromSource(source, {});
  await analyzeModel(source, analysisEngine, {
    corpusFiles: [CORPUS],
    unigramFile: defaultUnigramFile(source.dir),
    top: 10,
    chunkTokens: 128,
    maxChunks: 32,
    causalPositions: 128,
    randomCount: 20,
    seed: 0,
  });
  await analysisEngine.close();
  console.log(`analyze (weights + calibration + causal verification): ${((performance.now() - t1) / 1000).toFixed(2)} s`);
}

const models: [string, string][] = [];
for (const size of String(values.sizes).split(',').filter(Boolean)) {
  models.push([`demo ${size}`, await demoModelDir(size as 'tiny' | 'small' | 'gpt2-small')]);
}
const shared = process.env.CONFIDENCE_SIDECAR_SHARED;
const foreign = shared ? join(shared, 'models', 'gpt2-tiny-random-onnx') : '';
if (!values.model && foreign && existsSync(foreign)) models.splice(1, 0, ['gpt2-tiny-random-onnx (d_model 64, vocab 50k)', foreign]);
for (const m of values.model ?? []) models.push([m, m]);
for (const [label, dir] of models) {
  if (values.quant) {
    const variants = String(values.dtypes).split(',').filter(Boolean).map(parseVariant);
    await benchQuant(label, dir, { variants, tokens: TOKENS, promptTokens: PROMPT, reps: REPS });
  } else {
    await benchModel(label, dir);
  }
}
if (values.proxy) await (await import('./proxy.ts')).benchProxy();
