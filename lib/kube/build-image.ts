// build-image on Kubernetes: build the Digdag image from the runtime build-image holds (never a
// download in the Dockerfile) on a configurable base, the PostgreSQL image where the target has
// no registry, and bring them to the cluster: minikube image load, the own cluster's containerd
// (ctr import), or a push to the registry (gke).
import fs from 'node:fs';
import path from 'node:path';
import { loadClusterConfig, type ClusterConfig } from '../cluster/config.ts';
import { containerdHasImage, docker as clusterDocker, ensureBaseImage, loadImage } from '../cluster/images.ts';
import { CLUSTER_POSTGRES_IMAGE, type Config } from '../config.ts';
import { sha256File, type Runtime } from '../digdag.ts';
import { tail, UserError } from '../errors.ts';
import { DOCKER_DIR, MONITORING_DIR, ROOT } from '../paths.ts';
import type { Impl } from '../pipeline.ts';
import { cachedRuntime, obtainJmxAgent, runtimeInputs, runtimeJars } from '../runtime.ts';
import { ensureDir, listFiles } from '../state.ts';
import { UI_CONFIG_RESOURCE, uiConfigJs } from '../ui-login.ts';

/** The images this target builds: Digdag always, PostgreSQL when it is the cluster target's own. */
export function imagesToBuild(config: Config): { image: string; dockerDir: string }[] {
  const out = [{ image: config.k8s.image, dockerDir: DOCKER_DIR }];
  if (config.target === 'cluster' && config.k8s.postgresImage === CLUSTER_POSTGRES_IMAGE && !config.db.externalUrl) {
    out.push({ image: CLUSTER_POSTGRES_IMAGE, dockerDir: path.join(DOCKER_DIR, 'postgres') });
  }
  return out;
}

/** docker for this target: the own cluster's dockerd (unix socket in its state dir), else the user's. */
function dockerCmd(config: Config, cc: ClusterConfig | undefined, ...args: string[]): string[] {
  return cc ? clusterDocker(cc, ...args) : ['docker', ...args];
}

/** Where assembleContext puts the UI login overlay (the Dockerfile copies it to /opt/digdag/ui-login). */
export const UI_LOGIN_CONTEXT_DIR = 'ui-login';

/** The build context in the state dir: docker/'s files, digdag/ with the jars and SHA256SUMS,
 * jmx-exporter/ with the metrics agent and its rules, and ui-login/ with the web UI's login
 * config.js (lib/ui-login.ts), which the entrypoint puts first on the classpath when AUTH=basic. */
export function assembleContext(config: Config, rt: Runtime, jmxAgent: string): string {
  const dir = path.join(config.stateDir, 'image-context');
  fs.rmSync(dir, { recursive: true, force: true });
  ensureDir(dir, 0o755);
  for (const f of fs.readdirSync(DOCKER_DIR)) {
    const src = path.join(DOCKER_DIR, f);
    if (fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(dir, f));
  }
  const lib = ensureDir(path.join(dir, 'digdag'), 0o755);
  const sums: string[] = [];
  for (const jar of runtimeJars(rt)) {
    const name = path.basename(jar);
    fs.copyFileSync(jar, path.join(lib, name));
    sums.push(`${sha256File(jar)}  ${name}`);
  }
  fs.writeFileSync(path.join(lib, 'SHA256SUMS'), `${sums.join('\n')}\n`);
  const jmx = ensureDir(path.join(dir, 'jmx-exporter'), 0o755);
  fs.copyFileSync(jmxAgent, path.join(jmx, path.basename(jmxAgent)));
  fs.copyFileSync(path.join(MONITORING_DIR, 'jmx-exporter.yaml'), path.join(jmx, 'config.yaml'));
  const login = path.join(dir, UI_LOGIN_CONTEXT_DIR, UI_CONFIG_RESOURCE);
  ensureDir(path.dirname(login), 0o755);
  fs.writeFileSync(login, uiConfigJs(), { mode: 0o644 });
  return dir;
}

