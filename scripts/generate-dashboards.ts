// Writes the Grafana dashboards generated from src/dashboards into dashboards/, formatted
// with the project's Prettier config (so `prettier --check .` passes on them too).
// `--check` writes nothing and exits 1 when a committed file differs in content from the generator.
//   npx tsx scripts/generate-dashboards.ts [--check]

import { isDeepStrictEqual } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { generateDashboards, renderDashboard } from '../src/dashboards/index.ts';

const outDir = fileURLToPath(new URL('../dashboards/', import.meta.url));
const check = process.argv.includes('--check');
let stale = 0;

mkdirSync(outDir, { recursive: true });
for (const [file, dashboard] of Object.entries(generateDashboards())) {
  const path = join(outDir, file);
  const current = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as unknown) : null;
  if (isDeepStrictEqual(current, dashboard)) continue;
  if (check) {
    console.error(`${path} is out of date; run: npx tsx scripts/generate-dashboards.ts`);
    stale++;
    continue;
  }
  const options = (await prettier.resolveConfig(path)) ?? {};
  writeFileSync(path, await prettier.format(renderDashboard(dashboard), { ...options, filepath: path }));
  console.log(`wrote ${path}`);
}
process.exit(stale > 0 ? 1 : 0);
