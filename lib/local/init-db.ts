// init-db on the local target: create Digdag's role, database and uuid-ossp (sql/*.sql, idempotent), then run
// Digdag's schema migrations once, so the roles can start with database.migrate=false.
import fs from 'node:fs';
import path from 'node:path';
import { SQL_DIR } from '../paths.ts';
import { requireSecrets } from '../credentials.ts';
import { detectJava, digdagArgv, CLIENT_JVM_OPTS, requireRuntime } from '../digdag.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { dbEndpoint, localPostgres, ownedPort, psqlVariables, queryAsApp, STAT_STATEMENTS, superuserPsql, type DbEndpoint } from '../postgres.ts';
import { migrateProperties, secretProperties } from '../properties.ts';
import { writePrivateFile } from '../state.ts';
import { createHash } from 'node:crypto';
import { changesApplied } from '../runner.ts';

export const sqlFiles = (): string[] =>
  fs
    .readdirSync(SQL_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((f) => path.join(SQL_DIR, f));

async function migrationsApplied(ctx: Ctx, db: DbEndpoint): Promise<number | undefined> {
  try {
    return Number(await queryAsApp(ctx.runner, ctx.config, db, 'SELECT count(*) FROM schema_migrations'));
  } catch {
    return undefined;
  }
}

/** Runs sql/*.sql as the superuser over the private socket; values go in on stdin. */
export async function applySql(ctx: Ctx, db: DbEndpoint): Promise<void> {
  const pg = localPostgres(ctx.config);
  const port = await ownedPort(ctx.config, pg);
  const vars = psqlVariables({ db_user: db.user, db_password: db.password, db_name: db.database });
  for (const file of sqlFiles()) {
    await ctx.runner.run({ argv: superuserPsql(pg, port), input: vars + fs.readFileSync(file, 'utf8'), mutates: true });
    ctx.runner.log(`applied ${path.basename(file)}`);
  }
  if (ctx.config.db.statStatements) {
    // Loaded by the server (POSTGRES_STAT_STATEMENTS); the view lives in the database that uses it.
    await ctx.runner.run({ argv: superuserPsql(pg, port, db.database), input: `CREATE EXTENSION IF NOT EXISTS ${STAT_STATEMENTS};\n`, mutates: true });
    ctx.runner.log(`created ${STAT_STATEMENTS} in ${db.database}`);
  }
}

/** An existing server: its role and database are the operator's; only uuid-ossp is checked. */
async function checkExternalDb(ctx: Ctx, db: DbEndpoint): Promise<void> {
  const has = await queryAsApp(ctx.runner, ctx.config, db, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'").catch((e: Error) => {
    throw new UserError(`cannot connect to DATABASE_URL (${db.host}:${db.port}/${db.database}) as ${db.user}`, 'check DATABASE_URL, the network path and that the role may log in', e.message);
  });
  if (has !== '1') {
    throw new UserError(
      `the database ${db.database} on ${db.host} lacks the uuid-ossp extension Digdag's first migration needs`,
      'as a privileged user run: CREATE EXTENSION IF NOT EXISTS "uuid-ossp"; (Cloud SQL: as postgres / cloudsqlsuperuser)',
    );
  }
}

export const initDb: Impl = {
  inputs: async (ctx) => {
    const s = requireSecrets(ctx.config);
    const db = await dbEndpoint(ctx.config, s.dbPassword);
    return {
      values: { host: db.host, port: db.port, db: db.database, user: db.user, statStatements: ctx.config.db.statStatements, pw: createHash('sha256').update(db.password).digest('hex'), runtime: requireRuntime(ctx.config).path },
      files: sqlFiles(),
    };
  },
  healthy: async (ctx) => {
    const db = await dbEndpoint(ctx.config, requireSecrets(ctx.config).dbPassword);
    const n = await migrationsApplied(ctx, db);
    return n ? `schema has ${n} migrations applied` : false;
  },
  run: async (ctx) => {
    const secrets = requireSecrets(ctx.config);
    const db = await dbEndpoint(ctx.config, secrets.dbPassword);
    if (db.owned) await applySql(ctx, db);
    else await checkExternalDb(ctx, db);
    const props = path.join(ctx.config.stateDir, 'props', 'migrate.properties');
    await ctx.runner.change(undefined, () => writePrivateFile(props, migrateProperties({ dbHost: db.host, dbPort: db.port, dbName: db.database, dbUser: db.user }) + secretProperties(db.password, secrets.encryptionKey)));
    const java = await detectJava(ctx.config, ctx.runner);
    const res = await ctx.runner.run({ argv: digdagArgv(java, requireRuntime(ctx.config), CLIENT_JVM_OPTS, ['migrate', 'run', '-c', props]), mutates: true, nothrow: true });
    if (res.code !== 0) {
      throw new UserError('digdag migrate run failed', 'read the output above; check that PostgreSQL is up (start-postgres) and the role can log in', `${res.stdout}\n${res.stderr}`.trim().split('\n').slice(-15).join('\n'));
    }
    if (changesApplied(ctx.runner)) ctx.runner.log(`migrations: ${res.stdout.trim().split('\n').pop()} (${await migrationsApplied(ctx, db)} applied)`);
  },
};
