// The deployment files, validated without Docker or a cluster: YAML parses, Kubernetes objects are
// well-formed and reference each other consistently (ports, probes, labels, Secret, ConfigMap),
// the Dockerfile builds a non-root image that runs the package's bin, and the compose stack's
// Prometheus scrapes the sidecar while Grafana loads the generated dashboards.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { promtoolBinary } from './helpers/prometheus.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const deployDir = join(repoRoot, 'deploy');
const k8sDir = join(deployDir, 'k8s');

/** What the server serves (src/server/routes/health.ts; test/telemetry-server.test.ts requests them). */
const LIVENESS_PATH = '/healthz';
const READINESS_PATH = '/readyz';
const METRICS_PATH = '/metrics';

// Parsed YAML is untyped; the assertions below are the schema.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

function readYamlDocs(path: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  const out: Obj[] = [];
  for (const d of docs) {
    expect(d.errors, `${path}: ${d.errors.map((e) => e.message).join('; ')}`).toEqual([]);
    const value = d.toJS() as Obj | null;
    if (value !== null) out.push(value);
  }
  return out;
}

const manifests = readdirSync(k8sDir)
  .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
  .sort();
const objects = manifests.flatMap((f) => readYamlDocs(join(k8sDir, f)).map((o) => ({ file: f, o })));
const byKind = (kind: string) => objects.filter(({ o }) => o.kind === kind).map(({ o }) => o);
const one = (kind: string) => {
  const list = byKind(kind);
  expect(list, kind).toHaveLength(1);
  return list[0];
};

/** A probe's or annotation's port, resolved from a named container port. */
function resolvePort(container: Obj, port: string | number): number {
  if (typeof port === 'number') return port;
  const named = (container.ports as Obj[]).find((p) => p.name === port);
  expect(named, `port ${port} of ${container.name}`).toBeDefined();
  return named!.containerPort;
}

function labelsMatch(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The value after a flag in an argument list. */
function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const packageJson = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
};
const binPath = posix.normalize(packageJson.bin['confidence-sidecar']);

