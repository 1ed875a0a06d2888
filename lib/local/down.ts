// down on the local target: stop the role processes and PostgreSQL — data is kept unless
// purge, which also deletes the database, secrets and logs.
import fs from 'node:fs';
import type { Ctx } from '../pipeline.ts';
import { listProcesses, stopProcess, strayProcesses, unregisterProcess } from '../processes.ts';
import { purgeExternalPostgres, stopOwnedPostgres } from '../postgres.ts';
import type { Role } from '../roles.ts';
import { stopGraceMs } from './apply.ts';

/** Stops the local layout: roles first (task-running ones get their grace), PostgreSQL last. */
export async function downLocal(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done: string[] = [];
  const entries = listProcesses(ctx.config);
  const others = [...entries.filter((e) => e.stopWith !== 'pg_ctl'), ...strayProcesses(ctx.config, entries)];
  // Stop in parallel: each waits for its own exit (agents finish running tasks first).
  const results = await Promise.all(
    others.map(async (e) => {
      const how = await stopProcess(e, stopGraceMs(ctx.config, e.role as Role | undefined));
      unregisterProcess(ctx.config, e.name);
      return `${e.name}: ${how}`;
    }),
  );
  done.push(...results);
  if (entries.some((e) => e.stopWith === 'pg_ctl')) done.push(`postgres: ${await stopOwnedPostgres(ctx.config, ctx.runner)}`);
  if (purge) {
    fs.rmSync(ctx.config.stateDir, { recursive: true, force: true });
    done.push(`purged ${ctx.config.stateDir} (database, secrets, logs)`);
    const ext = purgeExternalPostgres(ctx.config);
    if (ext) done.push(ext);
  }
  return done;
}
