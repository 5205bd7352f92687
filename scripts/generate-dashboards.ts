// Writes what is generated from src/dashboards, formatted with the project's Prettier config (so
// `prettier --check .` passes on it too):
//   dashboards/*.json                    the Grafana dashboards
//   deploy/prometheus/alerts.yml         the alerting and recording rules (plain Prometheus rule file)
//   deploy/k8s/base/prometheusrule.yaml  the same rules as a prometheus-operator PrometheusRule
// `--check` writes nothing and exits 1 when a committed file differs in content from the generator.
//   npx tsx scripts/generate-dashboards.ts [--check]

import { isDeepStrictEqual } from 'node:util';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { generateDashboards, renderDashboard } from '../src/dashboards/index.ts';
import { alertRuleGroups, prometheusRuleManifest } from '../src/dashboards/alerts.ts';

const root = fileURLToPath(new URL('../', import.meta.url));
const check = process.argv.includes('--check');
let stale = 0;

interface Output {
  path: string;
  content: unknown;
  parse: (text: string) => unknown;
  render: (content: unknown) => string;
}

const GENERATED_NOTE =
  '# Generated from src/dashboards/alerts.ts by `npx tsx scripts/generate-dashboards.ts`; do not edit.\n';
const yamlOutput = (path: string, content: unknown, header: string): Output => ({
  path: join(root, path),
  content,
  parse: (text) => parseYaml(text) as unknown,
  // lineWidth 0: no folding, so PromQL stays on one line as written.
  render: (c) => `${GENERATED_NOTE}${header}${stringifyYaml(c, { lineWidth: 0 })}`,
});

const outputs: Output[] = [
  ...Object.entries(generateDashboards()).map(([file, dashboard]) => ({
    path: join(root, 'dashboards', file),
    content: dashboard,
    parse: (text: string) => JSON.parse(text) as unknown,
    render: (c: unknown) => renderDashboard(c as Record<string, unknown>),
  })),
  yamlOutput(
    'deploy/prometheus/alerts.yml',
    alertRuleGroups(),
    '# Unit tests: promtool test rules deploy/prometheus/alerts.test.yml\n',
  ),
  yamlOutput(
    'deploy/k8s/base/prometheusrule.yaml',
    prometheusRuleManifest(),
    "# The labels kube-prometheus-stack's ruleSelector matches are added in kustomization.yaml.\n",
  ),
];

for (const out of outputs) {
  const current = existsSync(out.path) ? out.parse(readFileSync(out.path, 'utf8')) : null;
  if (isDeepStrictEqual(current, out.content)) continue;
  if (check) {
    console.error(`${out.path} is out of date; run: npx tsx scripts/generate-dashboards.ts`);
    stale++;
    continue;
  }
  mkdirSync(dirname(out.path), { recursive: true });
  const options = (await prettier.resolveConfig(out.path)) ?? {};
  writeFileSync(out.path, await prettier.format(out.render(out.content), { ...options, filepath: out.path }));
  console.log(`wrote ${out.path}`);
}
process.exit(stale > 0 ? 1 : 0);
