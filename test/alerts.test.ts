// The alert rules: the committed files are exactly the generator's output (src/dashboards/alerts.ts),
// Prometheus's own promtool accepts them (`check rules`) and proves each alert fires on a synthetic
// series and stays quiet on normal ones (`test rules` on deploy/prometheus/alerts.test.yml), and every
// metric and label an expression or a unit test uses is one the sidecar (or the proxy) defines.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  alertRuleGroups,
  PROXY_METRICS,
  prometheusRuleManifest,
  type AlertRule,
  type RecordingRule,
} from '../src/dashboards/alerts.ts';
import { METRIC_DEFINITIONS } from '../src/server/telemetry/metrics.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const promDir = join(repoRoot, 'deploy/prometheus');
const PROMTOOL = process.env.PROMTOOL_BIN ?? '/usr/bin/promtool';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;
const readYaml = (path: string) => parseYaml(readFileSync(join(repoRoot, path), 'utf8')) as Obj;

/** promtool, or null (with a message) outside CI; in CI a missing promtool fails the run. */
function promtool(): string | null {
  const probe = spawnSync(PROMTOOL, ['--version'], { encoding: 'utf8' });
  if (!probe.error && probe.status === 0) return PROMTOOL;
  const message = `${PROMTOOL} not found or not runnable; install it with .ci/install-system-deps.sh`;
  if (process.env.CI) throw new Error(message);
  console.warn(`${message}: skipping the promtool checks`);
  return null;
}

const groups = alertRuleGroups().groups;
const rules = groups.flatMap((g) => g.rules);
const alerts = rules.filter((r): r is AlertRule => 'alert' in r);
const records = rules.filter((r): r is RecordingRule => 'record' in r);

type Def = { name: string; type: string; labels: readonly string[] };
const defs = new Map<string, Def>(
  [...Object.values(METRIC_DEFINITIONS), ...Object.values(PROXY_METRICS)].map((d) => [d.name, d as Def]),
);

/** A series name's metric (histograms' _bucket/_sum/_count map to the base), with its labels. */
function seriesLabels(series: string): string[] | null {
  const d = defs.get(series);
  if (d) return [...d.labels];
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  const base = m ? defs.get(m[1]) : undefined;
  if (!m || base?.type !== 'histogram') return null;
  return m[2] === 'bucket' ? [...base.labels, 'le'] : [...base.labels];
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool']);
const KEYWORDS_BINARY = new Set(['and', 'or', 'unless', 'offset']);
/** Aggregation operators, which may be followed by `by (...)` before their parenthesis. */
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'group',
  'count_values',
]);

/**
 * The series and the grouping/matcher labels of a PromQL expression: a scanner that skips strings,
 * durations and numbers, treats `name(` as a function or aggregation, reads `by (...)` lists and
 * `{...}` matchers, and reports every other identifier as a series name.
 */
function scan(expr: string): { series: string[]; labels: string[] } {
  const series: string[] = [];
  const labels: string[] = [];
  const re =
    /"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\d+(?:\.\d+)?[smhdwy]?|\{([^}]*)\}|([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?/g;
  let groupingNext = false;
  for (const m of expr.matchAll(re)) {
    if (m[1] !== undefined) {
      for (const lm of m[1].matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)/g)) labels.push(lm[1]);
      continue;
    }
    const word = m[2];
    if (word === undefined) continue;
    if (KEYWORDS.has(word)) {
      groupingNext = true;
      const list = /^\s*\(([^)]*)\)/.exec(expr.slice(m.index! + word.length));
      if (list)
        labels.push(
          ...list[1]
            .split(',')
            .map((l) => l.trim())
            .filter(Boolean),
        );
      continue;
    }
    if (groupingNext && labels.includes(word)) continue;
    groupingNext = false;
    if (m[3] !== undefined || KEYWORDS_BINARY.has(word) || AGGREGATIONS.has(word)) continue;
    series.push(word);
  }
  return { series, labels };
}

