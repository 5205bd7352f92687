// The generated Grafana dashboards: every PromQL expression only names metrics (and labels) the
// metrics module defines, the committed JSON is exactly the generator's output, and the dashboards
// have the structure Grafana needs (variables, datasource references, a valid grid).

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { generateDashboards, panelsOf, renderDashboard } from '../src/dashboards/index.ts';
import { METRIC_DEFINITIONS } from '../src/server/telemetry/metrics.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dashboards = generateDashboards();

type Def = { name: string; type: string; labels: readonly string[] };
const defs = new Map<string, Def>(Object.values(METRIC_DEFINITIONS).map((d) => [d.name, d]));

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/** Resolves a series name to its metric: histogram series map _bucket/_sum/_count to the base name. */
function resolveSeries(series: string): { def: Def; bucket: boolean } | null {
  const direct = defs.get(series);
  if (direct) return { def: direct, bucket: false };
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  const base = m ? defs.get(m[1]) : undefined;
  if (m && base?.type === 'histogram') return { def: base, bucket: m[2] === 'bucket' };
  return null;
}

interface ParsedExpr {
  /** Series names, as written. */
  series: string[];
  /** Labels used in `{...}` matchers, per series occurrence. */
  matchers: { series: string; labels: string[] }[];
  /** Labels in by (...) / without (...) clauses. */
  grouping: string[];
}

/**
 * A small PromQL reader, enough for dashboard expressions: drops string literals and range
 * selectors, records label matchers per selector and grouping labels, and reports every remaining
 * identifier that is not a function call or keyword as a series name.
 */
function parsePromql(expr: string): ParsedExpr {
  const matchers: ParsedExpr['matchers'] = [];
  const grouping: string[] = [];
  // Grafana variables are opaque here; they only ever appear inside strings and ranges.
  let rest = expr.replace(/\[[^\]]*\]/g, '');
  rest = rest.replace(/\b(by|without)\s*\(([^)]*)\)/g, (_m, _kw, labels: string) => {
    grouping.push(
      ...labels
        .split(',')
        .map((l) => l.trim())
        .filter(Boolean),
    );
    return ' ';
  });
  rest = rest.replace(
    /([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g,
    (_m, series: string | undefined, body: string) => {
      const labels = [
        ...body.replace(/"(?:[^"\\]|\\.)*"/g, '""').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g),
      ].map((x) => x[1]);
      if (!series) throw new Error(`selector without a metric name in ${expr}`);
      matchers.push({ series, labels });
      return ` ${series} `;
    },
  );
  rest = rest.replace(/"(?:[^"\\]|\\.)*"/g, ' ');
  const series: string[] = [];
  for (const m of rest.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, ident, call] = m;
    if (call || PROMQL_WORDS.has(ident.toLowerCase())) continue;
    // Identifiers glued to digits are exponents/durations of numbers (1e-9), not names.
    const before = rest[(m.index ?? 0) - 1];
    if (before !== undefined && /[0-9.]/.test(before)) continue;
    series.push(ident);
  }
  return { series, matchers, grouping };
}

function allTargets() {
  return Object.entries(dashboards).flatMap(([file, d]) =>
    panelsOf(d).flatMap((p) => p.targets.map((t) => ({ file, panel: p.title, expr: t.expr }))),
  );
}

