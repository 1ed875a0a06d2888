// Background processes this project started (PostgreSQL, Digdag roles, port-forwards):
// registered in the state dir so teardown, tests and re-runs find and stop exactly those.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { ensureDir } from './state.ts';

export interface ProcessEntry {
  name: string;
  pid: number;
  /** A string that must appear in /proc/<pid>/cmdline, so a reused pid is never mistaken for ours. */
  marker: string;
  logFile: string;
  startedAt: string;
  role?: string;
  port?: number;
  /** Where Prometheus scrapes it (http://127.0.0.1:<metricsPort>/metrics). */
  metricsPort?: number;
  /** How teardown stops it: a signal to the process group, or a command (pg_ctl stop). */
  stopWith?: 'signal' | 'pg_ctl';
}

const dirOf = (config: Config) => path.join(config.stateDir, 'run');

export function registerProcess(config: Config, entry: ProcessEntry): void {
  ensureDir(dirOf(config));
  fs.writeFileSync(path.join(dirOf(config), `${entry.name}.json`), JSON.stringify(entry, null, 2) + '\n');
}

/** Forgets a process; with a pid, only if the registered entry is still that process (a
 * replacement started under the same name stays registered). */
export function unregisterProcess(config: Config, name: string, pid?: number): void {
  const file = path.join(dirOf(config), `${name}.json`);
  if (pid !== undefined) {
    try {
      if ((JSON.parse(fs.readFileSync(file, 'utf8')) as ProcessEntry).pid !== pid) return;
    } catch {
      return;
    }
  }
  fs.rmSync(file, { force: true });
}

/** Processes whose command line mentions the state dir but that no registry entry names: left
 * behind by a crash of this tool. Teardown stops them too. */
export function strayProcesses(config: Config, known: readonly ProcessEntry[]): ProcessEntry[] {
  const needle = `${config.stateDir}/props/`;
  const out: ProcessEntry[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || known.some((k) => k.pid === Number(d))) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
      const m = cmd.split('\0').find((a) => a.startsWith(needle));
      if (m) out.push({ name: `stray-${d}`, pid: Number(d), marker: m, logFile: '', startedAt: '', stopWith: 'signal' });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

export function listProcesses(config: Config): ProcessEntry[] {
  const dir = dirOf(config);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as ProcessEntry)
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function isAlive(entry: Pick<ProcessEntry, 'pid' | 'marker'>): boolean {
  if (!entry.pid) return false;
  try {
    process.kill(entry.pid, 0);
  } catch {
    return false;
  }
  try {
    for (let tries = 0; ; tries++) {
      const cmdline = fs.readFileSync(`/proc/${entry.pid}/cmdline`, 'utf8');
      const stat = fs.readFileSync(`/proc/${entry.pid}/stat`, 'utf8');
      // A zombie (state Z) is dead for our purposes.
      if (/^\d+ \(.*\) Z /.test(stat)) return false;
      // A process in the middle of an exec (a wrapper handing over to the program) shows an empty
      // command line for a moment: read again rather than call it dead (seen in CI: keda-adapter,
      // started through unshare/sh/env, "exited during start-up" while it ran on).
      if (cmdline || tries >= EXEC_REREADS) return cmdline.includes(entry.marker);
      Atomics.wait(pause, 0, 0, 1);
    }
  } catch {
    return false;
  }
}

/** How often isAlive re-reads an empty command line, 1 ms apart (a kernel thread's stays empty). */
const EXEC_REREADS = 50;
const pause = new Int32Array(new SharedArrayBuffer(4));

/** The process's state letter from /proc (R, S, D, T, Z…), or 'gone'. */
export function processState(entry: Pick<ProcessEntry, 'pid'>): string {
  try {
    return /^\d+ \(.*\) (\S) /.exec(fs.readFileSync(`/proc/${entry.pid}/stat`, 'utf8'))?.[1] ?? '?';
  } catch {
    return 'gone';
  }
}

/**
 * Whether the process is stopped by a signal (SIGSTOP: state T; t when a tracer watches it, as a
 * sandbox's supervisor may: the stop is then reported to the tracer, the process still runs nothing).
 */
export function isFrozen(entry: Pick<ProcessEntry, 'pid' | 'marker'>): boolean {
  return isAlive(entry) && /^[Tt]$/.test(processState(entry));
}

/**
 * Freezes (SIGSTOP) or resumes (SIGCONT) a process with its group (a Digdag role and its sh> tasks).
 * Bounded: the kernel applies a stop at the process's next return to user space (late when it
 * sleeps uninterruptibly on a loaded disk). The signal is sent again each round until the state
 * shows it: one from elsewhere in between (a CONT to a group the kernel finds orphaned) is undone.
 */
export async function freeze(entry: Pick<ProcessEntry, 'pid' | 'marker'>, on: boolean): Promise<void> {
  await waitFor(() => {
    if (!isAlive(entry) || isFrozen(entry) === on) return true;
    try {
      process.kill(-entry.pid, on ? 'SIGSTOP' : 'SIGCONT');
    } catch {
      /* the group is gone: the next round sees it dead */
    }
    return false;
  }, 15_000, 50);
}

/** Waits (bounded, polling) until a condition holds; returns false on timeout. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, Math.max(0, deadline - Date.now()))));
  }
}

/**
 * The work's result, or the error `expired` makes once `ms` have passed without one. The work is
 * not cancelled (a promise cannot be): its later failure is swallowed, its side effects are the
 * caller's to repair — the error should say how.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, expired: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(expired()), ms);
  });
  try {
    return await Promise.race([work, bound]);
  } finally {
    clearTimeout(timer);
    work.catch(() => {});
  }
}

/** SIGTERM to the process group, then SIGKILL after graceMs. Returns how it ended. */
export async function stopProcess(entry: ProcessEntry, graceMs: number): Promise<'not-running' | 'terminated' | 'killed'> {
  if (!isAlive(entry)) return 'not-running';
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-entry.pid, sig);
    } catch {
      try {
        process.kill(entry.pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  signal('SIGTERM');
  // A frozen process (verify-ha's SIGSTOP) only acts on the TERM once it runs again.
  signal('SIGCONT');
  if (await waitFor(() => !isAlive(entry), graceMs)) return 'terminated';
  signal('SIGKILL');
  await waitFor(() => !isAlive(entry), 5000);
  return 'killed';
}

/** Stops every process tracked for this config and forgets it: one "name: how" line each. */
export async function stopTracked(config: Config, graceMs: number): Promise<string[]> {
  const done: string[] = [];
  for (const e of listProcesses(config)) {
    done.push(`${e.name}: ${await stopProcess(e, graceMs)}`);
    unregisterProcess(config, e.name, e.pid);
  }
  return done;
}
