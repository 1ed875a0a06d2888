// Images without any registry: a base image debootstrapped from Debian's mirror, the pod
// sandbox ("pause") image compiled here, a small test image, and loading images into the
// cluster's containerd. Each is made once; the base rootfs tarball is cached across state dirs.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ImageCache } from '../image-host.ts';
import type { Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { BASE_IMAGE_SUITE } from '../versions.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';

export function docker(cc: ClusterConfig, ...args: string[]): string[] {
  return [cc.dockerCli, '-H', `unix://${clusterPaths(cc).dockerSock}`, ...args];
}

export function ctr(cc: ClusterConfig, ...args: string[]): string[] {
  return ['ctr', '--address', clusterPaths(cc).containerdSock, '-n', 'k8s.io', ...args];
}

async function hasDockerImage(runner: Runner, cc: ClusterConfig, image: string): Promise<boolean> {
  return (await runner.run({ argv: docker(cc, 'image', 'inspect', '--format', '{{.Id}}', image), nothrow: true, quiet: true })).code === 0;
}

/** The sandbox process: waits for a signal and reaps orphans, like Kubernetes' own pause. */
const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, quit);
  signal(SIGTERM, quit);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
`;

export async function ensurePauseImage(runner: Runner, cc: ClusterConfig): Promise<string> {
  if (await hasDockerImage(runner, cc, cc.pauseImage)) return `${cc.pauseImage}: present`;
  const dir = ensureDir(path.join(cc.cacheDir, 'pause'), 0o755);
  const tar = path.join(dir, 'pause.tar');
  if (!fs.existsSync(tar)) {
    fs.writeFileSync(path.join(dir, 'pause.c'), PAUSE_C);
    await runner.run({ argv: ['gcc', '-static', '-Os', '-o', path.join(dir, 'pause'), path.join(dir, 'pause.c')], mutates: true });
    await runner.run({ argv: ['tar', '-C', dir, '--owner=0', '--group=0', '-cf', `${tar}.tmp`, 'pause'], mutates: true });
    fs.renameSync(`${tar}.tmp`, tar);
  }
  await runner.run({ argv: docker(cc, 'import', '--change', 'ENTRYPOINT ["/pause"]', '--change', 'USER 65535:65535', tar, cc.pauseImage), mutates: true });
  return `${cc.pauseImage}: made`;
}

/** `debootstrap --variant=minbase` once into the cache, imported as CLUSTER_BASE_IMAGE. */
export async function ensureBaseImage(runner: Runner, cc: ClusterConfig): Promise<string> {
  if (await hasDockerImage(runner, cc, cc.baseImage)) return `${cc.baseImage}: present`;
  const tar = path.join(cc.cacheDir, `base-${BASE_IMAGE_SUITE}.tar`);
  let how = 'imported from the cache';
  if (!fs.existsSync(tar)) {
    const rootfs = path.join(cc.cacheDir, `rootfs-${BASE_IMAGE_SUITE}.tmp`);
    fs.rmSync(rootfs, { recursive: true, force: true });
    ensureDir(cc.cacheDir, 0o755);
    await runner.run({ argv: ['debootstrap', '--variant=minbase', BASE_IMAGE_SUITE, rootfs, cc.debianMirror], mutates: true, timeoutMs: 15 * 60_000 });
    // Leave apt's caches and logs out of the image.
    for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists', 'var/log']) {
      for (const e of fs.existsSync(path.join(rootfs, d)) ? fs.readdirSync(path.join(rootfs, d)) : []) {
        if (e !== 'partial' && e !== 'lock') fs.rmSync(path.join(rootfs, d, e), { recursive: true, force: true });
      }
    }
    await runner.run({ argv: ['tar', '-C', rootfs, '--numeric-owner', '-cf', `${tar}.tmp`, '.'], mutates: true });
    fs.renameSync(`${tar}.tmp`, tar);
    fs.rmSync(rootfs, { recursive: true, force: true });
    how = 'debootstrapped';
  }
  await runner.run({ argv: docker(cc, 'import', '--change', 'CMD ["/bin/bash"]', tar, cc.baseImage), mutates: true });
  return `${cc.baseImage}: ${how}`;
}

/** The base plus a static busybox (httpd, nc, wget), running as nobody: what test pods run. */
export async function ensureTestImage(runner: Runner, cc: ClusterConfig): Promise<string> {
  if (await hasDockerImage(runner, cc, cc.testImage)) return `${cc.testImage}: present`;
  const ctx = ensureDir(path.join(cc.dir, 'build', 'test-image'));
  fs.copyFileSync('/bin/busybox', path.join(ctx, 'busybox'));
  fs.writeFileSync(path.join(ctx, 'Dockerfile'), [`FROM ${cc.baseImage}`, 'COPY busybox /bin/busybox', 'USER 65534:65534', 'ENTRYPOINT ["/bin/busybox"]', ''].join('\n'));
  await runner.run({ argv: docker(cc, 'build', '-q', '-t', cc.testImage, ctx), env: { DOCKER_BUILDKIT: '0' }, mutates: true });
  fs.rmSync(ctx, { recursive: true, force: true });
  return `${cc.testImage}: built`;
}

/** The Cloud SQL Auth Proxy binary (`binary`: .ci/install-cloud-sql-proxy's, static) alone in an
 * image, as Google's distroless one is: no shell, a non-root user, the proxy as entrypoint. */
export async function ensureCloudSqlProxyImage(runner: Runner, cc: ClusterConfig, binary: string): Promise<string> {
  if (await hasDockerImage(runner, cc, cc.cloudSqlProxyImage)) return `${cc.cloudSqlProxyImage}: present`;
  const ctx = ensureDir(path.join(cc.dir, 'build', 'cloud-sql-proxy-image'));
  fs.copyFileSync(binary, path.join(ctx, 'cloud-sql-proxy'));
  fs.chmodSync(path.join(ctx, 'cloud-sql-proxy'), 0o755);
  fs.writeFileSync(path.join(ctx, 'Dockerfile'), ['FROM scratch', 'COPY cloud-sql-proxy /cloud-sql-proxy', 'USER 65532:65532', 'ENTRYPOINT ["/cloud-sql-proxy"]', ''].join('\n'));
  try {
    await runner.run({ argv: docker(cc, 'build', '-q', '-t', cc.cloudSqlProxyImage, ctx), env: { DOCKER_BUILDKIT: '0' }, mutates: true });
  } finally {
    fs.rmSync(ctx, { recursive: true, force: true });
  }
  return `${cc.cloudSqlProxyImage}: built`;
}

/** Makes a Docker image available to the kubelet (`ctr images import`). Give it exactly the name
 * the manifests use, with a pull policy other than Always. An image the image cache just restored
 * or kept is imported from that file (one pass over it instead of `docker save` first, a second
 * copy of the same bytes: the file is used only while dockerd still holds the very image it has). */
export async function loadImage(runner: Runner, cc: ClusterConfig, image: string): Promise<void> {
  const cached = cacheFileOf(cc, image);
  if (cached && fs.existsSync(cached.file) && (await dockerImageId(runner, cc, image)) === cached.id) {
    await runner.run({ argv: ctr(cc, 'images', 'import', cached.file), mutates: true, timeoutMs: 10 * 60_000 });
    return;
  }
  // Per image: several may be loaded at once.
  const tmp = path.join(ensureDir(path.join(cc.dir, 'build')), `image-${process.pid}-${image.replace(/[^A-Za-z0-9.-]+/g, '_')}.tar`);
  try {
    await runner.run({ argv: docker(cc, 'save', '-o', tmp, image), mutates: true });
    await runner.run({ argv: ctr(cc, 'images', 'import', tmp), mutates: true, timeoutMs: 10 * 60_000 });
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

async function dockerImageId(runner: Runner, cc: ClusterConfig, image: string): Promise<string | undefined> {
  const r = await runner.run({ argv: docker(cc, 'image', 'inspect', '--format', '{{.Id}}', image), nothrow: true, quiet: true });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** Which image-cache file holds which image, as dockerd has it (by image ID): per cluster dir,
 * since dockerd lives and dies with the cluster. */
const cacheFilesJson = (cc: ClusterConfig) => path.join(cc.dir, 'build', 'image-cache-files.json');
type CacheFiles = Record<string, { id: string; file: string }>;

function readCacheFiles(cc: ClusterConfig): CacheFiles {
  try {
    return JSON.parse(fs.readFileSync(cacheFilesJson(cc), 'utf8')) as CacheFiles;
  } catch {
    return {};
  }
}

function cacheFileOf(cc: ClusterConfig, image: string): { id: string; file: string } | undefined {
  return readCacheFiles(cc)[image];
}

async function recordCacheFile(runner: Runner, cc: ClusterConfig, image: string, file: string): Promise<void> {
  const id = await dockerImageId(runner, cc, image);
  if (!id) return;
  ensureDir(path.join(cc.dir, 'build'));
  fs.writeFileSync(cacheFilesJson(cc), JSON.stringify({ ...readCacheFiles(cc), [image]: { id, file } }));
}

export async function containerdHasImage(runner: Runner, cc: ClusterConfig, image: string): Promise<boolean> {
  const r = await runner.run({ argv: ctr(cc, 'images', 'ls', '-q'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.split('\n').includes(image);
}

/** Built images kept in the cache dir across clusters (each cluster's dockerd starts empty):
 * `docker save` after a build, `docker load` instead of the next identical one. One file per image,
 * named by its build key; an image's older builds are removed when a new one is kept. */
export function clusterImageCache(cc: ClusterConfig): ImageCache {
  const dir = path.join(cc.cacheDir, 'images');
  const prefix = (image: string) => `${image.replace(/[^A-Za-z0-9.-]+/g, '_')}-`;
  const file = (image: string, key: string) => path.join(dir, `${prefix(image)}${key.slice(0, 24)}.tar`);
  return {
    restore: async (runner, image, key) => {
      if (!fs.existsSync(file(image, key))) return false;
      const r = await runner.run({ argv: docker(cc, 'load', '-q', '-i', file(image, key)), mutates: true, nothrow: true, quiet: true, timeoutMs: 10 * 60_000 });
      if (r.code === 0) {
        await recordCacheFile(runner, cc, image, file(image, key));
        return true;
      }
      // A damaged file (a disk filled mid-save): build instead, and replace it.
      fs.rmSync(file(image, key), { force: true });
      return false;
    },
    keep: async (runner, image, key) => {
      ensureDir(dir, 0o755);
      const tmp = `${file(image, key)}.${process.pid}.tmp`;
      try {
        await runner.run({ argv: docker(cc, 'save', '-o', tmp, image), mutates: true, quiet: true, timeoutMs: 10 * 60_000 });
        for (const old of fs.readdirSync(dir)) if (old.startsWith(prefix(image)) && old.endsWith('.tar')) fs.rmSync(path.join(dir, old), { force: true });
        fs.renameSync(tmp, file(image, key));
        await recordCacheFile(runner, cc, image, file(image, key));
      } finally {
        fs.rmSync(tmp, { force: true });
      }
    },
  };
}

/** An image of one cached binary, as an add-on's upstream image is (KEDA's, metrics-server's:
 * FROM scratch here instead of distroless): built once through the cluster's dockerd, kept in the
 * image cache keyed by the version, the binary (a rebuild by its .ci/install-* script changes its
 * size or mtime) and the recipe, and imported into the cluster's containerd. `files` are copied
 * into the build context too (name there → source). Returns "<image>: how". */
export async function ensureBinaryImage(
  runner: Runner,
  cc: ClusterConfig,
  o: { image: string; binary: string; version: string; dockerfile: string; context: string; files?: Record<string, string> },
): Promise<string> {
  const st = fs.statSync(o.binary);
  const key = crypto.createHash('sha256').update(`${o.version}\n${st.size}\n${st.mtimeMs}\n${o.dockerfile}`).digest('hex');
  const cache = clusterImageCache(cc);
  let how = 'present';
  if (!(await hasDockerImage(runner, cc, o.image))) {
    if (await cache.restore(runner, o.image, key)) how = 'loaded from the image cache';
    else {
      const ctx = ensureDir(path.join(cc.dir, 'build', o.context));
      try {
        const name = path.basename(o.binary);
        fs.copyFileSync(o.binary, path.join(ctx, name));
        fs.chmodSync(path.join(ctx, name), 0o755);
        for (const [n, src] of Object.entries(o.files ?? {})) fs.copyFileSync(src, path.join(ctx, n));
        fs.writeFileSync(path.join(ctx, 'Dockerfile'), o.dockerfile);
        await runner.run({ argv: docker(cc, 'build', '-q', '-t', o.image, ctx), env: { DOCKER_BUILDKIT: '0' }, mutates: true, quiet: true, timeoutMs: 5 * 60_000 });
      } finally {
        fs.rmSync(ctx, { recursive: true, force: true });
      }
      await cache.keep(runner, o.image, key);
      how = 'built';
    }
  }
  if (!(await containerdHasImage(runner, cc, o.image))) {
    await loadImage(runner, cc, o.image);
    how += ', imported into containerd';
  }
  return `${o.image}: ${how}`;
}
