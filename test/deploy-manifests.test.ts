// The Kubernetes manifests of deploy/k8s, validated without a cluster: every kustomization's
// structure, and each variant (proxy, serve, gpu) rendered (by kubectl where installed, else by
// test/helpers/kustomize.ts, which is checked against kubectl) and checked as an API server and a
// kubelet would: references resolve (volumes, ConfigMaps, Secrets, claims, ports), probes hit routes
// the server registers, the sidecar's arguments are accepted by the real command line, and the
// Prometheus Operator objects carry the label kube-prometheus-stack selects.

import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { InterventionRegistry } from '../src/monitor/interventions.ts';
import { CreateInterventionRequest } from '../src/server/schemas.ts';
import { kubectlKustomize, readYamlDocs, render, resourcePaths, type Obj } from './helpers/kustomize.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const k8sDir = join(repoRoot, 'deploy/k8s');
const VARIANTS = { proxy: k8sDir, serve: join(k8sDir, 'serve'), gpu: join(k8sDir, 'gpu') } as const;
const SIDECAR = 'confidence-sidecar';
const binPath = posix.normalize(
  (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin[
    SIDECAR
  ],
);

function* files(dir: string): Generator<string> {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else yield p;
  }
}

/** GET routes the server registers: `app.get('/path'` (with or without type arguments) in its sources. */
function registeredGetRoutes(): Set<string> {
  const routes = new Set<string>();
  for (const dir of ['src/server', 'src/proxy']) {
    let list: string[] = [];
    try {
      list = [...files(join(repoRoot, dir))].filter((f) => f.endsWith('.ts'));
    } catch {
      continue; // src/proxy does not exist on every branch
    }
    for (const f of list) {
      for (const m of readFileSync(f, 'utf8').matchAll(/\bapp\.get\s*(?:<[^>]*>)?\(\s*['"`]([^'"`]+)['"`]/g))
        routes.add(m[1]);
    }
  }
  return routes;
}

const flag = (args: string[], name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

/**
 * Runs the real CLI's argument parsing on argv + --help (the bin, as the container runs it; cli.ts
 * exits on import, so it cannot be called in-process): exit 0 when every flag is known to the command,
 * 2 with a one-line reason otherwise. It loads no model.
 */
function cliAccepts(argv: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [join(repoRoot, binPath), ...argv, '--help'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stderr: r.stderr };
}

describe('kustomize structure', () => {
  const kustomizations = [...files(k8sDir)].filter((f) => f.endsWith('/kustomization.yaml')).map(dirname);

  it('every YAML file under deploy/ parses', () => {
    const yamls = [...files(join(repoRoot, 'deploy'))].filter((f) => /\.ya?ml$/.test(f));
    expect(yamls.length).toBeGreaterThan(15);
    for (const f of yamls) expect(() => readYamlDocs(f), relative(repoRoot, f)).not.toThrow();
  });

  it('every listed resource exists and every manifest is listed by exactly one kustomization', () => {
    const listed = kustomizations.flatMap((d) => resourcePaths(d));
    // examples/ holds files an operator adds by hand (each says how); they are validated below.
    const manifests = [...files(k8sDir)].filter(
      (f) => /\.ya?ml$/.test(f) && !f.endsWith('/kustomization.yaml') && !f.includes('/examples/'),
    );
    for (const m of manifests)
      expect(
        listed.filter((p) => p === m),
        relative(k8sDir, m),
      ).toHaveLength(1);
    for (const d of Object.values(VARIANTS)) expect(kustomizations).toContain(d);
  });

  it('the test renderer agrees with kubectl kustomize', (ctx) => {
    const rendered = Object.values(VARIANTS).map((d) => ({ d, kubectl: kubectlKustomize(d) }));
    if (rendered.some((r) => r.kubectl === null)) {
      console.warn('kubectl not installed: the manifests are checked with the test renderer only');
      return ctx.skip();
    }
    const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;
    for (const { d, kubectl } of rendered) {
      const sort = (list: Obj[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
      expect(sort(render(d)), relative(repoRoot, d)).toEqual(sort(kubectl!));
    }
  });
});

/** Objects of a variant, indexed. */
function variant(dir: string) {
  const objects = render(dir);
  const named = (kind: string, name: string) =>
    objects.find((o) => o.kind === kind && o.metadata.name === name);
  const deployments = objects.filter((o) => o.kind === 'Deployment');
  expect(deployments).toHaveLength(1);
  const pod = deployments[0].spec.template;
  const sidecar = (pod.spec.containers as Obj[]).find((c) => c.name === SIDECAR)!;
  expect(sidecar, `${SIDECAR} container`).toBeDefined();
  return {
    objects,
    named,
    deployment: deployments[0],
    pod,
    sidecar,
    argv: [...sidecar.command, ...sidecar.args] as string[],
  };
}

/** A container port by name or number, or undefined. */
function containerPort(
  containers: Obj[],
  port: string | number,
): { container: Obj; port: number } | undefined {
  for (const c of containers)
    for (const p of c.ports ?? [])
      if (p.name === port || p.containerPort === port) return { container: c, port: p.containerPort };
  return undefined;
}

describe.each(Object.entries(VARIANTS))('variant %s', (name, dir) => {
  it('objects are well-formed and unique; every selector matches what it selects', () => {
    const { objects, deployment, pod } = variant(dir);
    const keys = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const o of objects) {
      expect(typeof o.apiVersion).toBe('string');
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const matches = (sel: Obj, labels: Obj) => Object.entries(sel).every(([k, v]) => labels?.[k] === v);
    expect(matches(deployment.spec.selector.matchLabels, pod.metadata.labels)).toBe(true);
    const services = objects.filter((o) => o.kind === 'Service');
    expect(services).toHaveLength(1);
    expect(matches(services[0].spec.selector, pod.metadata.labels)).toBe(true);
    const monitor = objects.find((o) => o.kind === 'ServiceMonitor')!;
    expect(matches(monitor.spec.selector.matchLabels, services[0].metadata.labels)).toBe(true);
    const servicePorts = (services[0].spec.ports as Obj[]).map((p) => p.name);
    for (const ep of monitor.spec.endpoints as Obj[]) expect(servicePorts).toContain(ep.port);
  });

  it('the Service and the scrape annotations reach the sidecar, and only the sidecar', () => {
    const { objects, pod, sidecar, argv } = variant(dir);
    const port = Number(flag(argv, '--port'));
    expect(flag(argv, '--host')).toBe('0.0.0.0');
    expect((sidecar.ports as Obj[]).map((p) => p.containerPort)).toContain(port);
    const service = objects.find((o) => o.kind === 'Service')!;
    for (const sp of service.spec.ports as Obj[]) {
      const target = containerPort(pod.spec.containers, sp.targetPort);
      expect(target, `Service port ${sp.name}`).toBeDefined();
      expect(target!.container.name).toBe(SIDECAR);
      expect(target!.port).toBe(port);
    }
    expect(pod.metadata.annotations['prometheus.io/scrape']).toBe('true');
    expect(Number(pod.metadata.annotations['prometheus.io/port'])).toBe(port);
  });

  it('probes hit routes the server registers; the sidecar starts and is ready on /readyz', () => {
    const { pod, sidecar } = variant(dir);
    const routes = registeredGetRoutes();
    expect(routes).toContain('/healthz');
    const monitor = render(dir).find((o) => o.kind === 'ServiceMonitor')!;
    for (const ep of monitor.spec.endpoints as Obj[]) expect(routes).toContain(ep.path);
    expect(routes).toContain(pod.metadata.annotations['prometheus.io/path']);
    expect(sidecar.livenessProbe.httpGet.path).toBe('/healthz');
    expect(sidecar.startupProbe.httpGet.path).toBe('/readyz');
    expect(sidecar.readinessProbe.httpGet.path).toBe('/readyz');
    for (const c of pod.spec.containers as Obj[]) {
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe].filter(Boolean) as Obj[]) {
        if (!probe.httpGet) continue; // exec probes (vLLM on loopback) are checked with the proxy variant
        if (c.name === SIDECAR) expect(routes, `${c.name} probe`).toContain(probe.httpGet.path);
        const target = containerPort([c], probe.httpGet.port);
        expect(target, `${c.name} probe port ${probe.httpGet.port}`).toBeDefined();
      }
    }
  });

  it('every volume, claim, ConfigMap, Secret and key a container uses is defined', () => {
    const { named, pod, sidecar, argv } = variant(dir);
    const volumes = new Map((pod.spec.volumes as Obj[]).map((v) => [v.name, v]));
    for (const c of pod.spec.containers as Obj[]) {
      for (const m of c.volumeMounts ?? [])
        expect(volumes.has(m.name), `${c.name} mounts ${m.name}`).toBe(true);
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
        if (!ref) continue;
        const o = named(e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap', ref.name);
        expect(o, `${c.name} env ${e.name} -> ${ref.name}`).toBeDefined();
        expect(Object.keys({ ...o!.data, ...o!.stringData })).toContain(ref.key);
      }
    }
    for (const v of volumes.values()) {
      if (v.configMap) expect(named('ConfigMap', v.configMap.name), v.name).toBeDefined();
      if (v.secret) expect(named('Secret', v.secret.secretName), v.name).toBeDefined();
      if (v.persistentVolumeClaim)
        expect(named('PersistentVolumeClaim', v.persistentVolumeClaim.claimName), v.name).toBeDefined();
    }
    // The graph cache is on a claim (an emptyDir would rebuild the graph on every restart) ...
    const cacheDir = (sidecar.env as Obj[]).find((e) => e.name === 'CONFIDENCE_SIDECAR_CACHE')!.value;
    const cacheMount = (sidecar.volumeMounts as Obj[]).find((m) => m.mountPath === cacheDir)!;
    expect(volumes.get(cacheMount.name)!.persistentVolumeClaim).toBeDefined();
    // ... so a second Pod must not start while the first holds the ReadWriteOnce claim.
    expect(variant(dir).deployment.spec.strategy.type).toBe('Recreate');
    // The catalogue file is a key of the ConfigMap mounted where --catalogue points.
    const catalogue = flag(argv, '--catalogue')!;
    const mount = (sidecar.volumeMounts as Obj[]).find((m) => m.mountPath === posix.dirname(catalogue))!;
    const cm = named('ConfigMap', volumes.get(mount.name)!.configMap.name)!;
    expect(() => JSON.parse(cm.data[posix.basename(catalogue)])).not.toThrow();
  });

  it("the sidecar runs the package's bin with arguments its command line accepts, telemetry off", () => {
    const { sidecar, argv } = variant(dir);
    expect(argv[0]).toBe('node');
    expect(posix.normalize(argv[1])).toBe(binPath);
    const { code, stderr } = cliAccepts(argv.slice(2));
    if (code !== 0 && stderr.includes(`unknown command "${argv[2]}"`)) {
      console.warn(`${name}: command "${argv[2]}" is not on this branch yet; its flags are not checked`);
    } else {
      expect(stderr).toBe('');
      expect(code).toBe(0);
    }
    const env = Object.fromEntries((sidecar.env as Obj[]).map((e) => [e.name, e.value]));
    expect(env.ORT_DISABLE_TELEMETRY).toBe('1');
    expect(sidecar.securityContext.runAsNonRoot).toBe(true);
  });

  it('kube-prometheus-stack finds the ServiceMonitor and the PrometheusRule by their release label', () => {
    const { objects } = variant(dir);
    const monitoring = objects.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/'));
    expect(monitoring.map((o) => o.kind).sort()).toEqual(['PrometheusRule', 'ServiceMonitor']);
    for (const o of monitoring) expect(o.metadata.labels.release).toBe('kube-prometheus-stack');
    // Only those: the label means "scrape me / load me" to the Operator, nothing else needs it.
    for (const o of objects.filter((x) => !monitoring.includes(x)))
      expect(o.metadata.labels.release).toBeUndefined();
  });
});

describe('variant specifics', () => {
  it('proxy: the sidecar relays to vLLM on loopback in the same Pod, vLLM pinned and probed there', () => {
    const { pod, argv } = variant(VARIANTS.proxy);
    expect(argv[2]).toBe('proxy');
    const vllm = (pod.spec.containers as Obj[]).find((c) => c.name !== SIDECAR)!;
    expect(vllm.image).toMatch(/^vllm\/vllm-openai:v\d+\.\d+\.\d+$/);
    const vargs = vllm.args as string[];
    expect(flag(vargs, '--host')).toBe('127.0.0.1');
    expect(flag(argv, '--upstream')).toBe(`http://127.0.0.1:${flag(vargs, '--port')}`);
    // Both read the same model folder.
    expect(flag(argv, '--model')).toBe(flag(vargs, '--model'));
    // Loopback is out of the kubelet's reach: vLLM's probes run inside its container, on its port.
    for (const probe of [vllm.startupProbe, vllm.readinessProbe] as Obj[]) {
      expect(probe.exec.command.join(' ')).toContain(`http://127.0.0.1:${flag(vargs, '--port')}/health`);
    }
    expect(vllm.resources.limits['nvidia.com/gpu']).toBe(1);
  });

  it('serve: the sidecar serves the model alone', () => {
    const { pod, argv } = variant(VARIANTS.serve);
    expect(argv[2]).toBe('serve');
    expect(pod.spec.containers).toHaveLength(1);
  });

  it('gpu: the serve Pod with a GPU, --device cuda and the CUDA image', () => {
    const serve = variant(VARIANTS.serve);
    const { sidecar, argv } = variant(VARIANTS.gpu);
    expect(sidecar.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(flag(argv, '--device')).toBe('cuda');
    expect(argv.slice(0, serve.argv.length)).toEqual(serve.argv);
    expect(sidecar.image).toBe(`${serve.sidecar.image}-cuda`);
  });
});

/**
 * An interventions file as the server accepts it: `{interventions: [...]}` (or a bare list) of the
 * API's create-intervention bodies, each accepted by the intervention registry of the model's last layer.
 */
function validateInterventionsFile(text: string, lastLayer: number, dMlp: number): string[] {
  const doc = parseYaml(text) as Obj | Obj[];
  const list = Array.isArray(doc) ? doc : doc?.interventions;
  if (!Array.isArray(list)) return ['not a list of interventions'];
  const registry = new InterventionRegistry({ lastLayer, dMlp, calibrationMean: () => 0 });
  const problems: string[] = [];
  for (const [i, spec] of list.entries()) {
    if (!Value.Check(CreateInterventionRequest, spec)) {
      problems.push(
        `#${i}: ${[...Value.Errors(CreateInterventionRequest, spec)].map((e) => `${e.path} ${e.message}`).join('; ')}`,
      );
      continue;
    }
    try {
      registry.add({ neuron: spec.neuron, mode: spec.mode, value: spec.value, ttlS: spec.ttl_s });
    } catch (e) {
      problems.push(`#${i}: ${(e as Error).message}`);
    }
  }
  return problems;
}

describe('interventions ConfigMaps', () => {
  it('the validator accepts a good file and names what is wrong in a bad one', () => {
    const good =
      'interventions:\n  - {neuron: "11.584", mode: clamp, value: 4}\n  - {neuron: "11.2378", mode: mean_ablate}\n';
    expect(validateInterventionsFile(good, 11, 3072)).toEqual([]);
    const bad =
      'interventions:\n  - {neuron: "11.584", mode: clamp, value: "4"}\n  - {neuron: "5.1", mode: scale, value: 2}\n';
    const problems = validateInterventionsFile(bad, 11, 3072);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^#0: \/value/);
    expect(problems[1]).toMatch(/^#1: /);
  });

  it('every interventions file shipped in a ConfigMap is one the server accepts', () => {
    const configMaps = [
      ...Object.values(VARIANTS).flatMap((dir) => render(dir)),
      ...readYamlDocs(join(k8sDir, 'examples/interventions-configmap.yaml')),
    ].filter((o) => o.kind === 'ConfigMap');
    let checked = 0;
    {
      for (const cm of configMaps) {
        for (const [key, text] of Object.entries((cm.data ?? {}) as Record<string, string>)) {
          if (!/^interventions\.(ya?ml|json)$/.test(key)) continue;
          // GPT-2 small's last layer; a file for another model names its own neurons.
          expect(validateInterventionsFile(text, 11, 3072), `${cm.metadata.name}/${key}`).toEqual([]);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(1);
  });
});
