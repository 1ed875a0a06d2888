// down: stop everything the target started (role processes, port-forwards, PostgreSQL) —
// data is kept unless --purge, which also deletes the database, secrets and logs.
import fs from 'node:fs';
import { configFromFlags, isMain, makeCtx, parseFlags } from '../lib/cli.ts';
import { describeError, UserError } from '../lib/errors.ts';
import { kubeDown } from '../lib/kube.ts';
import type { Ctx } from '../lib/pipeline.ts';
import { listProcesses, stopProcess, strayProcesses, unregisterProcess } from '../lib/processes.ts';
import { ShellRunner } from '../lib/runner.ts';
import { stopOwnedPostgres } from './start-postgres.ts';

/** Stops the local layout: roles first (agents get their grace), PostgreSQL last. */
export async function downLocal(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done: string[] = [];
  const entries = listProcesses(ctx.config);
  const others = [...entries.filter((e) => e.stopWith !== 'pg_ctl'), ...strayProcesses(ctx.config, entries)];
  // Stop in parallel: each waits for its own exit (agents finish running tasks first).
  const results = await Promise.all(
    others.map(async (e) => {
      const how = await stopProcess(e, e.role === 'agent' ? ctx.config.agent.terminationGraceSeconds * 1000 : 60_000);
      unregisterProcess(ctx.config, e.name);
      return `${e.name}: ${how}`;
    }),
  );
  done.push(...results);
  if (entries.some((e) => e.stopWith === 'pg_ctl')) done.push(`postgres: ${await stopOwnedPostgres(ctx)}`);
  if (purge) {
    fs.rmSync(ctx.config.stateDir, { recursive: true, force: true });
    done.push(`purged ${ctx.config.stateDir} (database, secrets, logs)`);
  }
  return done;
}

export async function down(ctx: Ctx, purge: boolean): Promise<string[]> {
  return ctx.config.target === 'local' ? downLocal(ctx, purge) : kubeDown(ctx, purge);
}

if (isMain(import.meta.url)) {
  try {
    const flags = parseFlags(process.argv.slice(2));
    if (flags.help) {
      process.stdout.write('usage: npx tsx tasks/down.ts [--target local|minikube|gke] [--purge] [--dry-run]\n');
    } else {
      const config = configFromFlags(flags);
      const ctx = makeCtx(config, new ShellRunner(flags.dryRun));
      for (const line of await down(ctx, flags.purge)) process.stdout.write(`${line}\n`);
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
