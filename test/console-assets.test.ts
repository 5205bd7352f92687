// Where the console's assets are found: beside the routes when running the sources, and through
// the shipped src/ folder from a compiled build (tsc copies no .html/.js/.css into dist/), which
// package.json's `files` must therefore include.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { consoleAssetDir } from '../src/server/routes/console.ts';

const root = join(import.meta.dirname, '..');

describe('console assets', () => {
  it('are found from the sources and from a dist/ build', () => {
    const src = join(root, 'src', 'server', 'console') + '/';
    expect(consoleAssetDir()).toBe(src);
    expect(consoleAssetDir(pathToFileURL(join(root, 'dist', 'server', 'routes', 'console.js')).href)).toBe(src);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toContain('src');
  });

  it('every asset the page references exists and nothing is loaded from elsewhere', () => {
    const dir = consoleAssetDir();
    const html = readFileSync(join(dir, 'index.html'), 'utf8');
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.filter((r) => !r.startsWith('/console/') && r !== 'data:,')).toEqual([]);
    for (const r of refs.filter((x) => x.startsWith('/console/'))) expect(() => readFileSync(join(dir, r.slice('/console/'.length)))).not.toThrow();
    const app = readFileSync(join(dir, 'app.js'), 'utf8');
    // Module imports stay relative (same origin); no innerHTML with server text.
    for (const m of app.matchAll(/from '([^']+)'/g)) expect(m[1]).toMatch(/^\.\//);
    expect(app).not.toContain('innerHTML');
  });
});
