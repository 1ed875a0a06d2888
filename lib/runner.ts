// The one way tasks run external commands: zx underneath, secrets masked in every log line,
// dry-run for anything that changes state, and a recording runner for tests.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { $ } from 'zx';
import { CommandError } from './errors.ts';
import { backgroundEnv } from './process-env.ts';
import { mask } from './secrets.ts';

export interface Cmd {
  /** Program and arguments; never a joined shell string. */
  argv: readonly string[];
  /** Standard input: the way secrets reach a command. */
  input?: string;
  env?: Readonly<Record<string, string>>;
  cwd?: string;
  /** Changes something: in dry-run it is printed, not run. Read-only commands always run. */
  mutates?: boolean;
  /** A non-zero exit is an expected answer, returned instead of thrown. */
  nothrow?: boolean;
  timeoutMs?: number;
  /** Do not log the command line (for polling loops). */
  quiet?: boolean;
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export interface BackgroundCmd extends Cmd {
  /** Where stdout and stderr go. */
  logFile: string;
}

export interface Runner {
  readonly dryRun: boolean;
  run(cmd: Cmd): Promise<Result>;
  /** Starts a detached process and returns its pid; the caller registers it for teardown. */
  spawnBackground(cmd: BackgroundCmd): Promise<number>;
  /**
   * A change that is not a command (a file written or deleted, a process registered): made, or
   * under --dry-run printed as `[dry-run] <what>` and skipped (silently when `what` is undefined:
   * bookkeeping nobody needs to read). The effect's value, or undefined when skipped.
   */
  change<T>(what: string | undefined, effect: () => T | Promise<T>): Promise<T | undefined>;
  log(line: string): void;
}

export type LogSink = (line: string) => void;

/*
 * Outside this file nothing reads `runner.dryRun` (test/unit/dry-run-in-one-place.test.ts): a
 * change goes through `run({ mutates })`, `spawnBackground` or `change`, and what only makes
 * sense after a change really happened asks one of the helpers below.
 */

/**
 * False under --dry-run: what follows a change (waiting for it, checking it, registering the
 * process it started) has nothing to act on, so the caller stops there.
 */
export function changesApplied(runner: Runner): boolean {
  return !runner.dryRun;
}

/**
 * A wait on a change that under --dry-run was not made: true (printed as `[dry-run] <what>`)
 * when it is to be skipped, false when the caller goes on and waits.
 */
export function skippedInDryRun(runner: Runner, what: string): boolean {
  if (!runner.dryRun) return false;
  runner.log(`[dry-run] ${what}`);
  return true;
}

/** The wording of a result line: what was done, or under --dry-run what would have been. */
export function outcome(runner: Runner, done: string, wouldBe: string): string {
  return runner.dryRun ? wouldBe : done;
}

export function formatArgv(argv: readonly string[]): string {
  return mask(argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' '));
}

/** Runs commands for real (through zx), or prints the changing ones under --dry-run. */
export class ShellRunner implements Runner {
  private sink: LogSink;
  constructor(
    readonly dryRun: boolean,
    sink: LogSink = (l) => process.stderr.write(`${l}\n`),
  ) {
    this.sink = sink;
  }

  /** Where log lines go from now on; returns where they went before. */
  setSink(sink: LogSink): LogSink {
    const before = this.sink;
    this.sink = sink;
    return before;
  }

  log(line: string): void {
    this.sink(mask(line));
  }

  async run(cmd: Cmd): Promise<Result> {
    if (this.dryRun && cmd.mutates) {
      this.log(`[dry-run] ${formatArgv(cmd.argv)}`);
      return { code: 0, stdout: '', stderr: '' };
    }
    if (!cmd.quiet) this.log(`$ ${formatArgv(cmd.argv)}`);
    const p = $({
      input: cmd.input,
      cwd: cmd.cwd,
      env: { ...process.env, ...cmd.env },
      nothrow: true,
      quiet: true,
      timeout: cmd.timeoutMs,
      stdio: ['pipe', 'pipe', 'pipe'],
    })`${cmd.argv}`;
    const started = Date.now();
    const out = await p;
    // Killed by its timeout: say so, rather than leave the caller to guess from a missing exit code.
    const timedOut = cmd.timeoutMs !== undefined && out.exitCode === null && Date.now() - started >= cmd.timeoutMs;
    const stderr = timedOut ? `${out.stderr}\n(stopped: no answer within ${cmd.timeoutMs! / 1000}s)`.trim() : out.stderr;
    const result = { code: out.exitCode ?? 1, stdout: out.stdout, stderr };
    if (result.code !== 0 && !cmd.nothrow) {
      throw new CommandError(mask(formatArgv(cmd.argv)).split(' '), out.exitCode, mask(result.stdout), mask(result.stderr));
    }
    return result;
  }

