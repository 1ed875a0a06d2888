// start-postgres on the local target: a real PostgreSQL owned by the project (data in the state dir,
// loopback only, a non-root OS user when we are root), or none when DATABASE_URL is given.
import fs from 'node:fs';
import path from 'node:path';
import { UserError, tail } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { isPortFree } from '../ports.ts';
import { asPgUser, localPostgres, ownedPort, ownedPostgresEntry, pgHba, postmasterPid, prepareDirs, POSTGRES_ENTRY, serverOptions, stopOwnedPostgres } from '../postgres.ts';
import { isAlive, registerProcess, type ProcessEntry } from '../processes.ts';
import { changesApplied } from '../runner.ts';

/** Running and accepting connections on its port? */
async function ready(ctx: Ctx, port: number): Promise<boolean> {
  const pg = localPostgres(ctx.config);
  const e = ownedPostgresEntry(ctx.config);
  if (!e || !isAlive(e)) return false;
  const res = await ctx.runner.run({ argv: [path.join(pg.binDir, 'pg_isready'), '-q', '-h', '127.0.0.1', '-p', String(port)], nothrow: true, quiet: true });
  return res.code === 0;
}

export const startPostgres: Impl = {
  notApplicable: (ctx) => (ctx.config.db.externalUrl ? 'DATABASE_URL is set: using that server, none to start' : undefined),
  inputs: async (ctx) => {
    const pg = localPostgres(ctx.config);
    return { values: { bin: pg.binDir, port: await ownedPort(ctx.config, pg), max: ctx.config.db.maxConnections, statStatements: ctx.config.db.statStatements, hba: pgHba() } };
  },
  healthy: async (ctx) => {
    const port = await ownedPort(ctx.config, localPostgres(ctx.config));
    return (await ready(ctx, port)) ? `PostgreSQL accepting connections on 127.0.0.1:${port}` : false;
  },
  run: async (ctx) => {
    const pg = localPostgres(ctx.config);
    // The port file is written only when changes are made.
    const port = await ownedPort(ctx.config, pg, changesApplied(ctx.runner));
    const running = ownedPostgresEntry(ctx.config);
    if (running && isAlive(running)) {
      // Inputs changed (port, max_connections, pg_stat_statements): restart with the new settings; data stays.
      await stopOwnedPostgres(ctx.config, ctx.runner);
    }
    if (!(await isPortFree(port))) {
      throw new UserError(`port ${port} on 127.0.0.1 is in use by another program`, 'set POSTGRES_PORT to a free port, or POSTGRES_PORT=0 to pick one automatically');
    }
    await prepareDirs(ctx.runner, pg);
    if (!fs.existsSync(path.join(pg.dataDir, 'PG_VERSION'))) {
      await ctx.runner.run({
        argv: asPgUser(pg, [path.join(pg.binDir, 'initdb'), '-D', pg.dataDir, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--auth-local=trust', '--auth-host=scram-sha-256']),
        mutates: true,
      });
    }
    await ctx.runner.change(undefined, async () => {
      fs.writeFileSync(path.join(pg.dataDir, 'pg_hba.conf'), pgHba(), { mode: 0o600 });
      if (pg.osUser) await ctx.runner.run({ argv: ['chown', `${pg.osUser}:`, path.join(pg.dataDir, 'pg_hba.conf')], mutates: true });
    });
    const res = await ctx.runner.run({
      argv: asPgUser(pg, [path.join(pg.binDir, 'pg_ctl'), '-D', pg.dataDir, '-l', pg.logFile, '-w', '-t', '60', '-o', serverOptions(port, pg.socketDir, ctx.config.db.maxConnections, ctx.config.db.statStatements).join(' '), 'start']),
      mutates: true,
      nothrow: true,
    });
    if (!changesApplied(ctx.runner)) return;
    if (res.code !== 0) {
      const log = fs.existsSync(pg.logFile) ? tail(fs.readFileSync(pg.logFile, 'utf8'), 15) : res.stderr;
      throw new UserError(`PostgreSQL did not start on port ${port}`, `read ${pg.logFile}; if the port is taken set POSTGRES_PORT`, log);
    }
    const pid = postmasterPid(pg);
    if (!pid) throw new UserError('PostgreSQL started but wrote no postmaster.pid', `read ${pg.logFile}`);
    const e: ProcessEntry = { name: POSTGRES_ENTRY, pid, marker: pg.dataDir, logFile: pg.logFile, startedAt: new Date().toISOString(), port, stopWith: 'pg_ctl' };
    registerProcess(ctx.config, e);
    // pg_ctl stops it (a signal to the group would not wait for the checkpoint).
    ctx.started.push({ ...e, stop: () => stopOwnedPostgres(ctx.config, ctx.runner) });
    ctx.runner.log(`PostgreSQL ${path.basename(path.dirname(pg.binDir))} on 127.0.0.1:${port}, data in ${pg.dataDir}`);
  },
};
