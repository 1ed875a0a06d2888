// What the cluster changes on the host outside its state dir — the pods' bridge, a fence in
// iptables, two sysctls, cgroups, network namespaces — and how `down` takes all of it back:
// everything is compared with a baseline recorded before the first `up`, so only what the
// cluster (kubelet, kube-proxy, kube-router, containerd) added is removed.
import fs from 'node:fs';
import path from 'node:path';
import type { Runner } from '../runner.ts';
import { readJson } from '../state.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';

const TABLES = ['filter', 'nat', 'mangle', 'raw'] as const;
const FAMILIES = ['iptables', 'ip6tables'] as const;
export const FENCE_CHAIN = 'DIGDAG-HA-CLUSTER-FENCE';
/** Drops what arrives for the bridge address (API server, CoreDNS) on any other interface. */
export const INPUT_FENCE_CHAIN = 'DIGDAG-HA-CLUSTER-IN-FENCE';
/** Fixed paths the kubelet, containerd's CNI cache, shims and dockerd write to whatever their
 * configuration; removed by `down` unless they were there before. */
const HOST_PATHS = ['/var/log/containers', '/var/lib/kubelet', '/var/lib/cni', '/run/containerd', '/etc/docker/key.json', '/run/docker'];
const SYSCTLS = ['net/ipv4/ip_forward', 'net/bridge/bridge-nf-call-iptables', 'net/bridge/bridge-nf-call-ip6tables'];

interface Baseline {
  chains: Record<string, string[]>;
  ipsets: string[];
  netns: string[];
  sysctls: Record<string, string>;
  paths?: string[];
}

const readSysctl = (k: string) => {
  try {
    return fs.readFileSync(`/proc/sys/${k}`, 'utf8').trim();
  } catch {
    return undefined;
  }
};
const writeSysctl = (k: string, v: string) => fs.writeFileSync(`/proc/sys/${k}`, `${v}\n`);

async function chainsOf(runner: Runner, family: string, table: string): Promise<{ chains: string[]; rules: string[] }> {
  const r = await runner.run({ argv: [`${family}-save`, '-t', table], nothrow: true, quiet: true });
  const lines = r.code === 0 ? r.stdout.split('\n') : [];
  return {
    chains: lines.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]!),
    rules: lines.filter((l) => l.startsWith('-A ')),
  };
}

