// build-image on Kubernetes: build the Digdag image from the runtime build-image holds (never a
// download in the Dockerfile) on a configurable base, the PostgreSQL image where the target has
// no registry, and bring them to the cluster through the target's image host (lib/image-host.ts):
// minikube image load and a push to the registry (gke) here, the own cluster's containerd (ctr
// import) in lib/cluster/image-host.ts, which the tasks layer hands in (tasks/steps.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CLUSTER_POSTGRES_IMAGE, type Config } from '../config.ts';
import { detectJava, sha256File, type Runtime } from '../digdag.ts';
import { tail, UserError } from '../errors.ts';
import type { ImageHost, ImageHostFor } from '../image-host.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { DOCKER_DIR, MONITORING_DIR, ROOT } from '../paths.ts';
import type { Impl } from '../pipeline.ts';
import { cachedRuntime, obtainJmxAgent, runtimeInputs, runtimeJars } from '../runtime.ts';
import { ensureDir, listFiles } from '../state.ts';
import { UI_CONFIG_RESOURCE, uiConfigJs } from '../ui-login.ts';
import { compileDigdagPatches, DIGDAG_PATCHES_WHAT } from '../digdag-patches.ts';
import { imageBuildFile } from './values.ts';
import { GCLOUD_SDK_CONTEXT_DIR, gcloudSdkSource, SDK_KEPT_APIS, sdkIdentity, stageGcloudSdk } from './gcloud-sdk.ts';

/** The images this target builds: Digdag always, PostgreSQL when it is the cluster target's own. */
export function imagesToBuild(config: Config): { image: string; dockerDir: string }[] {
  const out = [{ image: config.k8s.image, dockerDir: DOCKER_DIR }];
  if (config.target === 'cluster' && config.k8s.postgresImage === CLUSTER_POSTGRES_IMAGE && !config.db.externalUrl) {
    out.push({ image: CLUSTER_POSTGRES_IMAGE, dockerDir: path.join(DOCKER_DIR, 'postgres') });
  }
  return out;
}

/** The user's Docker engine, as minikube and gke build with. */
const userDocker = {
  docker: (...args: string[]) => ['docker', ...args],
  buildOnHostNetwork: false,
  noEngineHint: 'start Docker (or use --target local, which needs none)',
};

/** minikube: built with the user's docker, then `minikube image load` into the profile's node. */
export const minikubeImageHost: ImageHostFor = (config) => ({
  ...userDocker,
  load: async (runner, image) => {
    await runner.run({ argv: ['minikube', '-p', config.k8s.minikubeProfile, 'image', 'load', image], mutates: true });
  },
});

/** gke: built with the user's docker, then pushed to the registry the image name includes. */
export const registryImageHost: ImageHostFor = () => ({
  ...userDocker,
  load: async (runner, image) => {
    await runner.run({ argv: ['docker', 'push', image], mutates: true });
  },
});

/** The image host of this config's target; the own cluster's is handed in (the tasks layer chooses it). */
export function imageHostOf(config: Config, ownCluster: ImageHostFor | undefined): ImageHost {
  if (config.target === 'minikube') return minikubeImageHost(config);
  if (config.target === 'cluster') {
    if (!ownCluster) throw new Error('the Kubernetes target was made without the own cluster\'s image host (tasks/steps.ts hands it in)');
    return ownCluster(config);
  }
  return registryImageHost(config);
}

/** Where build-image compiles digdag-ha's patches to Digdag in the context (the Dockerfile copies them to /opt/digdag/patches). */
export const DIGDAG_PATCHES_CONTEXT_DIR = 'digdag-patches';

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
  // Filled by build-image when DIGDAG_PATCHES=true (lib/digdag-patches.ts); COPY needs the directory.
  ensureDir(path.join(dir, DIGDAG_PATCHES_CONTEXT_DIR), 0o755);
  // Filled by build-image when INSTALL_GCLOUD=true (lib/kube/gcloud-sdk.ts); empty: a lean image.
  ensureDir(path.join(dir, GCLOUD_SDK_CONTEXT_DIR), 0o755);
  const login = path.join(dir, UI_LOGIN_CONTEXT_DIR, UI_CONFIG_RESOURCE);
  ensureDir(path.dirname(login), 0o755);
  fs.writeFileSync(login, uiConfigJs(), { mode: 0o644 });
  return dir;
}

