// A query against Digdag's database on Kubernetes: through `kubectl exec psql` on the in-cluster
// server, or directly with DATABASE_URL.
import type { Ctx } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { dbPod, kubectl } from './kubectl.ts';
import { dbLocation } from './render.ts';

export function dbQuery(ctx: Ctx): (sql: string) => Promise<string> {
  if (ctx.config.db.externalUrl) {
    return async (sql) => queryAsApp(ctx.runner, ctx.config, await dbEndpoint(ctx.config, ''), sql);
  }
  const db = dbLocation(ctx.config);
  // The leader (Patroni: found again per query, so a failover between queries is followed).
  return async (sql) =>
    (await ctx.runner.run({ argv: kubectl(ctx.config, 'exec', await dbPod(ctx), '-c', 'postgres', '--', 'psql', '-X', '-At', '-U', 'postgres', '-d', db.database, '-c', sql), quiet: true })).stdout.trim();
}