async function ipsets(runner: Runner): Promise<string[]> {
  const r = await runner.run({ argv: ['ipset', 'list', '-n'], nothrow: true, quiet: true }).catch(() => ({ code: 1, stdout: '' }));
  return r.code === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

const listNetns = () => (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []);

/** Records the host's state once (a crashed run's baseline is kept, not overwritten). */
export async function recordBaseline(runner: Runner, cc: ClusterConfig): Promise<void> {
  const file = clusterPaths(cc).baseline;
  if (fs.existsSync(file)) return;
  const chains: Record<string, string[]> = {};
  for (const fam of FAMILIES) for (const t of TABLES) chains[`${fam}/${t}`] = (await chainsOf(runner, fam, t)).chains;
  const sysctls: Record<string, string> = {};
  for (const k of SYSCTLS) {
    const v = readSysctl(k);
    if (v !== undefined) sysctls[k] = v;
  }
  const b: Baseline = { chains, ipsets: await ipsets(runner), netns: listNetns(), sysctls, paths: HOST_PATHS.filter((p) => fs.existsSync(p)) };
  fs.writeFileSync(file, JSON.stringify(b, null, 2) + '\n');
}

const cgroupMounts = () =>
  fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2')
    .map((f) => f[1]!);

/** Cgroups the cluster's pods (kubelet) and image builds (dockerd) live in. */
export const cgroupRoots = (cc: ClusterConfig) => [cc.cgroupRoot, `${cc.cgroupRoot}-docker`];

/** The pods' bridge (the node's address), the fence, sysctls, and the kubelet's cgroup root. */
export async function prepareHost(runner: Runner, cc: ClusterConfig): Promise<void> {
  const { bridge, bridgeIp, podCidr, clusterCidr } = cc.net;
  const prefix = podCidr.split('/')[1];
  if ((await runner.run({ argv: ['ip', 'link', 'show', bridge], nothrow: true, quiet: true })).code !== 0) {
    await runner.run({ argv: ['ip', 'link', 'add', bridge, 'type', 'bridge'], mutates: true });
  }
  await runner.run({ argv: ['ip', 'addr', 'replace', `${bridgeIp}/${prefix}`, 'dev', bridge], mutates: true });
  await runner.run({ argv: ['ip', 'link', 'set', bridge, 'up'], mutates: true });
  // Bridged pod-to-pod traffic must pass iptables, or neither Services nor NetworkPolicies apply.
  writeSysctl('net/bridge/bridge-nf-call-iptables', '1');
  writeSysctl('net/bridge/bridge-nf-call-ip6tables', '1');
  // Service traffic is routed through the bridge's own address, so forwarding must be on (the
  // CNI bridge plugin turns it on anyway). The fence makes that harmless: nothing from a pod
  // leaves through another interface and nothing from outside is forwarded to a pod. There is
  // no masquerade, so pods could not get replies from outside even without the fence.
  writeSysctl('net/ipv4/ip_forward', '1');
  // In the mangle table, which runs before filter: the policy enforcer puts its own jump first
  // in filter FORWARD and ACCEPTs there, which must not bypass the fence.
  const ipt = (...a: string[]) => runner.run({ argv: ['iptables', '-w', '-t', 'mangle', ...a], mutates: true, quiet: true });
  if ((await runner.run({ argv: ['iptables', '-w', '-t', 'mangle', '-S', FENCE_CHAIN], nothrow: true, quiet: true })).code !== 0) await ipt('-N', FENCE_CHAIN);
  await ipt('-F', FENCE_CHAIN);
  await ipt('-A', FENCE_CHAIN, '-i', bridge, '!', '-o', bridge, '-j', 'DROP', '-m', 'comment', '--comment', 'digdag-ha test cluster: pods reach only pods, the node and services');
  await ipt('-A', FENCE_CHAIN, '!', '-i', bridge, '-o', bridge, '-j', 'DROP');
  await ipt('-A', FENCE_CHAIN, '-s', clusterCidr, '!', '-o', bridge, '-j', 'DROP');
  await ipt('-A', FENCE_CHAIN, '-d', clusterCidr, '!', '-o', bridge, '-j', 'DROP');
  // Only DROPs and falls through otherwise, so the NetworkPolicy enforcer's verdicts still apply.
  if ((await runner.run({ argv: ['iptables', '-w', '-t', 'mangle', '-C', 'FORWARD', '-j', FENCE_CHAIN], nothrow: true, quiet: true })).code !== 0) {
    await ipt('-I', 'FORWARD', '1', '-j', FENCE_CHAIN);
  }
  // The API server and CoreDNS listen on the bridge address: only the machine itself (lo) and
  // its pods (the bridge) may talk to it, even if another host routed that address here.
  if ((await runner.run({ argv: ['iptables', '-w', '-t', 'mangle', '-S', INPUT_FENCE_CHAIN], nothrow: true, quiet: true })).code !== 0) await ipt('-N', INPUT_FENCE_CHAIN);
  await ipt('-F', INPUT_FENCE_CHAIN);
  await ipt('-A', INPUT_FENCE_CHAIN, '-i', 'lo', '-j', 'RETURN');
  await ipt('-A', INPUT_FENCE_CHAIN, '-i', bridge, '-j', 'RETURN');
  await ipt('-A', INPUT_FENCE_CHAIN, '-d', bridgeIp, '-j', 'DROP', '-m', 'comment', '--comment', 'digdag-ha test cluster: the node address only from the machine and its pods');
  if ((await runner.run({ argv: ['iptables', '-w', '-t', 'mangle', '-C', 'INPUT', '-j', INPUT_FENCE_CHAIN], nothrow: true, quiet: true })).code !== 0) {
    await ipt('-I', 'INPUT', '1', '-j', INPUT_FENCE_CHAIN);
  }
  for (const mount of cgroupMounts()) {
    const dir = path.join(mount, cc.cgroupRoot);
    fs.mkdirSync(dir, { recursive: true });
    // A new cpuset cgroup starts with no CPUs and no memory nodes; inherit the parent's.
    for (const f of ['cpuset.cpus', 'cpuset.mems']) {
      if (fs.existsSync(path.join(mount, f)) && !fs.readFileSync(path.join(dir, f), 'utf8').trim()) {
        fs.writeFileSync(path.join(dir, f), fs.readFileSync(path.join(mount, f), 'utf8'));
      }
    }
  }
}

/** Splits an iptables-save rule line into arguments (double quotes group, as iptables-save writes them). */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m; (m = re.exec(line)); ) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