describe('generated rule files', () => {
  it('alerts.yml and the PrometheusRule hold exactly what src/dashboards/alerts.ts generates', () => {
    expect(readYaml('deploy/prometheus/alerts.yml')).toEqual(alertRuleGroups());
    expect(readYaml('deploy/k8s/base/prometheusrule.yaml')).toEqual(prometheusRuleManifest());
  });

  it('the generator --check passes on the committed files', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/generate-dashboards.ts', '--check'], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('metric names', () => {
  const recorded = new Set(records.map((r) => r.record));

  it('the scanner reads series, grouping and matcher labels (checked on a hand-written expression)', () => {
    const { series, labels } = scan(
      'sum by (model, le) (rate(a_total{code=~"5.."}[5m])) / on (model) b offset 1d and c > 0.5',
    );
    expect(series).toEqual(['a_total', 'b', 'c']);
    expect(labels.sort()).toEqual(['code', 'le', 'model', 'model']);
  });

  it.each(rules.map((r) => ['alert' in r ? r.alert : r.record, r.expr]))(
    '%s queries only defined metrics and their labels',
    (_name, expr) => {
      const { series, labels } = scan(expr);
      expect(series.length).toBeGreaterThan(0);
      const available = new Set<string>(['model']);
      for (const s of series) {
        if (recorded.has(s)) continue;
        const l = seriesLabels(s);
        expect(l, `${s} is not a defined metric`).not.toBeNull();
        l!.forEach((x) => available.add(x));
      }
      for (const l of labels) expect(available.has(l), `label ${l}`).toBe(true);
    },
  );

  it('recorded series are defined by a rule before an alert uses them, and follow level:metric:ops', () => {
    for (const r of records) expect(r.record).toMatch(/^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/);
    const used = new Set(alerts.flatMap((a) => scan(a.expr).series).filter((s) => s.includes(':')));
    expect([...used].sort()).toEqual([...recorded].sort());
  });

  it('a proxy metric defined in the telemetry table agrees with the name used here', () => {
    const telemetry = new Map<string, Def>(Object.values(METRIC_DEFINITIONS).map((d) => [d.name, d as Def]));
    for (const p of Object.values(PROXY_METRICS)) {
      const t = telemetry.get(p.name);
      if (!t) continue; // defined by the proxy's own table, not on this branch
      expect(t.type).toBe(p.type);
      expect([...t.labels].sort()).toEqual([...p.labels].sort());
    }
  });
});

describe('unit tests of the rules (deploy/prometheus/alerts.test.yml)', () => {
  const suite = parseYaml(readFileSync(join(promDir, 'alerts.test.yml'), 'utf8')) as Obj;

  it('feed only series of defined metrics', () => {
    for (const t of suite.tests as Obj[]) {
      for (const s of t.input_series as Obj[]) {
        const name = /^([A-Za-z_:][A-Za-z0-9_:]*)\{/.exec(s.series)![1];
        const labels = [...(s.series as string).matchAll(/([A-Za-z_]+)="/g)].map((m) => m[1]);
        const known = seriesLabels(name);
        expect(known, name).not.toBeNull();
        for (const l of labels) expect(known, `${name} label ${l}`).toContain(l);
      }
    }
  });

  it('make every alert fire for one model while another model in the same series stays quiet', () => {
    for (const a of alerts) {
      const cases = (suite.tests as Obj[]).flatMap((t) =>
        ((t.alert_rule_test ?? []) as Obj[]).filter((c) => c.alertname === a.alert).map((c) => ({ t, c })),
      );
      const firing = cases.flatMap(({ c }) =>
        (c.exp_alerts as Obj[]).map((e) => e.exp_labels.model as string),
      );
      expect(firing.length, `${a.alert} fires in some test`).toBeGreaterThan(0);
      const fed = new Set(
        cases.flatMap(({ t }) => (t.input_series as Obj[]).map((s) => /model="([^"]+)"/.exec(s.series)![1])),
      );
      const quiet = [...fed].filter((m) => !firing.includes(m));
      expect(quiet.length, `${a.alert} has a normal model that never fires`).toBeGreaterThan(0);
    }
  });

  it('promtool check rules and promtool test rules pass', (ctx) => {
    const bin = promtool();
    if (!bin) return ctx.skip();
    const check = spawnSync(bin, ['check', 'rules', join(promDir, 'alerts.yml')], { encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(check.status).toBe(0);
    const test = spawnSync(bin, ['test', 'rules', 'alerts.test.yml'], { cwd: promDir, encoding: 'utf8' });
    expect(`${test.stdout}${test.stderr}`).toContain('SUCCESS');
    expect(test.status, `${test.stdout}${test.stderr}`).toBe(0);
  });

  it('promtool test rules fails when an alert is broken (the tests can tell)', (ctx) => {
    const bin = promtool();
    if (!bin) return ctx.skip();
    // Drop the traffic guard of the entropy recording rule: idle windows then turn the baseline into
    // NaN, and the "bursty" model's alert must go missing.
    const broken = readFileSync(join(promDir, 'alerts.yml'), 'utf8').replace(
      / and \(sum by \(model\) \(rate\(llm_token_entropy_nats_count\[10m\]\)\) > 0\)/,
      '',
    );
    expect(broken).not.toBe(readFileSync(join(promDir, 'alerts.yml'), 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'alerts-'));
    try {
      writeFileSync(join(dir, 'alerts.yml'), broken);
      writeFileSync(join(dir, 'alerts.test.yml'), readFileSync(join(promDir, 'alerts.test.yml')));
      const test = spawnSync(bin, ['test', 'rules', 'alerts.test.yml'], { cwd: dir, encoding: 'utf8' });
      expect(test.status).not.toBe(0);
      expect(`${test.stdout}${test.stderr}`).toContain('model="bursty"');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
