// A small builder for Grafana dashboard JSON. Dashboards are written as TypeScript (see overview.ts,
// confidence.ts) so that queries are checked against the metrics module and layout is computed,
// not hand-edited; the committed dashboards/*.json are this module's output.
//
// Every query goes through the `datasource` variable and filters on the `model` variable, so one
// dashboard serves any Prometheus and any number of sidecars.

export const DATASOURCE = { type: 'prometheus', uid: '${datasource}' } as const;

/** The label matcher every query applies; `extra` adds more matchers. */
export function sel(extra = ''): string {
  return extra ? `{model=~"$model",${extra}}` : '{model=~"$model"}';
}

export function rate(metric: string, extra = ''): string {
  return `rate(${metric}${sel(extra)}[$__rate_interval])`;
}

/** histogram_quantile over the rate of a histogram's buckets, grouped by `by` (plus le). */
export function quantile(q: number, histogram: string, opts: { by?: string[]; extra?: string } = {}): string {
  const by = ['le', ...(opts.by ?? [])].join(', ');
  return `histogram_quantile(${q}, sum by (${by}) (${rate(`${histogram}_bucket`, opts.extra)}))`;
}

/** Mean observation over the rate window: rate(_sum) / rate(_count). */
export function mean(histogram: string, opts: { by?: string[]; extra?: string } = {}): string {
  const agg = opts.by && opts.by.length > 0 ? `sum by (${opts.by.join(', ')})` : 'sum';
  return `${agg} (${rate(`${histogram}_sum`, opts.extra)}) / ${agg} (${rate(`${histogram}_count`, opts.extra)})`;
}

export interface QuerySpec {
  expr: string;
  legend?: string;
  /** 'heatmap' for bucket series drawn as a heatmap or bar gauge. */
  format?: 'time_series' | 'heatmap';
  /** Evaluate once at the end of the range (stat and bar-gauge panels). */
  instant?: boolean;
}

export type PanelType = 'timeseries' | 'heatmap' | 'stat' | 'bargauge';

export interface PanelSpec {
  title: string;
  description: string;
  type: PanelType;
  queries: QuerySpec[];
  /** Grafana unit id: 's', 'reqps', 'percentunit', 'short', 'none', ... */
  unit?: string;
  min?: number;
  max?: number;
  /** Logarithmic y axis (base 10) for signals spanning orders of magnitude. */
  logScale?: boolean;
  /** Grid width out of 24; panels of a row without one share the remaining width. */
  width?: number;
  stacked?: boolean;
}

export interface RowSpec {
  title: string;
  height?: number;
  panels: PanelSpec[];
}

export interface VariableSpec {
  name: string;
  label: string;
  /** PromQL label_values(...) query. */
  query: string;
}

export interface DashboardSpec {
  uid: string;
  title: string;
  description: string;
  tags: string[];
  /** Variables after `datasource` and `model`, e.g. a neuron selector. */
  extraVariables?: VariableSpec[];
  rows: RowSpec[];
}

type Json = Record<string, unknown>;

const REF_IDS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

function target(q: QuerySpec, i: number): Json {
  return {
    datasource: DATASOURCE,
    expr: q.expr,
    legendFormat: q.legend ?? '__auto',
    range: !q.instant,
    instant: Boolean(q.instant),
    format: q.format ?? 'time_series',
    refId: REF_IDS[i],
  };
}

function fieldConfig(p: PanelSpec): Json {
  const defaults: Json = { unit: p.unit ?? 'short' };
  if (p.min !== undefined) defaults.min = p.min;
  if (p.max !== undefined) defaults.max = p.max;
  if (p.type === 'timeseries') {
    defaults.custom = {
      drawStyle: 'line',
      lineWidth: 1,
      fillOpacity: p.stacked ? 30 : 10,
      showPoints: 'never',
      spanNulls: false,
      stacking: { mode: p.stacked ? 'normal' : 'none', group: 'A' },
      scaleDistribution: p.logScale ? { type: 'log', log: 10 } : { type: 'linear' },
    };
  }
  if (p.type === 'stat' || p.type === 'bargauge') {
    defaults.color = { mode: 'thresholds' };
    defaults.thresholds = { mode: 'absolute', steps: [{ color: 'green', value: null }] };
  }
  return { defaults, overrides: [] };
}

