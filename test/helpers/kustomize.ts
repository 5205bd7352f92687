// A small `kustomize build` for the deployment tests: enough of it to render deploy/k8s's variants
// where kubectl is not installed (CI installs only Debian's prometheus and chromium). It supports what
// the manifests use: resources (files and directories), `labels` (metadata only), `images` (newName,
// newTag) and inline JSON 6902 patches with a group/kind/name target. Anything else in a
// kustomization is refused, so the manifests cannot outgrow it silently; where kubectl exists the
// tests compare this rendering with `kubectl kustomize`.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

// Parsed YAML is untyped; the tests' assertions are the schema.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

const SUPPORTED = new Set(['apiVersion', 'kind', 'resources', 'labels', 'images', 'patches']);

export function readYamlDocs(path: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  const out: Obj[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${path}: ${d.errors.map((e) => e.message).join('; ')}`);
    const value = d.toJS() as Obj | null;
    if (value !== null) out.push(value);
  }
  return out;
}

export function readKustomization(dir: string): Obj {
  const k = parseYaml(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Obj;
  for (const key of Object.keys(k)) {
    if (!SUPPORTED.has(key))
      throw new Error(`${dir}/kustomization.yaml: "${key}" is not supported by the test renderer`);
  }
  return k;
}

/** The files and directories a kustomization lists, resolved; throws on one that does not exist. */
export function resourcePaths(dir: string): string[] {
  return ((readKustomization(dir).resources ?? []) as string[]).map((r) => {
    const p = join(dir, r);
    if (!existsSync(p)) throw new Error(`${dir}/kustomization.yaml lists ${r}, which does not exist`);
    if (statSync(p).isDirectory() && !existsSync(join(p, 'kustomization.yaml')))
      throw new Error(`${dir}/kustomization.yaml lists ${r}, a directory without kustomization.yaml`);
    return p;
  });
}

function groupOf(apiVersion: string): string {
  return apiVersion.includes('/') ? apiVersion.split('/')[0] : '';
}

function selected(o: Obj, target: Obj): boolean {
  if (target.group !== undefined && groupOf(o.apiVersion) !== target.group) return false;
  if (target.kind !== undefined && o.kind !== target.kind) return false;
  if (target.name !== undefined && o.metadata?.name !== target.name) return false;
  return true;
}

/** JSON pointer segments (RFC 6901: ~1 is '/', ~0 is '~'). */
const pointer = (path: string) =>
  path
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));

function applyOp(o: Obj, op: Obj, where: string): void {
  const segs = pointer(op.path as string);
  const last = segs.pop()!;
  let parent: Obj = o;
  for (const s of segs) {
    parent = Array.isArray(parent) ? parent[Number(s)] : parent[s];
    if (parent === undefined) throw new Error(`${where}: ${op.op} ${op.path}: no such path`);
  }
  const isArray = Array.isArray(parent);
  switch (op.op) {
    case 'test':
      if (JSON.stringify(isArray ? parent[Number(last)] : parent[last]) !== JSON.stringify(op.value))
        throw new Error(`${where}: test ${op.path} failed`);
      return;
    case 'add':
      if (isArray) {
        if (last === '-') parent.push(op.value);
        else parent.splice(Number(last), 0, op.value);
      } else parent[last] = op.value;
      return;
    case 'replace':
      if ((isArray ? parent[Number(last)] : parent[last]) === undefined)
        throw new Error(`${where}: replace ${op.path}: no such path`);
      if (isArray) parent[Number(last)] = op.value;
      else parent[last] = op.value;
      return;
    default:
      throw new Error(`${where}: patch op "${op.op}" is not supported by the test renderer`);
  }
}

function containersOf(o: Obj): Obj[] {
  const spec = o.spec?.template?.spec;
  return spec ? [...(spec.initContainers ?? []), ...(spec.containers ?? [])] : [];
}

/** Renders a kustomization directory into its objects, as `kustomize build` would (for what it supports). */
export function render(dir: string): Obj[] {
  const k = readKustomization(dir);
  const objects: Obj[] = [];
  for (const p of resourcePaths(dir)) {
    if (statSync(p).isDirectory()) objects.push(...render(p));
    else objects.push(...readYamlDocs(p));
  }
  for (const label of (k.labels ?? []) as Obj[]) {
    if (label.includeSelectors || label.includeTemplates || label.fields)
      throw new Error(`${dir}: only metadata labels are supported by the test renderer`);
    for (const o of objects) o.metadata.labels = { ...o.metadata.labels, ...label.pairs };
  }
  for (const image of (k.images ?? []) as Obj[]) {
    for (const c of objects.flatMap(containersOf)) {
      const [name, tag] = (c.image as string).split(':');
      if (name !== image.name) continue;
      c.image = `${image.newName ?? name}:${image.newTag ?? tag}`;
    }
  }
  for (const patch of (k.patches ?? []) as Obj[]) {
    const ops = parseYaml(patch.patch as string) as Obj[];
    if (!Array.isArray(ops))
      throw new Error(`${dir}: only JSON 6902 patches are supported by the test renderer`);
    const targets = objects.filter((o) => selected(o, patch.target ?? {}));
    if (targets.length === 0) throw new Error(`${dir}: a patch selects no object`);
    for (const o of targets) for (const op of ops) applyOp(o, op, `${dir} ${o.kind}/${o.metadata.name}`);
  }
  return objects;
}

/** `kubectl kustomize DIR`, or null when kubectl is not installed. */
export function kubectlKustomize(dir: string): Obj[] | null {
  const r = spawnSync(process.env.KUBECTL_BIN ?? 'kubectl', ['kustomize', dir], { encoding: 'utf8' });
  if (r.error) return null;
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
}