/** `docker build` argv; the own cluster's dockerd has no bridge, so apt in RUN needs the host's network. */
export function buildArgv(config: Config, host: ImageHost, image: string, dockerfile: string, context: string): string[] {
  const c = config.k8s;
  const args = ['build', '-f', dockerfile, '-t', image];
  if (host.buildOnHostNetwork) args.push('--network', 'host');
  if (c.baseImage) args.push('--build-arg', `BASE_IMAGE=${c.baseImage}`);
  if (image === c.image) {
    args.push('--build-arg', `INSTALL_GCLOUD=${c.installGcloud}`, '--build-arg', `TZ=${c.tz}`, '--build-arg', `LANG=${c.lang}`);
  }
  return host.docker(...args, context);
}

/** What makes an image: the build arguments, the Dockerfile, every file of the context (names
 * relative to it, contents) and the base by content (its layers), so a cached build is reused only
 * when a new one would make the same image. */
export function buildKey(args: readonly string[], dockerfile: string, context: string, baseLayers: string): string {
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify({ args, dockerfile: path.relative(context, dockerfile), baseLayers }));
  for (const f of listFiles(context)) {
    h.update(`\0${path.relative(context, f)}\0`);
    h.update(fs.readFileSync(f));
  }
  if (!dockerfile.startsWith(context + path.sep)) h.update(fs.readFileSync(dockerfile));
  return h.digest('hex');
}

/** Builds one image on the host, or loads it from the host's image cache when the same build was
 * made before (the own cluster: its dockerd starts empty with every cluster). */
export async function buildImage(runner: Runner, config: Config, host: ImageHost, image: string, dockerfile: string, context: string): Promise<'built' | 'loaded from the image cache'> {
  const argv = buildArgv(config, host, image, dockerfile, context);
  let key: string | undefined;
  if (host.imageCache && config.k8s.baseImage && changesApplied(runner)) {
    const base = await runner.run({ argv: host.docker('image', 'inspect', '--format', '{{json .RootFS.Layers}}', config.k8s.baseImage), nothrow: true, quiet: true });
    // From `build` on, without the paths: the engine's socket and the context differ per cluster and state dir.
    if (base.code === 0) key = buildKey(argv.slice(argv.indexOf('build'), -1).filter((a) => a !== dockerfile), dockerfile, context, base.stdout.trim());
  }
  if (key && (await host.imageCache!.restore(runner, image, key))) return 'loaded from the image cache';
  await runner.run({ argv, env: { DOCKER_BUILDKIT: '0' }, mutates: true, timeoutMs: 20 * 60_000 });
  if (key) await host.imageCache!.keep(runner, image, key);
  return 'built';
}

/** The image's Google Cloud CLI as an input: its source and version (a new SDK rebuilds), false without it. */
function gcloudInput(config: Config): string | false {
  if (!config.k8s.installGcloud) return false;
  try {
    const src = gcloudSdkSource(config);
    return `${src.path} ${sdkIdentity(src)} apis:${SDK_KEPT_APIS.join(',')}`;
  } catch {
    // Refused by run, with the fix.
    return 'no SDK found';
  }
}

