// The exporters against the real thing: the queue exporter (postgres_exporter with
// monitoring/queue-queries.yaml) on a real PostgreSQL holding tables shaped like Digdag's, its
// numbers following the queue as it fills and drains; and the JMX exporter agent on a JVM that
// registers Digdag 0.10.5.1's MBeans the way Digdag does (test/fixtures/DigdagJmxProbe.java, real
// HikariCP pool on the same server), producing every name the alerts and the dashboard read.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { readSecrets } from '../../lib/credentials.ts';
import { loadRuleGroups, JMX_EXPORTER_CONFIG, metricNamesIn, metricsJvmArgs, monitoringCacheDir, MONITORING_DIR, obtainJmxExporter, obtainQueueExporter, queueExporterCommand } from '../../lib/metrics.ts';
import { runSteps } from '../../lib/pipeline.ts';
import { pickFreePort } from '../../lib/ports.ts';
import { dbEndpoint, queryAsApp, type DbEndpoint } from '../../lib/postgres.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { downLocal } from '../../lib/local/down.ts';
import { applySql } from '../../lib/local/init-db.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';

const ROOT = path.resolve(MONITORING_DIR, '..');
const runner = new ShellRunner(false, () => {});
let config: Config;
let db: DbEndpoint;
const children: ChildProcess[] = [];

before(async () => {
  config = testConfig();
  await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
  db = await dbEndpoint(config, readSecrets(config)!.dbPassword);
  await applySql(testCtx(config, runner), db);
  await sql(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'digdag-queue-schema.sql'), 'utf8'));
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await downLocal(testCtx(config, runner), true);
});

const sql = (q: string) => queryAsApp(runner, config, db, q);

function startBackground(argv: string[], env: Record<string, string>): ChildProcess {
  const log = path.join(tempDir('digdag-ha-exporter-'), 'out.log');
  const out = fs.openSync(log, 'w');
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
  children.push(child);
  Object.assign(child, { logFile: log });
  return child;
}

/** Scrapes until `ready` holds (bounded: the JVM needs a few seconds under load). */
async function scrape(url: string, ready: (text: string) => boolean, child: ChildProcess, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (let wait = 200; Date.now() < deadline; wait = Math.min(wait * 2, 2000)) {
    if (child.exitCode !== null) break;
    try {
      last = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
      if (ready(last)) return last;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, wait));
  }
  const log = fs.readFileSync((child as unknown as { logFile: string }).logFile, 'utf8');
  throw new Error(`${url} not ready (exit ${child.exitCode}); last scrape:\n${last.slice(-2000)}\nlog:\n${log.slice(-3000)}`);
}

/** Samples of one metric: labels (as text) → value. */
function samples(text: string, name: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const r = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    // postgres_exporter adds server="host:port"; the keys leave it out.
    if (r) m.set((r[1] ?? '').replace(/,?server="[^"]*"/, '').replace('{,', '{').replace(/^\{\}$/, ''), Number(r[2]));
  }
  return m;
}
const value = (text: string, name: string, labels = '') => samples(text, name).get(labels);

function usedMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const g of loadRuleGroups()) for (const r of g.rules) for (const n of metricNamesIn(r.expr)) names.add(n);
  const dash = JSON.parse(fs.readFileSync(path.join(MONITORING_DIR, 'grafana-dashboard.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  for (const p of dash.panels) for (const t of p.targets ?? []) for (const n of metricNamesIn(t.expr)) names.add(n);
  return names;
}

test('queue exporter: the numbers are the database\'s, once for the cluster, and follow the queue up and down', async () => {
  const bin = await obtainQueueExporter(runner);
  const pwFile = path.join(tempDir('digdag-ha-pw-'), 'db-password');
  fs.writeFileSync(pwFile, db.password, { mode: 0o600 });
  const port = await pickFreePort();
  const cmd = queueExporterCommand(bin, { host: db.host, port: db.port, database: db.database, user: db.user, passwordFile: pwFile }, `127.0.0.1:${port}`);
  const child = startBackground(cmd.argv, cmd.env);
  const url = `http://127.0.0.1:${port}/metrics`;
  const now = "extract(epoch FROM now())::bigint";

  // An empty queue, schedules on time.
  await sql(`INSERT INTO schedules (project_id, workflow_definition_id, next_run_time, next_schedule_time, created_at, updated_at) VALUES (1, 1, ${now} + 60, 0, now(), now())`);
  let m = await scrape(url, (t) => /^digdag_queue_waiting/m.test(t), child);
  assert.equal(value(m, 'pg_up'), 1, 'connected with the password file over scram');
  assert.equal(value(m, 'digdag_queue_waiting'), 0);
  assert.equal(value(m, 'digdag_queue_running'), 0);
  assert.equal(value(m, 'digdag_schedules_overdue'), 0);

  // A burst: 12 tasks enqueued, 2 agents take 3 each (as lock_shared_tasks does).
  await sql('INSERT INTO queued_task_locks (site_id, queue_id, priority) SELECT 0, NULL, 0 FROM generate_series(1, 12)');
  await sql(`UPDATE queued_task_locks SET lock_expire_time = ${now} + 300, lock_agent_id = '101@agent-a' WHERE id IN (SELECT id FROM queued_task_locks WHERE lock_expire_time IS NULL ORDER BY id LIMIT 3)`);
  await sql(`UPDATE queued_task_locks SET lock_expire_time = ${now} + 300, lock_agent_id = '202@agent-b' WHERE id IN (SELECT id FROM queued_task_locks WHERE lock_expire_time IS NULL ORDER BY id LIMIT 3)`);
  m = await scrape(url, (t) => value(t, 'digdag_queue_running') === 6, child);
  assert.equal(value(m, 'digdag_queue_waiting'), Number(await sql('SELECT count(*) FROM queued_task_locks WHERE lock_expire_time IS NULL')));
  assert.equal(value(m, 'digdag_queue_waiting'), 6);
  assert.equal(value(m, 'digdag_queue_agent_tasks', '{agent="101@agent-a"}'), 3);
  assert.equal(value(m, 'digdag_queue_agent_tasks', '{agent="202@agent-b"}'), 3);
  const duringBurst = m;

  // agent-b dies: its locks pass their expiry (stale), then the expiry thread puts them back.
  await sql(`UPDATE queued_task_locks SET lock_expire_time = ${now} - 1 WHERE lock_agent_id = '202@agent-b'`);
  m = await scrape(url, (t) => value(t, 'digdag_queue_stale_locks') === 3, child);
  await sql(`UPDATE queued_task_locks SET lock_expire_time = NULL, lock_agent_id = NULL, retry_count = retry_count + 1 WHERE lock_expire_time IS NOT NULL AND lock_expire_time < ${now}`);
  m = await scrape(url, (t) => value(t, 'digdag_queue_retried') === 3, child);
  assert.equal(value(m, 'digdag_queue_stale_locks'), 0);
  assert.equal(value(m, 'digdag_queue_waiting'), 9);
  assert.equal(value(m, 'digdag_queue_max_retry_count'), 1);

  // Drained: agents finish and delete their rows.
  await sql('DELETE FROM queued_task_locks');
  m = await scrape(url, (t) => value(t, 'digdag_queue_waiting') === 0 && value(t, 'digdag_queue_running') === 0, child);
  assert.equal(samples(m, 'digdag_queue_agent_tasks').size, 0);

  // Attempts and schedules.
  await sql(`INSERT INTO session_attempts (session_id, site_id, project_id, attempt_name, state_flags, timezone, created_at, finished_at) VALUES
    (1, 0, 1, '', 0, 'UTC', now(), NULL), (2, 0, 1, '', 6, 'UTC', now(), now()), (3, 0, 1, '', 2, 'UTC', now(), now()),
    (4, 0, 1, '', 2, 'UTC', now(), now()), (5, 0, 1, '', 3, 'UTC', now(), now()), (6, 0, 1, '', 2, 'UTC', now() - interval '1 hour', now() - interval '1 hour')`);
  await sql(`UPDATE schedules SET next_run_time = ${now} - 600`);
  m = await scrape(url, (t) => value(t, 'digdag_attempts_running') === 1, child);
  assert.equal(value(m, 'digdag_attempts_recent_finished', '{result="failure"}'), 2, 'the hour-old failure is outside the window');
  assert.equal(value(m, 'digdag_attempts_recent_finished', '{result="success"}'), 1);
  assert.equal(value(m, 'digdag_attempts_recent_finished', '{result="cancelled"}'), 1);
  assert.equal(value(m, 'digdag_schedules_overdue'), 1);
  assert.ok(value(m, 'digdag_schedules_max_delay_seconds')! >= 599, 'due 600 s ago (epoch rounded to the second)');
  assert.ok(value(m, 'digdag_db_connections')! >= 1);
  assert.equal(value(m, 'digdag_db_max_connections'), Number(await sql('SHOW max_connections')));

  // Everything the alerts and the dashboard read from the queue exporter is there.
  const served = new Set((duringBurst + m).split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]));
  for (const n of usedMetricNames()) if (n.startsWith('digdag_queue') || n.startsWith('digdag_attempts') || n.startsWith('digdag_schedules') || n.startsWith('digdag_db_') || n === 'pg_up') assert.ok(served.has(n), `${n} not served`);
});