describe('Kubernetes manifests', () => {
  it('every object parses and has apiVersion, kind and metadata.name; kustomization lists them all', () => {
    expect(objects.length).toBeGreaterThanOrEqual(5);
    for (const { file, o } of objects) {
      expect(typeof o.apiVersion, file).toBe('string');
      expect(typeof o.kind, file).toBe('string');
      expect(o.metadata?.name, file).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const kustomization = readYamlDocs(join(k8sDir, 'kustomization.yaml'))[0];
    expect(kustomization.kind).toBe('Kustomization');
    expect([...kustomization.resources].sort()).toEqual(manifests);
  });

  it('the Deployment runs the model server and the sidecar in one Pod, probed on the served paths', () => {
    const deployment = one('Deployment');
    const pod = deployment.spec.template;
    expect(labelsMatch(deployment.spec.selector.matchLabels, pod.metadata.labels)).toBe(true);
    const containers = pod.spec.containers as Obj[];
    expect(containers.length).toBeGreaterThanOrEqual(2);
    const sidecar = containers.find((c) => c.name === 'confidence-sidecar')!;
    expect(sidecar).toBeDefined();
    expect(containers.some((c) => c.name !== 'confidence-sidecar')).toBe(true);

    const argv = [...(sidecar.command ?? []), ...(sidecar.args ?? [])] as string[];
    expect(posix.normalize(argv[1])).toBe(binPath);
    expect(argv[2]).toBe('serve');
    const port = Number(flag(argv, '--port'));
    expect(flag(argv, '--host')).toBe('0.0.0.0');
    expect(sidecar.ports.map((p: Obj) => p.containerPort)).toContain(port);

    expect(sidecar.livenessProbe.httpGet.path).toBe(LIVENESS_PATH);
    expect(sidecar.readinessProbe.httpGet.path).toBe(READINESS_PATH);
    for (const probe of [sidecar.livenessProbe, sidecar.readinessProbe, sidecar.startupProbe].filter(
      Boolean,
    )) {
      expect(resolvePort(sidecar, probe.httpGet.port)).toBe(port);
    }

    const ann = pod.metadata.annotations;
    expect(ann['prometheus.io/scrape']).toBe('true');
    expect(Number(ann['prometheus.io/port'])).toBe(port);
    expect(ann['prometheus.io/path']).toBe(METRICS_PATH);
    expect(sidecar.securityContext.runAsNonRoot).toBe(true);
  });

  it('the admin token comes from the Secret and the catalogue from the ConfigMap', () => {
    const pod = one('Deployment').spec.template.spec;
    const sidecar = (pod.containers as Obj[]).find((c) => c.name === 'confidence-sidecar')!;
    const tokenEnv = (sidecar.env as Obj[]).find((e) => e.name === 'CONFIDENCE_SIDECAR_ADMIN_TOKEN')!;
    const ref = tokenEnv.valueFrom.secretKeyRef;
    const secret = one('Secret');
    expect(ref.name).toBe(secret.metadata.name);
    expect(Object.keys({ ...secret.data, ...secret.stringData })).toContain(ref.key);

    const configMap = one('ConfigMap');
    const volume = (pod.volumes as Obj[]).find((v) => v.configMap?.name === configMap.metadata.name)!;
    expect(volume).toBeDefined();
    const mount = (sidecar.volumeMounts as Obj[]).find((m) => m.name === volume.name)!;
    const argv = [...(sidecar.command ?? []), ...(sidecar.args ?? [])] as string[];
    const cataloguePath = flag(argv, '--catalogue')!;
    expect(posix.dirname(cataloguePath)).toBe(mount.mountPath);
    const key = posix.basename(cataloguePath);
    expect(Object.keys(configMap.data)).toContain(key);
    expect(() => JSON.parse(configMap.data[key])).not.toThrow();

    // Every volume a container mounts exists in the Pod.
    const volumes = new Set((pod.volumes as Obj[]).map((v) => v.name));
    for (const c of pod.containers as Obj[])
      for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), m.name).toBe(true);
  });

  it('the Service and ServiceMonitor reach the sidecar port and scrape /metrics', () => {
    const pod = one('Deployment').spec.template;
    const sidecar = (pod.spec.containers as Obj[]).find((c) => c.name === 'confidence-sidecar')!;
    const service = one('Service');
    expect(labelsMatch(service.spec.selector, pod.metadata.labels)).toBe(true);
    const monitor = one('ServiceMonitor');
    expect(monitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(labelsMatch(monitor.spec.selector.matchLabels, service.metadata.labels)).toBe(true);
    for (const ep of monitor.spec.endpoints as Obj[]) {
      const servicePort = (service.spec.ports as Obj[]).find((p) => p.name === ep.port)!;
      expect(servicePort, ep.port).toBeDefined();
      const containerPort = resolvePort(sidecar, servicePort.targetPort);
      expect(sidecar.ports.map((p: Obj) => p.containerPort)).toContain(containerPort);
      expect(ep.path).toBe(METRICS_PATH);
    }
  });
});

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function dockerInstructions(text: string): { op: string; args: string }[] {
  const joined = text.replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

describe('Dockerfile', () => {
  const instructions = dockerInstructions(readFileSync(join(deployDir, 'Dockerfile'), 'utf8'));
  const finalStage = instructions.slice(instructions.map((i) => i.op).lastIndexOf('FROM'));
  const last = (op: string) => finalStage.filter((i) => i.op === op).at(-1);

  it('builds on node:20-slim with npm ci and without the CUDA download', () => {
    const froms = instructions.filter((i) => i.op === 'FROM').map((i) => i.args.split(/\s+/)[0]);
    expect(froms.every((f) => f === 'node:20-slim')).toBe(true);
    const npmCi = instructions.findIndex((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
    expect(npmCi).toBeGreaterThan(0);
    const skip = instructions.findIndex(
      (i) => i.op === 'ENV' && /ONNXRUNTIME_NODE_INSTALL(_CUDA)?=skip/.test(i.args),
    );
    expect(skip).toBeGreaterThanOrEqual(0);
    expect(skip).toBeLessThan(npmCi);
  });

  it('runs the package bin as a non-root user, with a HEALTHCHECK on /healthz', () => {
    const cmd = JSON.parse(last('CMD')!.args) as string[];
    expect(cmd[0]).toBe('node');
    expect(posix.normalize(cmd[1])).toBe(binPath);
    expect(cmd[2]).toBe('serve');
    const port = Number(flag(cmd, '--port'));
    expect(flag(cmd, '--host')).toBe('0.0.0.0');
    expect(last('EXPOSE')!.args).toBe(String(port));
    const user = last('USER')!.args.split(':')[0];
    expect(['root', '0', '']).not.toContain(user);
    const health = last('HEALTHCHECK')!.args;
    expect(health).toContain(`127.0.0.1:${port}${LIVENESS_PATH}`);
    // The final stage copies the bin and what it runs (dist/ or src/).
    const copies = finalStage.filter((i) => i.op === 'COPY').map((i) => i.args);
    expect(copies.some((c) => /\bbin\b/.test(c))).toBe(true);
    expect(copies.some((c) => /\b(dist|src)\b/.test(c))).toBe(true);
  });

  it('.dockerignore keeps junk out and everything the build copies in', () => {
    const patterns = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const junk of ['node_modules', '.git', 'dist']) expect(patterns).toContain(junk);
    const sources = instructions
      .filter((i) => i.op === 'COPY' && !i.args.includes('--from'))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((a) => !a.startsWith('--'))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(3);
    for (const src of sources) {
      const top = src.replace(/^\.\//, '').split('/')[0];
      expect(patterns, `${src} is copied but ignored`).not.toContain(top);
      expect(existsSync(join(repoRoot, src)), `${src} is copied but missing`).toBe(true);
    }
  });
});

describe('compose stack', () => {
  const composePath = join(deployDir, 'compose.yaml');
  const compose = parseYaml(readFileSync(composePath, 'utf8')) as Obj;
  const hostPath = (spec: string) => resolve(deployDir, spec.split(':')[0]);

  it('has the sidecar, Prometheus and Grafana, the sidecar built from deploy/Dockerfile', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'prometheus', 'sidecar']);
    const build = compose.services.sidecar.build;
    expect(resolve(deployDir, build.context)).toBe(repoRoot);
    expect(resolve(repoRoot, build.dockerfile)).toBe(join(deployDir, 'Dockerfile'));
    expect(posix.normalize(compose.services.sidecar.command[1])).toBe(binPath);
  });

  it("Prometheus's config is valid (promtool) and targets the sidecar's /metrics", () => {
    const prom = compose.services.prometheus;
    const configArg = (prom.command as string[]).find((a) => a.startsWith('--config.file='))!.split('=')[1];
    const mount = (prom.volumes as string[]).find((v) => v.split(':')[1] === configArg)!;
    expect(mount, 'the config file is mounted where --config.file points').toBeDefined();
    const configFile = hostPath(mount);
    const check = spawnSync(promtoolBinary(), ['check', 'config', configFile], { encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).toContain('SUCCESS');
    expect(check.status).toBe(0);

    const config = parseYaml(readFileSync(configFile, 'utf8')) as Obj;
    const sidecarPort = Number(flag(compose.services.sidecar.command, '--port'));
    const jobs = (config.scrape_configs as Obj[]).filter((j) =>
      (j.static_configs as Obj[]).some((s) => (s.targets as string[]).includes(`sidecar:${sidecarPort}`)),
    );
    expect(jobs).toHaveLength(1);
    expect(jobs[0].metrics_path ?? '/metrics').toBe(METRICS_PATH);
  });

  it('Grafana provisions the Prometheus datasource and the generated dashboards folder', () => {
    const grafana = compose.services.grafana;
    const mounts = (grafana.volumes as string[]).map((v) => ({
      host: hostPath(v),
      container: v.split(':')[1],
    }));
    const provisioning = mounts.find((m) => m.container === '/etc/grafana/provisioning')!;
    expect(provisioning).toBeDefined();

    const dsDir = join(provisioning.host, 'datasources');
    const datasources = readdirSync(dsDir).flatMap(
      (f) => (parseYaml(readFileSync(join(dsDir, f), 'utf8')) as Obj).datasources as Obj[],
    );
    const prometheusDs = datasources.find((d) => d.type === 'prometheus')!;
    expect(prometheusDs.url).toBe(
      `http://prometheus:${(compose.services.prometheus.ports[0] as string).split(':')[1]}`,
    );

    const dbDir = join(provisioning.host, 'dashboards');
    const providers = readdirSync(dbDir).flatMap(
      (f) => (parseYaml(readFileSync(join(dbDir, f), 'utf8')) as Obj).providers as Obj[],
    );
    expect(providers).toHaveLength(1);
    const dashboardsMount = mounts.find((m) => m.container === providers[0].options.path)!;
    expect(dashboardsMount, 'the provider path is a mounted folder').toBeDefined();
    expect(dashboardsMount.host).toBe(join(repoRoot, 'dashboards'));
    expect(statSync(dashboardsMount.host).isDirectory()).toBe(true);
    expect(
      readdirSync(dashboardsMount.host).filter((f) => f.endsWith('.json')).length,
    ).toBeGreaterThanOrEqual(2);
  });
});
