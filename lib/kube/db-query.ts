// A query against Digdag's database on Kubernetes: through `kubectl exec psql` on the in-cluster
// server, or directly with DATABASE_URL (with CLOUDSQL_INSTANCE: a Cloud SQL Auth Proxy on this machine).
import { requireSecrets } from '../credentials.ts';
import { CommandError, UserError } from '../errors.ts';
import type { Ctx } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { dbPod, kubectl } from './kubectl.ts';
import { dbLocation } from './render.ts';

export function dbQuery(ctx: Ctx): (sql: string) => Promise<string> {
  if (ctx.config.db.externalUrl) {
    return async (sql) => {
      const db = await dbEndpoint(ctx.config, '');
      try {
        // No password in the URL (as tasks/gcp.ts writes it): the generated one, which the Secret holds too.
        return await queryAsApp(ctx.runner, ctx.config, { ...db, password: db.password || requireSecrets(ctx.config).dbPassword }, sql);
      } catch (e) {
        const instance = ctx.config.db.cloudSqlInstance;
        if (!instance || !(e instanceof CommandError) || !/connection to server|could not connect|Connection refused/i.test(e.stderr)) throw e;
        // DATABASE_URL names the pods' sidecar (127.0.0.1); from this machine the same address needs a proxy here.
        throw new UserError(`Digdag's database (Cloud SQL ${instance}) does not answer on ${db.host}:${db.port} of this machine`, `run the Cloud SQL Auth Proxy here while status or verify-ha query it: cloud-sql-proxy --port ${db.port} ${instance}`, e.message);
      }
    };
  }
  // The leader (Patroni: found again per query, so a failover between queries is followed).
  return async (sql) => execPsql(ctx, await dbPod(ctx), sql);
}

/**
 * dbQuery for a polling loop (the burst's lock-table samples, back to back): the leader is found
 * once and kept until a query on it fails, then found again. One `kubectl exec` per query instead
 * of a `kubectl get pods` before each, which halves a sample on a busy machine (the queue's
 * timeline and the scale-in's holders are read from the samples; re-runs from the database's lock
 * log, lib/lock-log.ts, which no sampling gap can hide). A member that was demoted meanwhile still answers,
 * as a streaming replica, with what the leader committed.
 */
export function pollingDbQuery(ctx: Ctx): (sql: string) => Promise<string> {
  if (ctx.config.db.externalUrl) return dbQuery(ctx);
  let pod: string | undefined;
  return async (sql) => {
    if (pod) {
      try {
        return await execPsql(ctx, pod, sql);
      } catch {
        pod = undefined;
      }
    }
    pod = await dbPod(ctx);
    return execPsql(ctx, pod, sql);
  };
}

async function execPsql(ctx: Ctx, pod: string, sql: string): Promise<string> {
  const db = dbLocation(ctx.config);
  return (await ctx.runner.run({ argv: kubectl(ctx.config, 'exec', pod, '-c', 'postgres', '--', 'psql', '-X', '-At', '-U', 'postgres', '-d', db.database, '-c', sql), quiet: true })).stdout.trim();
}