test('JMX exporter agent on Digdag\'s MBeans: every name the alerts and the dashboard read from a process', async () => {
  const cache = monitoringCacheDir();
  const jar = await obtainJmxExporter(cache, config.digdag.mavenRepoUrl, runner);
  const lib = path.join(cache, 'jmx-probe', 'lib');
  if (!fs.existsSync(path.join(lib, 'digdag-spi-0.10.5.1.jar'))) {
    await runner.run({ argv: ['mvn', '-B', '-q', '--strict-checksums', '-f', path.join(ROOT, 'test', 'fixtures', 'jmx-probe-pom.xml'), 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies', `-DoutputDirectory=${lib}`] });
  }
  const port = await pickFreePort();
  const child = startBackground(
    ['java', '-Xmx128m', ...metricsJvmArgs({ jar, config: JMX_EXPORTER_CONFIG, bind: '127.0.0.1', port }), '-cp', `${lib}/*`, path.join(ROOT, 'test', 'fixtures', 'DigdagJmxProbe.java'), `jdbc:postgresql://${db.host}:${db.port}/${db.database}`, db.user, '120000'],
    { PGPASSWORD: db.password },
  );
  const m = await scrape(`http://127.0.0.1:${port}/metrics`, (t) => /^hikaricp_connections_active/m.test(t), child, 120_000);
  assert.equal(value(m, 'jmx_scrape_error'), 0);
  assert.equal(value(m, 'digdag_executor_loops_total'), 1);
  assert.equal(value(m, 'digdag_agent_acquire_rounds_total'), 1);
  assert.equal(value(m, 'digdag_agent_busy_waits_total'), 1);
  assert.equal(value(m, 'digdag_timer_calls_total', '{category="agent",method="opm_run"}'), 1);
  assert.equal(value(m, 'digdag_uncaught_errors_total', '{category="default"}'), 1);
  assert.equal(value(m, 'hikaricp_connections_active', '{pool="HikariPool-1"}'), 1, 'the probe holds one connection');
  assert.equal(value(m, 'hikaricp_connections_max', '{pool="HikariPool-1"}'), 4);
  assert.equal(value(m, 'hikaricp_connections_pending', '{pool="HikariPool-1"}'), 0);
  assert.ok(value(m, 'digdag_timer_seconds', '{category="api",method="getProjects",quantile="0.99"}')! < 5, 'milliseconds became seconds');
  // Summaries and counters are not mistaken for timers.
  assert.ok(![...samples(m, 'digdag_timer_calls_total').keys()].some((k) => /loopWaitMsec|NumMaxAcquire|loopCount|uncaughtErrors/.test(k)));
  const served = new Set(m.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0]));
  const fromQueue = /^(digdag_queue|digdag_attempts|digdag_schedules|digdag_db_|pg_up$|up$)/;
  for (const n of usedMetricNames()) if (!fromQueue.test(n)) assert.ok(served.has(n), `${n} is read by an alert or panel but not served by the agent`);
});
