// init-db on Kubernetes: sql/*.sql through `kubectl exec psql` on the in-cluster server (its leader), then
// the migration Job (a new Job per run: its template is immutable).
import fs from 'node:fs';
import path from 'node:path';
import { SQL_DIR } from '../paths.ts';
import { requireSecrets } from '../credentials.ts';
import { tail, UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { psqlVariables } from '../postgres.ts';
import { applyObjects, byKind, dbPod, diagnostics, kubectl, requireCluster } from './kubectl.ts';
import { dbLocation, renderManifests } from './render.ts';

/** sql/*.sql through `kubectl exec psql` on the in-cluster server (role, database, uuid-ossp). */
export async function runInitSql(ctx: Ctx): Promise<void> {
  const secrets = requireSecrets(ctx.config);
  const db = dbLocation(ctx.config);
  const vars = psqlVariables({ db_user: db.user, db_password: secrets.dbPassword, db_name: db.database });
  const pod = await dbPod(ctx);
  for (const file of fs.readdirSync(SQL_DIR).filter((f) => f.endsWith('.sql')).sort()) {
    await ctx.runner.run({
      argv: kubectl(ctx.config, 'exec', '-i', pod, '-c', 'postgres', '--', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', 'postgres', '-d', 'postgres', '-f', '-'),
      input: vars + fs.readFileSync(path.join(SQL_DIR, file), 'utf8'),
      mutates: true,
    });
  }
}

export const initDb: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    if (!ctx.config.db.externalUrl) await runInitSql(ctx);
    // The Job's template is immutable: a new migration is a new Job.
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', 'job', 'digdag-migrate', '--ignore-not-found', '--wait=true'), mutates: true });
    await applyObjects(ctx, [...byKind(objects, 'ConfigMap'), ...byKind(objects, 'Job')]);
    const done = await ctx.runner.run({
      argv: kubectl(ctx.config, 'wait', '--for=condition=complete', 'job/digdag-migrate', `--timeout=${ctx.config.k8s.rolloutTimeoutSeconds}s`),
      nothrow: true,
      mutates: true,
    });
    if (done.code !== 0) {
      const logs = await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', 'job/digdag-migrate', '--tail=30'), nothrow: true });
      throw new UserError('the migration Job did not complete', 'read its log below; check the database and the digdag-secrets Secret', `${tail(logs.stdout + logs.stderr, 30)}\n${await diagnostics(ctx, 'app.kubernetes.io/component=migrate')}`);
    }
  },
};
