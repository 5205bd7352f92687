// `npm run bench -- --quant [--sizes gpt2-small] [--dtypes fp32,int8,int4,fp16,int8+last,int4+last]`
//
// Each dtype's graph of the same checkpoint, side by side in one run: decode and prefill tokens/s
// through the sidecar's engine (worker thread + signals, greedy; interleaved repetitions so
// machine noise hits every dtype alike), resident memory of a process that loaded only that
// dtype (a child process each, so the numbers do not include each other), graph file size, the
// ratios to float32, and the signal fidelity against float32 (test/helpers/quant-fidelity.ts).
// `int4+last` is int4 with `--quantize-last-layer`: the last MLP and the unembedding quantized
// too, which shows what the float32 monitored weights cost in speed and buy in fidelity.
// Not a test: numbers are printed, never asserted.

import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WeightDtype } from '../src/model/architectures/weight-emission.ts';
import { openModelSource } from '../src/model/source.ts';
import { formatSplit, kernelSplit, SPLIT_HEADER } from './kernel-split.ts';
import { createEngineFromSource } from '../src/runtime/index.ts';
import type { OnnxEngine } from '../src/runtime/engine.ts';
import type { SamplingParams } from '../src/runtime/types.ts';
import { formatFidelity, measureFidelity, variantLabel, type Variant } from '../test/helpers/quant-fidelity.ts';
import { greedyParams } from '../test/helpers/sampling.ts';

export interface QuantBenchOptions {
  variants: Variant[];
  tokens: number;
  promptTokens: number;
  reps: number;
}

interface Timing {
  prefillS: number;
  decodeS: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function dirBytes(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f.startsWith('model.onnx'))
    .reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

async function timeRun(engine: OnnxEngine, prompt: number[], params: SamplingParams): Promise<Timing> {
  const it = engine.generate({ promptIds: prompt, params });
  const t0 = performance.now();
  let prefillS = 0;
  for (let r = await it.next(), first = true; !r.done; r = await it.next(), first = false) {
    if (first) prefillS = (performance.now() - t0) / 1000;
  }
  return { prefillS, decodeS: (performance.now() - t0) / 1000 - prefillS };
}

/** RSS (MiB) of a fresh process that loads `dir` as `v` and generates a few tokens. */
function childRss(dir: string, v: Variant): number {
  const self = fileURLToPath(import.meta.url);
  const args = [self, '--rss-child', dir, v.dtype, v.quantizeLastLayer ? 'last' : ''];
  const r = spawnSync(process.execPath, ['--import', 'tsx', ...args], {
    encoding: 'utf8',
    cwd: join(dirname(self), '..'),
  });
  const m = /rss=(\d+)/.exec(r.stdout);
  if (!m) throw new Error(`rss child failed: ${r.stderr.slice(-500)}`);
  return Number(m[1]) / 2 ** 20;
}

async function rssChild(dir: string, v: Variant): Promise<void> {
  const engine = await createEngineFromSource(await openModelSource(dir, v), {});
  const prompt = [1, 2, 3, 4, 5, 6, 7, 8];
  await timeRun(engine, prompt, greedyParams(8));
  process.stdout.write(`rss=${process.memoryUsage().rss}\n`);
  await engine.close();
}

export async function benchQuant(label: string, dir: string, opts: QuantBenchOptions): Promise<void> {
  const variants: Variant[] = [{ dtype: 'fp32' }, ...opts.variants.filter((v) => variantLabel(v) !== 'fp32')];
  const labels = variants.map(variantLabel);
  process.stderr.write(`\n[${label}] building ${labels.join(', ')} graphs (cached after the first run)...\n`);
  const engines: OnnxEngine[] = [];
  const sizes: number[] = [];
  const graphs: string[] = [];
  for (const v of variants) {
    const source = await openModelSource(dir, v);
    graphs.push(source.modelPath);
    sizes.push(dirBytes(dirname(source.modelPath)));
    engines.push(await createEngineFromSource(source, {}));
  }
  const spec = engines[0]!.spec;
  const prompt = Array.from({ length: opts.promptTokens }, (_, i) => (i * 7919 + 13) % spec.vocabSize);
  const params = greedyParams(opts.tokens);
  for (const e of engines) await timeRun(e, prompt, { ...params, maxTokens: 4 });
  const runs: Timing[][] = variants.map(() => []);
  for (let r = 0; r < opts.reps; r++) {
    for (let i = 0; i < engines.length; i++) runs[i]!.push(await timeRun(engines[i]!, prompt, params));
  }
  for (const e of engines) await e.close();
  const rss = variants.map((v) => childRss(dir, v));

  const decode = runs.map((t) => (opts.tokens - 1) / median(t.map((x) => x.decodeS)));
  const prefill = runs.map((t) => opts.promptTokens / median(t.map((x) => x.prefillS)));
  console.log(`\n## dtypes: ${label}  (${spec.architecture}, ${spec.nLayers} layers, d_model ${spec.dModel}, vocab ${spec.vocabSize})`);
  console.log(`engine greedy decode, prompt ${opts.promptTokens} tokens, ${opts.tokens} generated, median of ${opts.reps} interleaved runs`);
  console.log('dtype      decode tok/s  (x fp32)   prefill tok/s  (x fp32)   RSS MiB  (x fp32)   graph MiB  (x fp32)');
  const x = (v: number, base: number) => `(${(v / base).toFixed(2)}x)`.padStart(9);
  labels.forEach((d, i) => {
    console.log(
      `${d.padEnd(9)} ${decode[i]!.toFixed(1).padStart(12)} ${x(decode[i]!, decode[0]!)}` +
        ` ${prefill[i]!.toFixed(1).padStart(14)} ${x(prefill[i]!, prefill[0]!)}` +
        ` ${rss[i]!.toFixed(0).padStart(9)} ${x(rss[i]!, rss[0]!)}` +
        ` ${(sizes[i]! / 2 ** 20).toFixed(1).padStart(10)} ${x(sizes[i]!, sizes[0]!)}`,
    );
  });
  const ratio = (d: string) => (labels.includes(d) ? decode[labels.indexOf(d)]! / decode[0]! : NaN);
  for (const [d, target] of [
    ['int8', 1.5],
    ['int4', 2],
    ['int8+last', 1.5],
    ['int4+last', 2],
  ] as const) {
    const r = ratio(d);
    if (!Number.isNaN(r)) console.log(`${d} decode ${r.toFixed(2)}x fp32 (target >= ${target}x): ${r >= target ? 'OK' : 'BELOW TARGET'}`);
  }
  console.log(`\n${SPLIT_HEADER}`);
  for (let i = 0; i < variants.length; i++) console.log(formatSplit(labels[i]!, await kernelSplit(graphs[i]!, spec)));
  const fidelity = await measureFidelity(dir, variants.slice(1));
  console.log(formatFidelity(label, fidelity));
}

if (process.argv[2] === '--rss-child') {
  await rssChild(process.argv[3]!, { dtype: process.argv[4] as WeightDtype, quantizeLastLayer: process.argv[5] === 'last' });
}