describe('dashboard queries', () => {
  it('the PromQL reader finds names, matchers and grouping (self-check)', () => {
    const p = parsePromql(
      'histogram_quantile(0.9, sum by (le, neuron) (rate(llm_neuron_activation_bucket{model=~"$model",role="entropy"}[$__rate_interval]))) / 1e-9 + up',
    );
    expect(p.series).toEqual(['llm_neuron_activation_bucket', 'up']);
    expect(p.matchers).toEqual([{ series: 'llm_neuron_activation_bucket', labels: ['model', 'role'] }]);
    expect(p.grouping).toEqual(['le', 'neuron']);
  });

  it('use only metrics the metrics module defines, with their own labels', () => {
    const targets = allTargets();
    expect(targets.length).toBeGreaterThan(20);
    for (const { file, panel, expr } of targets) {
      const where = `${file} / ${panel}: ${expr}`;
      const parsed = parsePromql(expr);
      expect(parsed.series.length, where).toBeGreaterThan(0);
      const allowed = new Set<string>();
      for (const s of parsed.series) {
        const hit = resolveSeries(s);
        expect(hit, `${where}: unknown metric ${s}`).not.toBeNull();
        for (const l of hit!.def.labels) allowed.add(l);
        if (hit!.bucket) allowed.add('le');
      }
      for (const { series, labels } of parsed.matchers) {
        const hit = resolveSeries(series)!;
        const own = new Set([...hit.def.labels, ...(hit.bucket ? ['le'] : [])]);
        for (const l of labels) expect(own.has(l), `${where}: ${series} has no label ${l}`).toBe(true);
        // Every selector is scoped to the dashboard's model variable.
        expect(labels, where).toContain('model');
      }
      for (const l of parsed.grouping)
        expect(allowed.has(l), `${where}: grouping by unknown label ${l}`).toBe(true);
    }
  });

  it('cover every metric the sidecar exposes', () => {
    const used = new Set(
      allTargets().flatMap(({ expr }) => parsePromql(expr).series.map((s) => resolveSeries(s)!.def.name)),
    );
    expect([...defs.keys()].filter((n) => !used.has(n))).toEqual([]);
  });

  it('template variables query defined metrics and labels', () => {
    for (const d of Object.values(dashboards)) {
      const vars = (
        d.templating as { list: { name: string; type: string; query: unknown; definition?: string }[] }
      ).list;
      expect(vars[0]).toMatchObject({ name: 'datasource', type: 'datasource', query: 'prometheus' });
      expect(vars.map((v) => v.name)).toContain('model');
      for (const v of vars.filter((x) => x.type === 'query')) {
        const m = /^label_values\(([^,]+),\s*([a-z_]+)\)$/.exec(v.definition ?? '');
        expect(m, v.definition).not.toBeNull();
        const parsed = parsePromql(m![1]);
        const hit = resolveSeries(parsed.series[0]);
        expect(hit, v.definition).not.toBeNull();
        expect(hit!.def.labels).toContain(m![2]);
      }
    }
  });
});

describe('dashboard files', () => {
  it('the committed dashboards/*.json are exactly the generator output', () => {
    const dir = join(repoRoot, 'dashboards');
    const committed = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort();
    expect(committed).toEqual(Object.keys(dashboards).sort());
    for (const [file, d] of Object.entries(dashboards)) {
      // Content, not bytes: the files are Prettier-formatted; JSON round-trips the generator's object.
      const onDisk = JSON.parse(readFileSync(join(dir, file), 'utf8')) as unknown;
      expect(onDisk, `${file} is stale: run npx tsx scripts/generate-dashboards.ts`).toEqual(
        JSON.parse(renderDashboard(d)),
      );
    }
  });

  it('have unique ids, the datasource variable on every query and a valid 24-column grid', () => {
    const uids = new Set<string>();
    for (const d of Object.values(dashboards)) {
      expect(uids.has(d.uid as string)).toBe(false);
      uids.add(d.uid as string);
      const panels = d.panels as {
        id: number;
        type: string;
        gridPos: { x: number; y: number; w: number; h: number };
        targets?: { datasource: { uid: string } }[];
      }[];
      expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
      const occupied = new Set<string>();
      for (const p of panels) {
        const { x, y, w, h } = p.gridPos;
        expect(x >= 0 && w > 0 && x + w <= 24 && h > 0, JSON.stringify(p.gridPos)).toBe(true);
        for (let i = x; i < x + w; i++) {
          for (let j = y; j < y + h; j++) {
            expect(occupied.has(`${i},${j}`), `panels overlap at ${i},${j}`).toBe(false);
            occupied.add(`${i},${j}`);
          }
        }
        for (const t of p.targets ?? []) expect(t.datasource.uid).toBe('${datasource}');
      }
    }
  });
});
