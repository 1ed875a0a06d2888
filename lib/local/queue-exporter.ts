// The local target's one queue exporter (postgres_exporter with monitoring/queue-queries.yaml):
// queue depth, attempts and schedules exported once per deployment, not per Digdag process. A
// tracked background process (lib/processes.ts) that down stops; the DB password is read from a
// 0600 file, never from argv or the environment.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { requireSecrets } from '../credentials.ts';
import { tail, UserError } from '../errors.ts';
import { localQueueExporterPort, QUEUE_QUERIES, queueExporterBin, queueExporterCommand } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { portFreeSoon } from '../ports.ts';
import { dbEndpoint } from '../postgres.ts';
import { isAlive, listProcesses, registerProcess, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { writePrivateFile } from '../state.ts';
import { changesApplied } from '../runner.ts';

export const QUEUE_EXPORTER = 'queue-exporter';

export const queueExporterUrl = (ctx: Pick<Ctx, 'config'>) => `http://127.0.0.1:${localQueueExporterPort(ctx.config)}/metrics`;

/** The command, its files and a hash of everything it runs with (the password included, hashed). */
export async function planQueueExporter(ctx: Ctx) {
  const { config } = ctx;
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  const port = localQueueExporterPort(config);
  // The queries are copied under props/ so a crash-orphaned exporter is found by strayProcesses.
  const queries = path.join(config.stateDir, 'props', 'queue-queries.yaml');
  const passwordFile = path.join(config.stateDir, 'secrets', 'queue-exporter-db-password');
  const cmd = queueExporterCommand(queueExporterBin(), { host: db.host, port: db.port, database: db.database, user: db.user, passwordFile }, `127.0.0.1:${port}`, queries);
  // kingpin takes "--flag value": the path stands alone in argv, as strayProcesses expects.
  const argv = cmd.argv.flatMap((a) => (a.startsWith('--extend.query-path=') ? ['--extend.query-path', queries] : [a]));
  const hash = createHash('sha256').update(JSON.stringify({ argv, env: cmd.env, pw: db.password, q: fs.readFileSync(QUEUE_QUERIES, 'utf8') })).digest('hex');
  return { argv, env: cmd.env, port, queries, passwordFile, password: db.password, hash, logFile: path.join(config.stateDir, 'logs', `${QUEUE_EXPORTER}.log`) };
}

/** Answers /metrics with pg_up 1: connected to the database with the password file. */
export async function queueExporterUp(url: string): Promise<boolean> {
  try {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(3000) })).text();
    return /^pg_up(\{[^}]*\})? 1$/m.test(text);
  } catch {
    return false;
  }
}

/** Starts the exporter, or restarts it when what it runs with changed; returns what it did. */
export async function reconcileQueueExporter(ctx: Ctx): Promise<string> {
  const plan = await planQueueExporter(ctx);
  const cur = listProcesses(ctx.config).find((p) => p.name === QUEUE_EXPORTER) as (ProcessEntry & { hash?: string }) | undefined;
  if (cur && isAlive(cur) && cur.hash === plan.hash && !ctx.force) return `${QUEUE_EXPORTER}: running, unchanged (pid ${cur.pid})`;
  if (cur) {
    await stopProcess(cur, 10_000);
    unregisterProcess(ctx.config, QUEUE_EXPORTER);
  }
  if (!(await portFreeSoon(plan.port))) {
    throw new UserError(`port ${plan.port} (for the queue exporter) on 127.0.0.1 is in use by another program`, 'set LOCAL_METRICS_PORT_BASE to a free range');
  }
  await ctx.runner.change(undefined, () => {
    writePrivateFile(plan.passwordFile, plan.password);
    fs.copyFileSync(QUEUE_QUERIES, plan.queries);
    fs.rmSync(plan.logFile, { force: true });
  });
  const pid = await ctx.runner.spawnBackground({ argv: plan.argv, env: plan.env, logFile: plan.logFile, cwd: ctx.config.stateDir });
  const entry: ProcessEntry & { hash: string } = {
    name: QUEUE_EXPORTER, pid, marker: plan.queries, logFile: plan.logFile, startedAt: new Date().toISOString(), port: plan.port, metricsPort: plan.port, stopWith: 'signal', hash: plan.hash,
  };
  const did = cur ? 'restarted' : 'started';
  if (!changesApplied(ctx.runner)) return `${QUEUE_EXPORTER}: would be ${did} on :${plan.port}`;
  registerProcess(ctx.config, entry);
  ctx.started.push(entry);
  const url = queueExporterUrl(ctx);
  if (!(await waitFor(async () => !isAlive(entry) || (await queueExporterUp(url)), 30_000, 300)) || !isAlive(entry)) {
    const log = fs.existsSync(plan.logFile) ? tail(fs.readFileSync(plan.logFile, 'utf8'), 15) : '(no log)';
    throw new UserError(`the queue exporter did not report pg_up 1 on ${url} within 30s`, `read ${plan.logFile}`, log);
  }
  return `${QUEUE_EXPORTER}: ${did} on :${plan.port} (${url})`;
}
