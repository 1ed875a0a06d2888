// The real Cloud SQL Auth Proxy v2 as a test process: the binary .ci/install-cloud-sql-proxy builds
// into the cache, started against the Admin API stand-in (cloudsql-admin.ts) with only test
// settings in its environment: SSL_CERT_DIR on a directory laid out as Kubernetes mounts a
// ConfigMap (ca.crt -> ..data/ca.crt), holding the test CA that signed the stand-in's HTTPS
// certificate — exactly how the chart's sidecar trusts googleApis.caBundle, besides the system's
// CA file — and GCE_METADATA_HOST (Application Default Credentials from the project's metadata
// server, as Workload Identity gives a pod). HOME is a scratch directory, so no gcloud
// credentials of this machine can be picked up.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLOUD_SQL_PROXY_VERSION } from '../../../lib/versions.ts';

const running = new Set<ChildProcess>();
// Whatever happens to the test process, no proxy it started outlives it.
process.once('exit', () => { for (const c of running) c.kill('SIGKILL'); });

const cacheRoot = () => path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'digdag-ha');
export const cloudSqlProxyBin = () => path.join(cacheRoot(), `cloud-sql-proxy-${CLOUD_SQL_PROXY_VERSION}`, 'cloud-sql-proxy');

/** Why the proxy cannot run here (then the tests report SKIPPED), or undefined. */
export function cloudSqlProxyMissing(): string | undefined {
  return fs.existsSync(cloudSqlProxyBin()) ? undefined : `the Cloud SQL Auth Proxy is not built (${cloudSqlProxyBin()}): run bash .ci/install-cloud-sql-proxy`;
}

export interface ProxyProcess {
  /** Everything it printed so far (stdout + stderr), one entry a line. */
  lines: string[];
  /** Resolves with the exit code (or the signal) once it has exited. */
  exited: Promise<number | string>;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  instance: string;
  port: number;
  adminApi: string;
  caFile: string;
  /** host:port of the metadata server (ADC); without it a closed port: no identity. */
  metadataHostPort?: string;
  /** More flags (e.g. --private-ip, --run-connection-test). */
  args?: string[];
  home: string;
}

/** `dir` as the kubelet mounts a ConfigMap with key ca.crt: a timestamped directory, ..data -> it, ca.crt -> ..data/ca.crt. */
function configMapLikeDir(dir: string, caFile: string): string {
  const stamp = '..2026_01_01_00_00_00.000000000';
  fs.mkdirSync(path.join(dir, stamp), { recursive: true });
  fs.copyFileSync(caFile, path.join(dir, stamp, 'ca.crt'));
  if (!fs.existsSync(path.join(dir, '..data'))) fs.symlinkSync(stamp, path.join(dir, '..data'));
  if (!fs.existsSync(path.join(dir, 'ca.crt'))) fs.symlinkSync('..data/ca.crt', path.join(dir, 'ca.crt'));
  return dir;
}

/** The chart's flags for the sidecar that matter outside a pod (no health server, no metrics export). */
export function startCloudSqlProxy(opts: ProxyOptions): ProxyProcess {
  fs.mkdirSync(opts.home, { recursive: true });
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: opts.home,
    SSL_CERT_DIR: configMapLikeDir(path.join(opts.home, 'ca'), opts.caFile),
    GCE_METADATA_HOST: opts.metadataHostPort ?? '127.0.0.1:9',
  };
  const child: ChildProcess = spawn(cloudSqlProxyBin(), [
    '--structured-logs', `--port=${opts.port}`, '--address=127.0.0.1', '--exit-zero-on-sigterm',
    `--sqladmin-api-endpoint=${opts.adminApi}`, ...(opts.args ?? []), opts.instance,
  ], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  const lines: string[] = [];
  const collect = (b: Buffer) => lines.push(...b.toString('utf8').split('\n').filter(Boolean));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  // 'close', not 'exit': its last lines are read by then.
  const exited = new Promise<number | string>((resolve) => child.once('close', (code, sig) => resolve(code ?? sig ?? -1)));
  return {
    lines,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Waits until a printed line matches `re` (resolves with it) — or the process exits or `timeoutMs` passes (rejects with its output). */
export async function waitForLine(p: ProxyProcess, re: RegExp, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: number | string | undefined;
  void p.exited.then((c) => { exitedWith = c; });
  for (;;) {
    const hit = p.lines.find((l) => re.test(l));
    if (hit) return hit;
    if (exitedWith !== undefined) throw new Error(`cloud-sql-proxy exited (${exitedWith}) before printing ${re}:\n${p.lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`cloud-sql-proxy printed no ${re} within ${timeoutMs} ms:\n${p.lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
