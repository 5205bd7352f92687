// The layers only point down: model <- monitor <- demo <- runtime <- server <- commands / dashboards
// <- cli. A file may import its own layer and any lower one, never a higher one. `src/errors.ts` is
// the shared base every layer may use.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const srcDir = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

/** Rank of each top-level folder (or root file) under src/: higher may import lower. */
export const LAYERS: Record<string, number> = {
  'errors.ts': 0,
  model: 1,
  monitor: 2,
  demo: 3,
  runtime: 4,
  server: 5,
  proxy: 6,
  commands: 7,
  dashboards: 7,
  'cli.ts': 8,
};

function* sourceFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sourceFiles(p);
    else if (/\.(ts|mjs|js)$/.test(name)) yield p;
  }
}

export function layerOf(file: string): string {
  return relative(srcDir, file).split('/')[0]!;
}

/** Relative import specifiers of a source text (static, dynamic and `new URL(...)` references). */
export function relativeImports(text: string): string[] {
  const specs: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)(['"])(\.{1,2}\/[^'"]+)\1/g;
  for (const m of text.matchAll(re)) specs.push(m[2]!);
  return specs;
}

/** Every import of `files` that points from a lower layer to a higher one. */
export function upwardImports(files: Iterable<string>, read: (f: string) => string): string[] {
  const bad: string[] = [];
  for (const file of files) {
    const from = layerOf(file);
    const rank = LAYERS[from];
    if (rank === undefined) {
      bad.push(`${relative(srcDir, file)}: folder '${from}' has no layer in test/layers.test.ts`);
      continue;
    }
    for (const spec of relativeImports(read(file))) {
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(srcDir + '/')) continue;
      const to = layerOf(target);
      const targetRank = LAYERS[to];
      if (targetRank === undefined || targetRank > rank) {
        bad.push(`${relative(srcDir, file)} (${from}) imports ${spec} (${to})`);
      }
    }
  }
  return bad;
}

describe('layers', () => {
  it('no source file imports a higher layer', () => {
    const files = [...sourceFiles(srcDir)];
    expect(files.length).toBeGreaterThan(50);
    expect(upwardImports(files, (f) => readFileSync(f, 'utf8'))).toEqual([]);
  });

  it('the check catches an upward import', () => {
    const fake = join(srcDir, 'model', 'fake.ts');
    const text = "import { x } from '../runtime/engine.ts';\nconst y = await import('../server/app.ts');";
    expect(upwardImports([fake], () => text)).toEqual([
      'model/fake.ts (model) imports ../runtime/engine.ts (runtime)',
      'model/fake.ts (model) imports ../server/app.ts (server)',
    ]);
  });
});