/** Mount points below the state dir (and the cluster's network namespaces), deepest first. */
export function leftoverMounts(cc: ClusterConfig, extra: readonly string[] = []): string[] {
  const prefixes = [`${cc.dir}/`, ...extra];
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m && prefixes.some((p) => m === p.replace(/\/$/, '') || m.startsWith(p)))
    .sort((a, b) => b.length - a.length);
}

/** PIDs still inside the cluster's cgroups (containers whose shim died, for instance). */
export function cgroupPids(cc: ClusterConfig): number[] {
  const pids = new Set<number>();
  const walk = (dir: string) => {
    if (!fs.existsSync(dir)) return;
    try {
      for (const p of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (p) pids.add(Number(p));
    } catch {
      /* not a cgroup dir */
    }
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  for (const m of cgroupMounts()) for (const r of cgroupRoots(cc)) walk(path.join(m, r));
  return [...pids];
}

function removeCgroups(cc: ClusterConfig): string[] {
  const left: string[] = [];
  const rmTree = (dir: string) => {
    if (!fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmTree(path.join(dir, e.name));
    try {
      fs.rmdirSync(dir);
    } catch {
      left.push(dir);
    }
  };
  for (const m of cgroupMounts()) for (const r of cgroupRoots(cc)) rmTree(path.join(m, r));
  return left;
}

/** Takes back every host change (call after all processes are stopped); returns what it did. */
export async function restoreHost(runner: Runner, cc: ClusterConfig): Promise<string[]> {
  const done: string[] = [];
  const baseline = readJson<Baseline>(clusterPaths(cc).baseline);
  for (const pid of cgroupPids(cc)) {
    try {
      process.kill(pid, 'SIGKILL');
      done.push(`killed leftover container process ${pid}`);
    } catch {
      /* gone */
    }
  }
  // Network namespaces the CNI made for pods the kubelet could not tear down itself.
  for (const ns of listNetns()) {
    if (baseline && baseline.netns.includes(ns)) continue;
    if (!ns.startsWith('cni-')) continue;
    await runner.run({ argv: ['ip', 'netns', 'delete', ns], mutates: true, nothrow: true, quiet: true });
    done.push(`deleted network namespace ${ns}`);
  }
  const mounts = leftoverMounts(cc);
  for (const m of mounts) {
    const r = await runner.run({ argv: ['umount', m], mutates: true, nothrow: true, quiet: true });
    if (r.code !== 0) await runner.run({ argv: ['umount', '-l', m], mutates: true, nothrow: true, quiet: true });
  }
  if (mounts.length) done.push(`unmounted ${mounts.length} leftover mount(s): ${mounts.map((m) => path.relative(cc.dir, m)).join(', ')}`);
  if (baseline) {
    for (const fam of FAMILIES) {
      for (const t of TABLES) {
        const keep = new Set(baseline.chains[`${fam}/${t}`] ?? []);
        const now = await chainsOf(runner, fam, t);
        const gone = now.chains.filter((c) => !keep.has(c));
        if (!gone.length) continue;
        const goneSet = new Set(gone);
        // Rules in kept chains that jump to a chain being removed go first.
        for (const rule of now.rules) {
          const args = splitRule(rule);
          const chain = args[1]!;
          const j = args.findIndex((a) => a === '-j' || a === '-g');
          if (keep.has(chain) && j > 0 && goneSet.has(args[j + 1]!)) {
            await runner.run({ argv: [fam, '-w', '-t', t, '-D', ...args.slice(1)], mutates: true, nothrow: true, quiet: true });
          }
        }
        for (const c of gone) await runner.run({ argv: [fam, '-w', '-t', t, '-F', c], mutates: true, nothrow: true, quiet: true });
        for (const c of gone) await runner.run({ argv: [fam, '-w', '-t', t, '-X', c], mutates: true, nothrow: true, quiet: true });
        done.push(`${fam} ${t}: removed ${gone.length} chain(s)`);
      }
    }
    const sets = (await ipsets(runner)).filter((s) => !baseline.ipsets.includes(s));
    for (const s of sets) await runner.run({ argv: ['ipset', 'destroy', s], mutates: true, nothrow: true, quiet: true });
    if (sets.length) done.push(`destroyed ${sets.length} ipset(s)`);
    for (const [k, v] of Object.entries(baseline.sysctls)) if (readSysctl(k) !== v) writeSysctl(k, v);
  }
  // The kubelet links every container log into /var/log/containers, whatever podLogsDir says.
  const links = containerLogLinks(cc);
  for (const l of links) fs.rmSync(l, { force: true });
  if (links.length) done.push(`removed ${links.length} container log link(s) from /var/log/containers`);
  for (const p of newHostPaths(baseline)) {
    fs.rmSync(p, { recursive: true, force: true });
    done.push(`removed ${p}`);
  }
  if ((await runner.run({ argv: ['ip', 'link', 'show', cc.net.bridge], nothrow: true, quiet: true })).code === 0) {
    await runner.run({ argv: ['ip', 'link', 'delete', cc.net.bridge], mutates: true, nothrow: true });
    done.push(`deleted bridge ${cc.net.bridge}`);
  }
  const left = removeCgroups(cc);
  if (left.length) done.push(`cgroups still busy: ${left.slice(0, 3).join(', ')}`);
  return done;
}

function containerLogLinks(cc: ClusterConfig): string[] {
  const dir = '/var/log/containers';
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((e) => path.join(dir, e))
    .filter((l) => {
      try {
        return fs.readlinkSync(l).startsWith(`${cc.dir}/`);
      } catch {
        return false;
      }
    });
}

const newHostPaths = (baseline: Baseline | undefined) => (baseline?.paths ? HOST_PATHS.filter((p) => !baseline.paths!.includes(p) && fs.existsSync(p)) : []);

/** Is anything of the cluster still on the host? (For status and the test's final check.) */
export async function hostLeftovers(runner: Runner, cc: ClusterConfig): Promise<string[]> {
  const out: string[] = [];
  for (const m of leftoverMounts(cc)) out.push(`mount ${m}`);
  for (const p of cgroupPids(cc)) out.push(`process ${p} in the cluster's cgroups`);
  if ((await runner.run({ argv: ['ip', 'link', 'show', cc.net.bridge], nothrow: true, quiet: true })).code === 0) out.push(`bridge ${cc.net.bridge}`);
  for (const chain of [FENCE_CHAIN, INPUT_FENCE_CHAIN]) {
    if ((await runner.run({ argv: ['iptables', '-w', '-t', 'mangle', '-S', chain], nothrow: true, quiet: true })).code === 0) out.push(`iptables chain ${chain}`);
  }
  const baseline = readJson<Baseline>(clusterPaths(cc).baseline);
  if (baseline) {
    for (const fam of FAMILIES) {
      for (const t of TABLES) {
        const keep = new Set(baseline.chains[`${fam}/${t}`] ?? []);
        for (const c of (await chainsOf(runner, fam, t)).chains) if (!keep.has(c)) out.push(`${fam} ${t} chain ${c}`);
      }
    }
    for (const ns of listNetns()) if (ns.startsWith('cni-') && !baseline.netns.includes(ns)) out.push(`network namespace ${ns}`);
    for (const p of newHostPaths(baseline)) out.push(`path ${p}`);
  }
  for (const l of containerLogLinks(cc)) out.push(`log link ${l}`);
  return out;
}
