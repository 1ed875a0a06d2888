// soak: the chaos soak against a deployed stack (after `npx tsx tasks/all.ts`): N minutes of steady
// submissions of ha-sample/mixed while a Digdag instance or the database leader is killed every K
// seconds; prints submitted / succeeded / failed / lost attempts, the longest stall and every kill
// with its recovery, writes a JSON report, and exits non-zero unless nothing failed and nothing was
// lost. The soak itself is lib/soak.ts, written over the target.
import fs from 'node:fs';
import path from 'node:path';
import { configFromFlags, isMain, makeCtx, parseFlags } from '../lib/cli.ts';
import { describeError, UserError } from '../lib/errors.ts';
import { ShellRunner } from '../lib/runner.ts';
import { KILL_KINDS, soak, soakSummary, type KillKind, type SoakOptions } from '../lib/soak.ts';
import { targetOf } from './steps.ts';

const USAGE = `usage: npx tsx tasks/soak.ts [--target local|minikube|gke|cluster] [--set NAME=VALUE]
    [--minutes 30] [--kill-every 120] [--submit-every 3] [--kill ${KILL_KINDS.join(',')}] [--order random|cycle]
    [--seed N] [--fanout 3] [--settle 600] [--report FILE]
  kills: digdag = a random ready Digdag pod/process (SIGKILL; the local target restarts it),
         db-postgres = SIGKILL of the database leader's postmaster, db-pod = deletion of the leader's pod
         (the db kinds need the replicated in-cluster database: POSTGRES_MEMBERS >= 2)
  default kills: digdag and both db kinds where there is a replicated database, digdag otherwise
`;

export interface SoakFlags {
  options: Omit<SoakOptions, 'log' | 'kills'> & { kills?: KillKind[] };
  report?: string;
  rest: string[];
}

/** The soak's own flags, taken out before the common ones are parsed. */
export function soakFlags(argv: readonly string[]): SoakFlags {
  const rest: string[] = [];
  const num = (name: string, v: string | undefined, min: number) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new UserError(`--${name} ${v ?? ''}: expected a number >= ${min}`, USAGE.split('\n')[1]!.trim());
    return n;
  };
  const o: SoakFlags['options'] = { durationMs: 30 * 60_000, killEveryMs: 120_000, submitEveryMs: 3000, order: 'random', seed: Date.now() % 100_000, settleMs: 600_000, recoverMs: 300_000, fanout: 3 };
  let report: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') ? a.slice(2, eq > 0 ? eq : undefined) : '';
    const value = () => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
    switch (name) {
      case 'minutes': o.durationMs = num(name, value(), 0.1) * 60_000; break;
      case 'kill-every': o.killEveryMs = num(name, value(), 0) * 1000; break;
      case 'submit-every': o.submitEveryMs = num(name, value(), 0.2) * 1000; break;
      case 'seed': o.seed = num(name, value(), 0); break;
      case 'fanout': o.fanout = num(name, value(), 1); break;
      case 'settle': o.settleMs = num(name, value(), 10) * 1000; break;
      case 'report': report = value(); break;
      case 'order': {
        const v = value();
        if (v !== 'random' && v !== 'cycle') throw new UserError(`--order ${v ?? ''}: expected random or cycle`, '--order cycle kills the kinds in the order given');
        o.order = v;
        break;
      }
      case 'kill': {
        const kinds = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        const bad = kinds.filter((k) => !(KILL_KINDS as readonly string[]).includes(k));
        if (bad.length || !kinds.length) throw new UserError(`--kill ${kinds.join(',')}: unknown ${bad.join(', ') || '(none given)'}`, `choose from ${KILL_KINDS.join(', ')}`);
        o.kills = kinds as KillKind[];
        break;
      }
      default: rest.push(a);
    }
  }
  return { options: o, report, rest };
}

if (isMain(import.meta.url)) {
  try {
    const own = soakFlags(process.argv.slice(2));
    const flags = parseFlags(own.rest);
    if (flags.help) {
      process.stdout.write(USAGE);
    } else {
      const ctx = makeCtx(configFromFlags(flags), new ShellRunner(false, () => {}));
      const target = targetOf(ctx.config);
      const kills = own.options.kills ?? (target.haDatabase?.(ctx.config) ? [...KILL_KINDS] : ['digdag' as const]);
      const log = (l: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${l}\n`);
      const report = await soak(ctx, target, { ...own.options, kills, log });
      for (const line of soakSummary(report)) process.stdout.write(`${line}\n`);
      const file = own.report ?? path.join(ctx.config.stateDir, 'soak', `soak-${report.startedAt.replace(/[:.]/g, '-')}.json`);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
      process.stdout.write(`report: ${file}\n`);
      process.exitCode = report.ok ? 0 : 1;
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
