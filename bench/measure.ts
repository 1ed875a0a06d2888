// Benchmark arithmetic: percentiles, the tasks' own start/end records, CPU time from /proc/stat
// and rates from cumulative counters. Pure functions (and readMachineCpu, the one read of /proc/stat); bench/run.ts and bench/cluster.ts feed them.
import fs from 'node:fs';

/** Nearest-rank percentile (p in 0..100); NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The middle value (mean of the two middle ones for an even count); NaN for no values. */
export function median(values: readonly number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface TaskEvent {
  /** date +%s%N on the machine that ran the task. */
  ns: bigint;
  attempt: string;
  task: string;
  kind: 'start' | 'end';
}

/** Lines "<ns> <attempt id> <task name> start|end" that the bench's sh> tasks append. */
export function parseEvents(text: string): TaskEvent[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter((p) => p.length === 4 && /^\d+$/.test(p[0]!) && (p[3] === 'start' || p[3] === 'end'))
    .map(([ns, attempt, task, kind]) => ({ ns: BigInt(ns!), attempt: attempt!, task: task!, kind: kind as TaskEvent['kind'] }));
}

export const eventMs = (e: TaskEvent) => Number(e.ns / 1_000_000n);

export interface Span {
  starts: number;
  ends: number;
  /** Epoch ms of the first task start and of the last task end. */
  firstStartMs: number;
  lastEndMs: number;
}

/** When an attempt's tasks (or all tasks, without an id) really started and ended. */
export function spanOf(events: readonly TaskEvent[], attempt?: string): Span {
  const mine = attempt === undefined ? events : events.filter((e) => e.attempt === attempt);
  const starts = mine.filter((e) => e.kind === 'start').map(eventMs);
  const ends = mine.filter((e) => e.kind === 'end').map(eventMs);
  return { starts: starts.length, ends: ends.length, firstStartMs: Math.min(...starts), lastEndMs: Math.max(...ends) };
}

/** Each task's start and end (seconds after t0Ms, to the millisecond), ordered by start. */
export function taskSpans(events: readonly TaskEvent[], attempt: string, t0Ms: number): [number, number][] {
  const at = new Map<string, { start?: number; end?: number }>();
  for (const e of events) {
    if (e.attempt !== attempt) continue;
    const t = at.get(e.task) ?? {};
    t[e.kind] = (eventMs(e) - t0Ms) / 1000;
    at.set(e.task, t);
  }
  return [...at.values()].filter((t): t is { start: number; end: number } => t.start !== undefined && t.end !== undefined).map((t): [number, number] => [t.start, t.end]).sort((a, b) => a[0] - b[0]);
}

export interface CpuTimes {
  busy: number;
  total: number;
}

/** The machine's CPU times now (this machine's /proc/stat). */
export const readMachineCpu = (): CpuTimes => parseCpuStat(fs.readFileSync('/proc/stat', 'utf8'));

/** The machine-wide "cpu" line of /proc/stat: busy = everything but idle and iowait. */
export function parseCpuStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => /^cpu\s/.test(l));
  if (!line) throw new Error('no cpu line in /proc/stat');
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user/nice)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - (f[4] ?? 0), total };
}

/** Share of all cores' time that was busy between two readings (0..1). */
export function busyFraction(a: CpuTimes, b: CpuTimes): number {
  const total = b.total - a.total;
  return total > 0 ? (b.busy - a.busy) / total : NaN;
}

export interface ProcTimes {
  pid: number;
  ppid: number;
  pgid: number;
  /** utime + stime + cutime + cstime: its own CPU time and that of children it has reaped (clock ticks). */
  ticks: number;
}

/** /proc/<pid>/stat: the command may hold spaces and parentheses, so fields count from the last ')'. */
export function parseProcStat(text: string): ProcTimes {
  const close = text.lastIndexOf(')');
  const f = text.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state): pgrp is field 5, utime..cstime are fields 14..17.
  return { pid: Number(text.slice(0, text.indexOf(' '))), ppid: Number(f[1]), pgid: Number(f[2]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

/**
 * CPU ticks per registered process: everything in its process group (a Digdag JVM with its sh>
 * tasks), and its direct children that lead groups of their own — PostgreSQL's backends each call
 * setsid(), so the postmaster's group alone misses them.
 */
export function ticksPerEntry(procs: readonly ProcTimes[], entries: readonly { name: string; pid: number }[]): Record<string, number> {
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  const groupOf = new Map<number, string>();
  const parentOf = new Map<number, string>();
  for (const e of entries) {
    const p = byPid.get(e.pid);
    if (p) groupOf.set(p.pgid, e.name);
    parentOf.set(e.pid, e.name);
  }
  const out: Record<string, number> = {};
  for (const p of procs) {
    const name = groupOf.get(p.pgid) ?? parentOf.get(p.ppid);
    if (name) out[name] = (out[name] ?? 0) + p.ticks;
  }
  return out;
}

/** Per-second rate of a cumulative counter, minus what the measurement itself added. */
export function ratePerSecond(before: number, after: number, seconds: number, ownIncrements = 0): number {
  return Math.max(0, after - before - ownIncrements) / seconds;
}

/** One process's CPU time by its command name (/proc/<pid>/stat's comm). */
export interface CommandTimes {
  comm: string;
  ticks: number;
}

/** /proc/<pid>/stat's command name: between the first '(' and the last ')'. */
export const commOf = (text: string): string => text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));

/** Shares of all cores' time between two readings: busy, and of it the processes named `java`
 * (the Digdag JVMs, with the sh> tasks they reaped) and `postgres`. A process that started
 * between the readings counts whole; one that ended in between is lost (in busy only). */
export function cpuShares(cpu0: CpuTimes, cpu1: CpuTimes, p0: ReadonlyMap<number, CommandTimes>, p1: ReadonlyMap<number, CommandTimes>): { busy: number; java: number; postgres: number } {
  const total = cpu1.total - cpu0.total;
  const of = (comm: string) => {
    let t = 0;
    for (const [pid, p] of p1) if (p.comm === comm) t += p.ticks - (p0.get(pid)?.comm === comm ? p0.get(pid)!.ticks : 0);
    return total > 0 ? t / total : NaN;
  };
  return { busy: busyFraction(cpu0, cpu1), java: of('java'), postgres: of('postgres') };
}

/** /proc/stat counts in USER_HZ, 100 per second on Linux whatever the kernel's HZ. */
export const USER_HZ = 100;

/** A pod's cgroup directory under the kubelet's cgroupfs root: pod<uid> (kubepods/<qos>/pod<uid>). */
export const podUidOfCgroup = (dirName: string): string | undefined => /^pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(dirName)?.[1];

/**
 * Shares of all cores' time per group of pods (their role) between two readings of each pod
 * cgroup's cpuacct.usage (ns, by pod uid): everything in the pod, its JVM and the sh> tasks it ran,
 * exited ones included. A pod created in between counts whole; one deleted in between is lost.
 * Pods without a group (another namespace's) count as `other pods`. `coreSeconds`: all cores' time between the readings.
 */
export function podCpuShares(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>, groupOf: ReadonlyMap<string, string>, coreSeconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [uid, ns] of after) {
    const g = groupOf.get(uid) ?? 'other pods';
    out[g] = (out[g] ?? 0) + (ns - (before.get(uid) ?? 0)) / 1e9 / coreSeconds;
  }
  return out;
}
