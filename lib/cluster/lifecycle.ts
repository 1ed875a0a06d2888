// Bringing the test cluster up and down: every process registered in the state dir's run/
// registry (as lib/processes.ts does for the local target), a failed `up` stopped again with the
// failing component's log, and a `down` that leaves no process, mount, chain or namespace.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.ts';
import { tail, UserError } from '../errors.ts';
import { isPortFree } from '../ports.ts';
import { isAlive, listProcesses, registerProcess, stopProcess, stopTracked, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { applyAddons, kubectl } from './addons.ts';
import { ensureFrontProxyPki } from './aggregation.ts';
import { missingBinaries } from './build.ts';
import { components, httpStatus, type Component } from './components.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { cgroupPids, hostLeftovers, prepareHost, recordBaseline, restoreHost } from './host.ts';
import { containerdHasImage, ctr, ensureBaseImage, ensurePauseImage, loadImage } from './images.ts';
import { apiServerUrl, ensurePki, writeKubeconfigs } from './pki.ts';
import { kedaMissing, kedaStatusLine, removeKedaWorkloads, startKeda } from './keda.ts';
import { metricsServerMissing, metricsServerStatusLine, removeMetricsServerWorkloads, startMetricsServer } from './metrics-server.ts';
import { startTraefik, TRAEFIK_PORTS, TRAEFIK_PROCESS, traefikMissing } from './traefik.ts';

/** The process registry lives in the cluster's own state dir (lib/processes.ts keys it by stateDir). */
const registry = (cc: ClusterConfig) => ({ stateDir: cc.dir }) as Pick<Config, 'stateDir'> as Config;
const marker = (cc: ClusterConfig) => `${cc.dir}/`;

export type Log = (line: string) => void;

const COMMANDS = ['unshare', 'mount', 'containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'dockerd', 'etcd', 'ip', 'iptables', 'iptables-save', 'ip6tables-save', 'ipset', 'openssl', 'kubectl', 'debootstrap', 'gcc', 'tar', 'conntrack'];

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && fs.existsSync(path.join(d, cmd)));
}

/** What this machine lacks to run the cluster; empty when it can. */
export function missingPrerequisites(cc: ClusterConfig): string[] {
  const out: string[] = [];
  if (process.getuid?.() !== 0) out.push('root (containerd, the kubelet and iptables need it)');
  const cmds = COMMANDS.filter((c) => !onPath(c));
  if (cmds.length) out.push(`commands: ${cmds.join(', ')}`);
  if (!fs.existsSync('/usr/lib/cni/bridge')) out.push('CNI plugins in /usr/lib/cni (containernetworking-plugins)');
  if (!fs.existsSync('/bin/busybox')) out.push('/bin/busybox (busybox-static, for the test image)');
  const bins = missingBinaries(cc);
  if (bins.length) out.push(`binaries in ${cc.binDir}: ${bins.join(', ')} (npx tsx tasks/cluster.ts build)`);
  if (cc.addons.includes('keda')) out.push(...kedaMissing(cc));
  if (cc.addons.includes('traefik')) out.push(...traefikMissing(cc));
  if (cc.addons.includes('metrics-server')) out.push(...metricsServerMissing(cc));
  return out;
}

const OWN_PROGRAMS = /^(containerd|containerd-shim.*|ctr|runc|dockerd|docker-proxy|etcd|kube-.*|kubelet|coredns|traefik)$/;

