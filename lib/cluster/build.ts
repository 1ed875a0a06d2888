// The cluster's binaries, built with the Go toolchain from the Go module proxy into a cache
// outside the repository: one at a time (kube-apiserver alone needs ~1.6 GB per compile
// process), each skipped when already there.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import type { Runner } from '../runner.ts';
import { COREDNS_VERSION, K8S_GIT_COMMIT, K8S_SCHEMA_VERSION, KUBE_ROUTER_VERSION } from '../versions.ts';
import type { ClusterConfig } from './config.ts';

export interface Binary {
  name: string;
  /** Built inside cluster/k8s (our module pinning the staging modules) or with `go install pkg@version`. */
  source: { module: 'k8s'; pkg: string } | { install: string };
}

export const K8S_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy'] as const;

export const BINARIES: readonly Binary[] = [
  ...K8S_COMPONENTS.map((name) => ({ name, source: { module: 'k8s' as const, pkg: `k8s.io/kubernetes/cmd/${name}` } })),
  { name: 'coredns', source: { install: `github.com/coredns/coredns@${COREDNS_VERSION}` } },
  { name: 'kube-router', source: { install: `github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@${KUBE_ROUTER_VERSION}` } },
];

/** What `kubectl version` parses: without these the server reports v0.0.0-master and clients fail. */
export function k8sLdflags(version = K8S_SCHEMA_VERSION): string {
  const [, major, minor] = /^v(\d+)\.(\d+)\./.exec(version) ?? [];
  const flags = ['-s', '-w'];
  for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
    flags.push(
      `-X ${pkg}.gitVersion=${version}`,
      `-X ${pkg}.gitMajor=${major}`,
      `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitCommit=${K8S_GIT_COMMIT}`,
      `-X ${pkg}.gitTreeState=clean`,
      `-X ${pkg}.buildDate=1970-01-01T00:00:00Z`,
    );
  }
  return flags.join(' ');
}

export const binPath = (cc: ClusterConfig, name: string) => path.join(cc.binDir, name);

export function missingBinaries(cc: ClusterConfig): string[] {
  return BINARIES.map((b) => b.name).filter((n) => !fs.existsSync(binPath(cc, n)));
}

async function goVersion(runner: Runner): Promise<[number, number]> {
  const r = await runner.run({ argv: ['go', 'env', 'GOVERSION'], nothrow: true, quiet: true }).catch(() => ({ code: 1, stdout: '' }));
  const m = /go(\d+)\.(\d+)/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new UserError('the Go toolchain (go) is not on PATH', 'install Go 1.22 or newer (bash .ci/install-cluster), then run `npx tsx tasks/cluster.ts build`');
  return [Number(m[1]), Number(m[2])];
}

/** Builds what is missing; returns "name: seconds" for each binary built (or "cached"). */
export async function buildBinaries(runner: Runner, cc: ClusterConfig, moduleDir: string, log: (l: string) => void = () => {}): Promise<string[]> {
  const missing = new Set(missingBinaries(cc));
  if (!missing.size) return BINARIES.map((b) => `${b.name}: cached`);
  const [major, minor] = await goVersion(runner);
  if (major < 1 || (major === 1 && minor < 22)) {
    throw new UserError(`go ${major}.${minor} is too old to build Kubernetes ${K8S_SCHEMA_VERSION}`, 'install Go 1.22 or newer');
  }
  await runner.change(undefined, () => fs.mkdirSync(cc.binDir, { recursive: true }));
  const out: string[] = [];
  for (const b of BINARIES) {
    if (!missing.has(b.name)) {
      out.push(`${b.name}: cached`);
      continue;
    }
    log(`building ${b.name} into ${cc.binDir}`);
    const started = Date.now();
    const tmp = `${binPath(cc, b.name)}.tmp-${process.pid}`;
    const env = { CGO_ENABLED: '0', GOFLAGS: '-mod=mod' };
    try {
      if ('module' in b.source) {
        await runner.run({ argv: ['go', 'build', '-trimpath', '-ldflags', k8sLdflags(), '-o', tmp, b.source.pkg], cwd: moduleDir, env, mutates: true });
      } else {
        // `go install` writes <GOBIN>/<last path element>; build into a private GOBIN, then move.
        const gobin = `${tmp}.d`;
        await runner.run({ argv: ['go', 'install', '-trimpath', '-ldflags', '-s -w', b.source.install], env: { ...env, GOBIN: gobin }, mutates: true });
        const installed = path.join(gobin, b.source.install.replace(/@.*$/, '').split('/').pop()!);
        await runner.change(undefined, () => fs.renameSync(installed, tmp));
        fs.rmSync(gobin, { recursive: true, force: true });
      }
      await runner.change(undefined, () => fs.renameSync(tmp, binPath(cc, b.name)));
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    out.push(`${b.name}: built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
  return out;
}