/** `docker build` argv; the own cluster's dockerd has no bridge, so apt in RUN needs the host's network. */
export function buildArgv(config: Config, cc: ClusterConfig | undefined, image: string, dockerfile: string, context: string): string[] {
  const c = config.k8s;
  const args = ['build', '-f', dockerfile, '-t', image];
  if (cc) args.push('--network', 'host');
  if (c.baseImage) args.push('--build-arg', `BASE_IMAGE=${c.baseImage}`);
  if (image === c.image) {
    args.push('--build-arg', `INSTALL_GCLOUD=${c.installGcloud}`, '--build-arg', `TZ=${c.tz}`, '--build-arg', `LANG=${c.lang}`);
  }
  return dockerCmd(config, cc, ...args, context);
}

const clusterOf = (config: Config) => (config.target === 'cluster' ? loadClusterConfig(config) : undefined);

export const buildImage: Impl = {
  inputs: (ctx) => ({
    values: { ...runtimeInputs(ctx.config), images: imagesToBuild(ctx.config).map((i) => i.image), base: ctx.config.k8s.baseImage, gcloud: ctx.config.k8s.installGcloud, tz: ctx.config.k8s.tz, lang: ctx.config.k8s.lang, target: ctx.config.target },
    files: [...listFiles(DOCKER_DIR), path.join(MONITORING_DIR, 'jmx-exporter.yaml'), path.join(ROOT, 'lib', 'ui-login.ts')],
  }),
  healthy: async (ctx) => {
    const cc = clusterOf(ctx.config);
    for (const { image } of imagesToBuild(ctx.config)) {
      const res = await ctx.runner.run({ argv: dockerCmd(ctx.config, cc, 'image', 'inspect', '--format', '{{.Id}}', image), nothrow: true, quiet: true });
      if (res.code !== 0) return false;
      if (cc && !(await containerdHasImage(ctx.runner, cc, image))) return false;
    }
    return `${imagesToBuild(ctx.config).map((i) => i.image).join(', ')} built${cc ? ' and in the cluster\'s containerd' : ''}`;
  },
  run: async (ctx) => {
    const cc = clusterOf(ctx.config);
    const info = await ctx.runner.run({ argv: dockerCmd(ctx.config, cc, 'info', '--format', '{{.ServerVersion}}'), nothrow: true });
    if (info.code !== 0) {
      throw new UserError('no Docker engine answers', cc ? 'bring the test cluster up first: npx tsx tasks/cluster.ts up (it starts its own dockerd)' : 'start Docker (or use --target local, which needs none)', tail(info.stderr, 3));
    }
    if (cc && ctx.config.k8s.baseImage === cc.baseImage) ctx.runner.log(await ensureBaseImage(ctx.runner, cc));
    const rt = await cachedRuntime(ctx.config, ctx.runner);
    const agent = await obtainJmxAgent(ctx.config, ctx.runner);
    const context = ctx.runner.dryRun ? path.join(ctx.config.stateDir, 'image-context') : assembleContext(ctx.config, rt, agent);
    const env = { DOCKER_BUILDKIT: '0' };
    const timeoutMs = 20 * 60_000;
    for (const { image, dockerDir } of imagesToBuild(ctx.config)) {
      const [dockerfile, dir] = image === ctx.config.k8s.image ? [path.join(context, 'Dockerfile'), context] : [path.join(dockerDir, 'Dockerfile'), dockerDir];
      await ctx.runner.run({ argv: buildArgv(ctx.config, cc, image, dockerfile, dir), env, mutates: true, timeoutMs });
      if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', ctx.config.k8s.minikubeProfile, 'image', 'load', image], mutates: true });
      else if (cc) {
        if (ctx.runner.dryRun) ctx.runner.log(`[dry-run] import ${image} into the cluster's containerd`);
        else await loadImage(ctx.runner, cc, image);
      } else await ctx.runner.run({ argv: ['docker', 'push', image], mutates: true });
    }
    if (!ctx.runner.dryRun) fs.rmSync(context, { recursive: true, force: true });
  },
};