/** build-image on Kubernetes; `ownCluster` is the own cluster's image host (lib/cluster/image-host.ts). */
export const buildImageWith = (ownCluster?: ImageHostFor): Impl => ({
  inputs: (ctx) => ({
    values: { ...runtimeInputs(ctx.config), digdagPatches: ctx.config.digdag.patches, images: imagesToBuild(ctx.config).map((i) => i.image), base: ctx.config.k8s.baseImage, gcloud: gcloudInput(ctx.config), tz: ctx.config.k8s.tz, lang: ctx.config.k8s.lang, target: ctx.config.target },
    files: [...listFiles(DOCKER_DIR), path.join(MONITORING_DIR, 'jmx-exporter.yaml'), path.join(ROOT, 'lib', 'ui-login.ts')],
  }),
  healthy: async (ctx) => {
    const host = imageHostOf(ctx.config, ownCluster);
    for (const { image } of imagesToBuild(ctx.config)) {
      const res = await ctx.runner.run({ argv: host.docker('image', 'inspect', '--format', '{{.Id}}', image), nothrow: true, quiet: true });
      if (res.code !== 0) return false;
      if (host.loaded && !(await host.loaded(ctx.runner, image))) return false;
    }
    return `${imagesToBuild(ctx.config).map((i) => i.image).join(', ')} built${host.loaded ? host.loadedNote ?? '' : ''}`;
  },
  run: async (ctx) => {
    // Before anything is built: an SDK that cannot go into the image is refused with the fix.
    const sdk = ctx.config.k8s.installGcloud ? gcloudSdkSource(ctx.config) : undefined;
    const host = imageHostOf(ctx.config, ownCluster);
    const info = await ctx.runner.run({ argv: host.docker('info', '--format', '{{.ServerVersion}}'), nothrow: true });
    if (info.code !== 0) {
      throw new UserError('no Docker engine answers', host.noEngineHint, tail(info.stderr, 3));
    }
    const prepared = await host.prepare?.(ctx.runner, ctx.config);
    if (prepared) ctx.runner.log(prepared);
    const rt = await cachedRuntime(ctx.config, ctx.runner);
    const agent = await obtainJmxAgent(ctx.config, ctx.runner);
    const context = (await ctx.runner.change(undefined, () => assembleContext(ctx.config, rt, agent))) ?? path.join(ctx.config.stateDir, 'image-context');
    if (ctx.config.digdag.patches && changesApplied(ctx.runner)) {
      const how = await compileDigdagPatches(ctx.runner, await detectJava(ctx.config, ctx.runner), rt, path.join(context, DIGDAG_PATCHES_CONTEXT_DIR));
      ctx.runner.log(`digdag-ha's patches to Digdag (${DIGDAG_PATCHES_WHAT}): ${how} into the image`);
    }
    if (sdk && changesApplied(ctx.runner)) ctx.runner.log(`${await stageGcloudSdk(ctx.runner, ctx.config, sdk, path.join(context, GCLOUD_SDK_CONTEXT_DIR))} into the image`);
    for (const { image, dockerDir } of imagesToBuild(ctx.config)) {
      const [dockerfile, dir] = image === ctx.config.k8s.image ? [path.join(context, 'Dockerfile'), context] : [path.join(dockerDir, 'Dockerfile'), dockerDir];
      const how = await buildImage(ctx.runner, ctx.config, host, image, dockerfile, dir);
      if (how !== 'built') ctx.runner.log(`${image}: ${how}`);
      await host.load(ctx.runner, image);
      if (image === ctx.config.k8s.image) {
        // Its ID goes onto the pods (chart image.buildId): a rebuild under the same tag rolls them.
        const id = (await ctx.runner.run({ argv: host.docker('image', 'inspect', '--format', '{{.Id}}', image), nothrow: true, quiet: true })).stdout.trim();
        if (/^sha256:[0-9a-f]{64}$/.test(id)) await ctx.runner.change(undefined, () => fs.writeFileSync(imageBuildFile(ctx.config), `${JSON.stringify({ [image]: id })}\n`));
      }
    }
    await ctx.runner.change(undefined, () => fs.rmSync(context, { recursive: true, force: true }));
  },
});