  async change<T>(what: string | undefined, effect: () => T | Promise<T>): Promise<T | undefined> {
    if (!this.dryRun) return effect();
    if (what) this.log(`[dry-run] ${what}`);
    return undefined;
  }

  async spawnBackground(cmd: BackgroundCmd): Promise<number> {
    if (this.dryRun) {
      this.log(`[dry-run] ${formatArgv(cmd.argv)} > ${cmd.logFile} &`);
      return 0;
    }
    this.log(`$ ${formatArgv(cmd.argv)} > ${cmd.logFile} &`);
    fs.mkdirSync(path.dirname(cmd.logFile), { recursive: true });
    const fd = fs.openSync(cmd.logFile, 'a', 0o600);
    try {
      const [bin, ...args] = cmd.argv;
      const child = spawn(bin!, args, {
        cwd: cmd.cwd,
        // Digdag's sh> tasks inherit this: secret-bearing variables are left out (lib/process-env.ts).
        env: backgroundEnv(process.env, cmd.env),
        // Own process group, so teardown can stop the process and its children together.
        detached: true,
        stdio: ['ignore', fd, fd],
      });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('error', reject);
        child.once('spawn', () => resolve(child.pid!));
      });
      child.unref();
      return pid;
    } finally {
      fs.closeSync(fd);
    }
  }
}

export interface RecordedCall {
  argv: string[];
  input?: string;
  mutates: boolean;
  background: boolean;
}

export type Responder = (argv: readonly string[], cmd: Cmd) => Partial<Result> | undefined;

/** Records every command instead of running it; answers come from a responder. For tests. */
export class RecordingRunner implements Runner {
  readonly calls: RecordedCall[] = [];
  readonly lines: string[] = [];
  private nextPid = 40000;
  constructor(
    private respond: Responder = () => undefined,
    readonly dryRun = false,
  ) {}

  log(line: string): void {
    this.lines.push(mask(line));
  }

  async run(cmd: Cmd): Promise<Result> {
    this.calls.push({ argv: cmd.argv.map((a) => mask(a)), input: cmd.input === undefined ? undefined : mask(cmd.input), mutates: !!cmd.mutates, background: false });
    if (this.dryRun && cmd.mutates) {
      this.log(`[dry-run] ${formatArgv(cmd.argv)}`);
      return { code: 0, stdout: '', stderr: '' };
    }
    const r = { code: 0, stdout: '', stderr: '', ...this.respond(cmd.argv, cmd) };
    if (r.code !== 0 && !cmd.nothrow) throw new CommandError(cmd.argv.map((a) => mask(a)), r.code, r.stdout, r.stderr);
    return r;
  }

  /** The changes made (or, in dry-run, skipped) that were not commands, by description. */
  readonly changes: string[] = [];

  async change<T>(what: string | undefined, effect: () => T | Promise<T>): Promise<T | undefined> {
    if (what) this.changes.push(mask(what));
    if (!this.dryRun) return effect();
    if (what) this.log(`[dry-run] ${what}`);
    return undefined;
  }

  async spawnBackground(cmd: BackgroundCmd): Promise<number> {
    this.calls.push({ argv: cmd.argv.map((a) => mask(a)), mutates: true, background: true });
    return this.nextPid++;
  }

  /** The recorded command lines, one string each, for exact-sequence assertions. */
  commands(): string[] {
    return this.calls.map((c) => (c.background ? `${c.argv.join(' ')} &` : c.argv.join(' ')));
  }
}