function options(p: PanelSpec): Json {
  switch (p.type) {
    case 'timeseries':
      return {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },
        tooltip: { mode: 'multi', sort: 'desc' },
      };
    case 'heatmap':
      // The series already are Prometheus buckets: no re-bucketing, le labels become the y axis.
      return {
        calculate: false,
        yAxis: { axisPlacement: 'left', unit: p.unit ?? 'short' },
        rowsFrame: { layout: 'le' },
        color: {
          mode: 'scheme',
          scheme: 'Oranges',
          scale: 'exponential',
          exponent: 0.5,
          steps: 64,
          fill: 'dark-orange',
        },
        cellGap: 1,
        tooltip: { mode: 'single', yHistogram: true },
        legend: { show: true },
      };
    case 'stat':
      return {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'value',
        graphMode: 'area',
        textMode: 'auto',
        justifyMode: 'auto',
        orientation: 'auto',
      };
    case 'bargauge':
      return {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        displayMode: 'gradient',
        orientation: 'vertical',
        showUnfilled: true,
        valueMode: 'color',
        namePlacement: 'auto',
        minVizHeight: 16,
        minVizWidth: 8,
        sizing: 'auto',
      };
  }
}

function queryVariable(v: VariableSpec): Json {
  return {
    name: v.name,
    label: v.label,
    type: 'query',
    datasource: DATASOURCE,
    definition: v.query,
    query: { query: v.query, refId: 'PrometheusVariableQueryEditor-VariableQuery', qryType: 1 },
    refresh: 2,
    includeAll: true,
    multi: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
    regex: '',
    hide: 0,
    skipUrlSync: false,
    options: [],
  };
}

/** Lays rows out on Grafana's 24-column grid: a collapsed-style heading row, then the panels. */
function layout(rows: RowSpec[]): Json[] {
  const panels: Json[] = [];
  let id = 1;
  let y = 0;
  for (const row of rows) {
    panels.push({
      type: 'row',
      id: id++,
      title: row.title,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
      panels: [],
    });
    y += 1;
    const height = row.height ?? 8;
    const fixed = row.panels.reduce((s, p) => s + (p.width ?? 0), 0);
    const flexible = row.panels.filter((p) => p.width === undefined).length;
    const flexWidth = flexible > 0 ? Math.floor((24 - fixed) / flexible) : 0;
    let x = 0;
    for (const p of row.panels) {
      const w = p.width ?? flexWidth;
      if (x + w > 24) throw new Error(`dashboard row "${row.title}" is wider than 24 columns`);
      panels.push({
        type: p.type,
        id: id++,
        title: p.title,
        description: p.description,
        datasource: DATASOURCE,
        gridPos: { h: height, w, x, y },
        targets: p.queries.map(target),
        fieldConfig: fieldConfig(p),
        options: options(p),
      });
      x += w;
    }
    y += height;
  }
  return panels;
}

export function buildDashboard(spec: DashboardSpec): Json {
  return {
    uid: spec.uid,
    title: spec.title,
    description: spec.description,
    tags: spec.tags,
    editable: true,
    graphTooltip: 1,
    timezone: 'browser',
    refresh: '10s',
    time: { from: 'now-1h', to: 'now' },
    schemaVersion: 39,
    version: 1,
    links: [],
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
      ],
    },
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          current: {},
          regex: '',
          hide: 0,
          refresh: 1,
          skipUrlSync: false,
          options: [],
        },
        queryVariable({ name: 'model', label: 'Model', query: 'label_values(llm_requests_running, model)' }),
        ...(spec.extraVariables ?? []).map(queryVariable),
      ],
    },
    panels: layout(spec.rows),
  };
}

/** The panels (not rows) of a built dashboard, for tests and renderers. */
export function panelsOf(
  dashboard: Json,
): { title: string; type: string; targets: { expr: string; format: string; instant: boolean }[] }[] {
  const panels = dashboard.panels as Json[];
  return panels
    .filter((p) => p.type !== 'row')
    .map((p) => ({
      title: p.title as string,
      type: p.type as string,
      targets: p.targets as { expr: string; format: string; instant: boolean }[],
    }));
}
