// A query against Digdag's database on Kubernetes: through `kubectl exec psql` on the in-cluster
// server, or directly with DATABASE_URL.
import { requireSecrets } from '../credentials.ts';
import type { Ctx } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { kubectl } from './kubectl.ts';
import { dbLocation } from './render.ts';

export function dbQuery(ctx: Ctx): (sql: string) => Promise<string> {
  if (ctx.config.db.externalUrl) {
    return async (sql) => {
      const db = await dbEndpoint(ctx.config, '');
      // No password in the URL (as tasks/gcp.ts writes it): the generated one, which the Secret holds too.
      return queryAsApp(ctx.runner, ctx.config, { ...db, password: db.password || requireSecrets(ctx.config).dbPassword }, sql);
    };
  }
  const db = dbLocation(ctx.config);
  return async (sql) =>
    (await ctx.runner.run({ argv: kubectl(ctx.config, 'exec', 'digdag-postgres-0', '-c', 'postgres', '--', 'psql', '-X', '-At', '-U', 'postgres', '-d', db.database, '-c', sql), quiet: true })).stdout.trim();
}
