// All generated Grafana dashboards, by file name under dashboards/. The committed JSON files hold
// exactly these objects (a test keeps them in step); regenerate with
// `npx tsx scripts/generate-dashboards.ts`.

import { confidenceDashboard } from './confidence.ts';
import { overviewDashboard } from './overview.ts';

export { panelsOf } from './grafana.ts';

export function generateDashboards(): Record<string, Record<string, unknown>> {
  return {
    'confidence-sidecar-overview.json': overviewDashboard(),
    'confidence-sidecar-confidence.json': confidenceDashboard(),
  };
}

/** Plain JSON text with two-space indentation and a final newline (the script then applies Prettier). */
export function renderDashboard(dashboard: Record<string, unknown>): string {
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}