function strays(cc: ClusterConfig, known: readonly ProcessEntry[]): ProcessEntry[] {
  const out: ProcessEntry[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid || known.some((k) => k.pid === Number(d))) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
      // Only the cluster's own programs (and containerd's shims): never, say, a `tail -f` of a log.
      if (cmdline.includes(marker(cc)) && OWN_PROGRAMS.test(path.basename(cmdline.split('\0')[0] ?? ''))) {
        out.push({ name: `stray-${d}`, pid: Number(d), marker: marker(cc), logFile: '', startedAt: '', stopWith: 'signal' });
      }
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Resident memory of the cluster's processes (components, shims, containers), in MiB. */
export function clusterRssMiB(cc: ClusterConfig): number {
  const pids = new Set([...listProcesses(registry(cc)).map((e) => e.pid), ...strays(cc, []).map((e) => e.pid), ...cgroupPids(cc)]);
  let kb = 0;
  for (const pid of pids) {
    try {
      kb += Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      /* gone */
    }
  }
  return Math.round(kb / 1024);
}

async function nodeReady(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'node', 'localhost', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

/** Why the cluster counts as up (every component alive, API ready, node Ready), or false. */
export async function clusterUp(runner: Runner, cc: ClusterConfig): Promise<string | false> {
  const entries = listProcesses(registry(cc));
  const names = components(cc).map((c) => c.name);
  if (!names.every((n) => entries.some((e) => e.name === n && isAlive(e)))) return false;
  const p = clusterPaths(cc);
  const pki = (f: string) => path.join(p.pki, f);
  if ((await httpStatus(`${apiServerUrl(cc)}/readyz`, { ca: pki('ca.crt'), cert: pki('admin.crt'), key: pki('admin.key') })) !== 200) return false;
  if (!(await nodeReady(runner, cc))) return false;
  return `${names.length} processes running, API ready, node Ready`;
}

export async function startComponent(runner: Runner, cc: ClusterConfig, c: Component, log: Log): Promise<void> {
  c.prepare?.();
  const logFile = path.join(clusterPaths(cc).logs, `${c.name}.log`);
  fs.rmSync(logFile, { force: true });
  const pid = await runner.spawnBackground({ argv: c.argv, logFile });
  const entry: ProcessEntry = { name: c.name, pid, marker: marker(cc), logFile, startedAt: new Date().toISOString(), stopWith: 'signal' };
  registerProcess(registry(cc), entry);
  if (!changesApplied(runner)) return;
  const started = Date.now();
  let died = false;
  const ready = await waitFor(async () => {
    if (!isAlive(entry)) {
      died = true;
      return true;
    }
    return c.ready(runner);
  }, c.readyTimeoutMs, 250);
  const log_ = fs.existsSync(logFile) ? tail(fs.readFileSync(logFile, 'utf8'), 25) : '(no log)';
  if (died) throw new UserError(`${c.name} exited during start-up`, `see ${logFile}`, log_);
  if (!ready) throw new UserError(`${c.name} did not become ready within ${c.readyTimeoutMs / 1000} s`, `see ${logFile}`, log_);
  log(`${c.name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${pid})`);
}

async function assertPortsFree(cc: ClusterConfig): Promise<void> {
  const ports: [string, number][] = [...Object.entries(cc.ports), ...(cc.addons.includes('traefik') ? Object.entries(TRAEFIK_PORTS).map(([n, p]) => [`traefik ${n}`, p] as [string, number]) : [])];
  for (const [name, port] of ports) {
    if (!(await isPortFree(port))) {
      throw new UserError(`port ${port} on 127.0.0.1 (${name}) is in use`, 'stop what holds it (another cluster?) — `ss -ltnp` shows the process');
    }
  }
}

export interface UpResult {
  alreadyUp: boolean;
  lines: string[];
  seconds: number;
}

export interface UpOptions {
  /** Work of the caller's run beside the add-ons' start-up, once the node is Ready and only when this
   * call brings the cluster up (e.g. loading the caller's images into containerd while KEDA's pods
   * start); up waits for it, and a failure of it fails up like an add-on's. */
  alongside?: () => Promise<void>;
}

/** Brings the cluster up, or says it is up. On failure everything it started is stopped again. */
export async function clusterUpCmd(runner: Runner, cc: ClusterConfig, log: Log = () => {}, opts: UpOptions = {}): Promise<UpResult> {
  const t0 = Date.now();
  const already = await clusterUp(runner, cc);
  if (already) {
    const lines = [`already up: ${already}`];
    lines.push(...(await startAddons(runner, cc, log)));
    return { alreadyUp: true, lines, seconds: (Date.now() - t0) / 1000 };
  }
  const missing = missingPrerequisites(cc);
  if (missing.length) throw new UserError(`the test cluster cannot start here; missing: ${missing.join('; ')}`, 'bash .ci/install-cluster (as root)');
  const lines: string[] = [];
  if (listProcesses(registry(cc)).length || strays(cc, []).length) {
    log('a previous run left parts of the cluster behind: stopping them first');
    lines.push(...(await clusterDown(runner, cc, { purge: false }, log)));
  }
  await assertPortsFree(cc);
  try {
    ensureDir(cc.dir);
    for (const d of [clusterPaths(cc).logs]) ensureDir(d);
    await recordBaseline(runner, cc);
    await ensurePki(runner, cc);
    await ensureFrontProxyPki(runner, cc);
    writeKubeconfigs(cc);
    await prepareHost(runner, cc);
    for (const c of components(cc)) {
      await startComponent(runner, cc, c, log);
      if (c.name === 'dockerd') {
        lines.push(await ensurePauseImage(runner, cc));
        if (!(await containerdHasImage(runner, cc, cc.pauseImage))) await loadImage(runner, cc, cc.pauseImage);
        lines.push(await ensureBaseImage(runner, cc));
      }
      if (c.name === 'kube-apiserver') await applyAddons(runner, cc);
    }
    if (!(await waitFor(() => nodeReady(runner, cc), 90_000, 500))) {
      throw new UserError('node "localhost" did not become Ready within 90 s', `see ${path.join(clusterPaths(cc).logs, 'kubelet.log')}`);
    }
    lines.push(...(await startAddons(runner, cc, log, opts.alongside)));
  } catch (err) {
    log(`up failed: stopping what it started`);
    await clusterDown(runner, cc, { purge: false }, log).catch(() => []);
    throw err;
  }
  const seconds = (Date.now() - t0) / 1000;
  lines.push(`up in ${seconds.toFixed(1)} s; ${clusterRssMiB(cc)} MiB resident; export KUBECONFIG=${clusterPaths(cc).kubeconfig}`);
  return { alreadyUp: false, lines, seconds };
}

/** The configured add-ons (CLUSTER_ADDONS): KEDA and metrics-server as pods, Traefik a host process
 * of the cluster. Side by side — each has its own images and objects, and most of an add-on's start
 * is waiting for its pods — with the caller's `alongside` work. All of them are waited for, so a
 * failure never leaves one still starting while up stops the cluster; then the first failure is thrown. */
async function startAddons(runner: Runner, cc: ClusterConfig, log: Log, alongside?: () => Promise<void>): Promise<string[]> {
  const starts: Promise<string | undefined>[] = [];
  if (cc.addons.includes('keda')) starts.push(startKeda(runner, cc, log));
  if (cc.addons.includes('traefik')) starts.push(startTraefik(runner, cc, (c) => startComponent(runner, cc, c, log), log));
  if (cc.addons.includes('metrics-server')) starts.push(startMetricsServer(runner, cc, log));
  if (alongside) starts.push(alongside().then(() => undefined));
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.flatMap((s) => (s.status === 'fulfilled' && s.value !== undefined ? [s.value] : []));
}

/** Stops everything (pods first, through the kubelet, so their sandboxes and namespaces go
 * cleanly), then takes back the host changes; --purge also deletes the state dir. */
export async function clusterDown(runner: Runner, cc: ClusterConfig, opts: { purge: boolean }, log: Log = () => {}): Promise<string[]> {
  const done: string[] = [];
  const entries = listProcesses(registry(cc));
  const byName = (n: string) => entries.find((e) => e.name === n);
  const stop = async (names: string[], graceMs: number) => {
    await Promise.all(
      names.map(async (n) => {
        const e = byName(n);
        if (!e) return;
        done.push(`${n}: ${await stopProcess(e, graceMs)}`);
        unregisterProcess(registry(cc), n, e.pid);
      }),
    );
  };
  const alive = (n: string) => !!byName(n) && isAlive(byName(n)!);
  // KEDA's and metrics-server's pods go with the others below; their Deployments first, while the
  // API server runs, so that an up without them does not bring them back.
  if (alive('kube-apiserver')) {
    await removeKedaWorkloads(runner, cc);
    await removeMetricsServerWorkloads(runner, cc);
  }
  await stop([TRAEFIK_PROCESS, 'kube-router', 'coredns', 'kube-proxy', 'kube-controller-manager', 'kube-scheduler'], 10_000);
  const tasks = async () => {
    const r = await runner.run({ argv: ctr(cc, 'tasks', 'ls', '-q'), nothrow: true, quiet: true });
    return r.code === 0 ? r.stdout.split('\n').filter(Boolean) : [];
  };
  if (alive('kubelet') && alive('kube-apiserver')) {
    log('deleting all pods through the kubelet');
    await runner.run({ argv: kubectl(cc, 'delete', 'pods', '--all', '--all-namespaces', '--grace-period=1', '--wait=false'), mutates: true, nothrow: true, quiet: true, timeoutMs: 30_000 });
    if (!(await waitFor(async () => (await tasks()).length === 0, 60_000, 500))) log('some containers outlived the kubelet; killing them');
  }
  await stop(['kubelet'], 15_000);
  if (alive('containerd')) {
    for (const id of await tasks()) await runner.run({ argv: ctr(cc, 'tasks', 'kill', '-s', 'SIGKILL', id), mutates: true, nothrow: true, quiet: true });
    await waitFor(async () => (await tasks()).length === 0, 10_000, 250);
  }
  await stop(['kube-apiserver', 'etcd', 'dockerd'], 20_000);
  await stop(['containerd'], 10_000);
  done.push(...(await stopTracked(registry(cc), 5_000)));
  const left = strays(cc, []);
  for (const e of left) await stopProcess(e, 5_000);
  if (left.length) done.push(`stopped ${left.length} leftover process(es) of ${cc.dir} (container shims)`);
  if (fs.existsSync(cc.dir)) done.push(...(await restoreHost(runner, cc)));
  if (opts.purge && fs.existsSync(cc.dir)) {
    const still = await hostLeftovers(runner, cc);
    const mounts = still.filter((s) => s.startsWith('mount '));
    if (mounts.length) throw new UserError(`not purging ${cc.dir}: still mounted: ${mounts.join(', ')}`, 'unmount them, then run down --purge again');
    fs.rmSync(cc.dir, { recursive: true, force: true });
    done.push(`purged ${cc.dir}`);
  }
  return done;
}

export interface StatusReport {
  up: boolean;
  lines: string[];
}

export async function clusterStatus(runner: Runner, cc: ClusterConfig): Promise<StatusReport> {
  const entries = listProcesses(registry(cc));
  const addonProcesses = cc.addons.includes('traefik') ? [TRAEFIK_PROCESS] : [];
  const lines = [...components(cc).map((c) => c.name), ...addonProcesses].map((name) => {
    const e = entries.find((x) => x.name === name);
    return `${name.padEnd(24)} ${e ? (isAlive(e) ? `running (pid ${e.pid})` : `dead (pid ${e.pid}, log ${e.logFile})`) : 'stopped'}`;
  });
  const up = await clusterUp(runner, cc);
  if (up && cc.addons.includes('keda')) lines.push(await kedaStatusLine(runner, cc));
  if (up && cc.addons.includes('metrics-server')) lines.push(await metricsServerStatusLine(runner, cc));
  lines.push(up ? `cluster: up — ${up}; ${clusterRssMiB(cc)} MiB resident` : 'cluster: not up');
  if (!up && fs.existsSync(cc.dir)) {
    const left = await hostLeftovers(runner, cc);
    const s = strays(cc, entries);
    if (left.length || s.length) lines.push(`left on the host: ${[...left, ...s.map((e) => `process ${e.pid}`)].join(', ')}`);
  }
  return { up: !!up, lines };
}
