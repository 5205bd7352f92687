// GET /: the operator console, a page the sidecar serves itself (plain HTML/CSS/JS, no build step,
// nothing loaded from elsewhere). It talks to the public API only (completions with the
// `confidence` extension, /v1/neurons, /v1/interventions, the monitor WebSocket), so it can do
// nothing a client could not, and asks for the tokens those routes ask for.
//
// The assets are read once at startup. They live in src/server/console/; a compiled build
// (dist/server/routes) finds them through the package's src/ folder, which `files` ships.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

const ASSETS = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/console/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/console/chart.js': { file: 'chart.js', type: 'text/javascript; charset=utf-8' },
  '/console/tokens.js': { file: 'tokens.js', type: 'text/javascript; charset=utf-8' },
  '/console/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
} as const;

/** Where the assets are: beside the routes (sources), or in the shipped src/ (dist build). */
export function consoleAssetDir(moduleUrl: string = import.meta.url): string {
  const candidates = ['../console/', '../../../src/server/console/'].map((rel) =>
    fileURLToPath(new URL(rel, moduleUrl)),
  );
  const found = candidates.find((dir) => existsSync(`${dir}index.html`));
  if (!found) throw new Error(`console assets not found (looked in ${candidates.join(', ')})`);
  return found;
}

// Everything from this origin only: scripts, styles, fetch and the WebSocket ('self' covers ws: on
// the same host in CSP level 3). No inline script, so an injected string cannot run.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function registerConsoleRoutes(app: FastifyInstance): void {
  const dir = consoleAssetDir();
  for (const [path, asset] of Object.entries(ASSETS)) {
    const body = readFileSync(`${dir}${asset.file}`);
    app.get(path, async (_request, reply) =>
      reply
        .type(asset.type)
        .header('content-security-policy', CSP)
        .header('x-content-type-options', 'nosniff')
        .header('cache-control', 'no-cache')
        .send(body),
    );
  }
}
