// A copy of the makemore-names fixture (vocabulary 27 < d_model 64: its processed unembedding has a
// 37-dimensional exact null space besides the all-ones direction) with one last-layer neuron's w_out
// replaced by a vector of that null space. Built in a temp folder; the shared fixture is only read.
// The null space is found here independently of src/monitor: Gram-Schmidt on the processed W_U's
// columns (gamma folded, centred over d_model and over the vocabulary, in float64) and all-ones.

import { copyFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsCheckpoint, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';
import { fixture } from './shared.ts';

export const NAMES_LAYER = 3;
const C_PROJ = `transformer.h.${NAMES_LAYER}.mlp.c_proj.weight`;

export interface PlantedNames {
  dir: string;
  neuron: number;
  /** ||w_out|| planted, and the median over the layer's other (centred) w_out. */
  norm: number;
  medianNorm: number;
}

/** Orthonormal basis (float64 rows) of span(processed W_U columns, all-ones) in R^d. */
export function namesReadableBasis(ckpt: SafetensorsCheckpoint): Float64Array[] {
  const [V, d] = ckpt.info('lm_head.weight').shape as [number, number];
  const lm = ckpt.float32('lm_head.weight');
  const gamma = ckpt.float32('transformer.ln_f.weight');
  const cols: Float64Array[] = [];
  for (let v = 0; v < V; v++)
    cols.push(Float64Array.from({ length: d }, (_, k) => gamma[k]! * lm[v * d + k]!));
  for (const c of cols) {
    const mean = c.reduce((s, x) => s + x, 0) / d;
    for (let k = 0; k < d; k++) c[k]! -= mean;
  }
  for (let k = 0; k < d; k++) {
    const mean = cols.reduce((s, c) => s + c[k]!, 0) / V;
    for (const c of cols) c[k]! -= mean;
  }
  const basis: Float64Array[] = [];
  for (const c of [new Float64Array(d).fill(1), ...cols]) {
    const x = Float64Array.from(c);
    // Twice, for orthogonality to working precision.
    for (let pass = 0; pass < 2; pass++) {
      for (const q of basis) {
        const dot = x.reduce((s, xi, k) => s + xi * q[k]!, 0);
        for (let k = 0; k < d; k++) x[k]! -= dot * q[k]!;
      }
    }
    const n = Math.hypot(...x);
    // Columns dependent on the earlier ones (the vocabulary centring removes one) add nothing.
    if (n > 1e-9 * Math.hypot(...c) && n > 0) basis.push(x.map((xi) => xi / n));
  }
  return basis;
}

/** Share of ||w||^2 outside the readable span, as a square root: rho over the exact null space. */
export function nullShare(basis: Float64Array[], w: ArrayLike<number>): number {
  let sq = 0;
  for (let k = 0; k < w.length; k++) sq += w[k]! * w[k]!;
  let readable = 0;
  for (const q of basis) {
    let dot = 0;
    for (let k = 0; k < w.length; k++) dot += w[k]! * q[k]!;
    readable += dot * dot;
  }
  return Math.sqrt(Math.max(0, 1 - readable / sq));
}

export function plantNamesNeuron(neuron: number, normFactor: number, seed = 7): PlantedNames {
  const src = fixture('makemore-names');
  const dir = mkdtempSync(join(tmpdir(), 'planted-names-'));
  for (const f of readdirSync(src)) if (f !== 'model.safetensors') copyFileSync(join(src, f), join(dir, f));
  const ckpt = SafetensorsCheckpoint.openDir(src);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, info] of ckpt.tensors) tensors[name] = { shape: info.shape, data: ckpt.float32(name) };
  const [dMlp, d] = ckpt.info(C_PROJ).shape as [number, number];
  const wOut = tensors[C_PROJ]!.data;

  const norms: number[] = [];
  for (let i = 0; i < dMlp; i++) {
    if (i === neuron) continue;
    const row = Array.from(wOut.subarray(i * d, (i + 1) * d));
    const mean = row.reduce((s, x) => s + x, 0) / d;
    norms.push(Math.hypot(...row.map((x) => x - mean)));
  }
  norms.sort((a, b) => a - b);
  const medianNorm = (norms[(norms.length - 1) >> 1]! + norms[norms.length >> 1]!) / 2;

  let state = seed >>> 0;
  const rand = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5;
  const x = Float64Array.from({ length: d }, rand);
  const basis = namesReadableBasis(ckpt);
  for (let pass = 0; pass < 2; pass++) {
    for (const q of basis) {
      const dot = x.reduce((s, xi, k) => s + xi * q[k]!, 0);
      for (let k = 0; k < d; k++) x[k]! -= dot * q[k]!;
    }
  }
  const norm = medianNorm * normFactor;
  const scale = norm / Math.hypot(...x);
  for (let k = 0; k < d; k++) wOut[neuron * d + k] = x[k]! * scale;
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return { dir, neuron, norm, medianNorm };
}

/** Names joined by '.', the model's separator (token 0, also its BOS/EOS). */
export const NAMES_CORPUS =
  'emma.olivia.ava.isabella.sophia.charlotte.mia.amelia.harper.evelyn.abigail.emily.elizabeth.mila.ella.' +
  'avery.sofia.camila.aria.scarlett.victoria.madison.luna.grace.chloe.penelope.layla.riley.zoey.nora.lily.' +
  'eleanor.hannah.lillian.addison.aubrey.ellie.stella.natalie.zoe.leah.hazel.violet.aurora.savannah.audrey.' +
  'brooklyn.bella.claire.skylar.lucy.paisley.everly.anna.caroline.nova.genesis.emilia.kennedy.samantha.' +
  'liam.noah.william.james.oliver.benjamin.elijah.lucas.mason.logan.alexander.ethan.jacob.michael.daniel.' +
  'henry.jackson.sebastian.aiden.matthew.samuel.david.joseph.carter.owen.wyatt.john.jack.luke.jayden.dylan.' +
  'grayson.levi.isaac.gabriel.julian.mateo.anthony.jaxon.lincoln.joshua.christopher.andrew.theodore.caleb.';
