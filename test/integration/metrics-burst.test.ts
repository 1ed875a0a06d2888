// Metrics on the real local target with real Digdag: during a burst of tasks, scraping each
// process shows its executor and agent counters moving, the one queue exporter's depth rises
// above the free task threads and falls back to zero, and `status` shows the numbers the
// database holds (and the failed attempt, with its UI link). Without a Digdag runtime: SKIPPED
// with the reason, never a pass.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { authenticatedEndpoint } from '../../lib/auth.ts';
import type { Config } from '../../lib/config.ts';
import { requireSecrets } from '../../lib/credentials.ts';
import { startAttempt, waitAttempt, workflowId } from '../../lib/digdag-api.ts';
import { downLocal } from '../../lib/local/down.ts';
import { queueExporterUrl } from '../../lib/local/queue-exporter.ts';
import { localStatus } from '../../lib/local/status.ts';
import { runSteps } from '../../lib/pipeline.ts';
import { dbEndpoint, queryAsApp } from '../../lib/postgres.ts';
import { isAlive, listProcesses, waitFor } from '../../lib/processes.ts';
import { instances, runsExecutorLoop, runsTasks, type Role } from '../../lib/roles.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { parseDbNumbers, sampleValue, scrape, STATUS_SQL } from '../../lib/status.ts';
import { SAMPLE_PROJECT } from '../../lib/push-workflow.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { freePortRange, prepareRuntime, runtimeVars } from '../helpers/runtime.ts';

const THREADS = 3;
const WORKERS = 2;
const TASKS = 18;
const runner = new ShellRunner(false, () => {});
let config: Config;
let unavailable: string | undefined;

before(async () => {
  const failing = tempDir('failing-wf-');
  fs.writeFileSync(path.join(failing, 'fail.dig'), 'timezone: UTC\n\n+boom:\n  sh>: exit 3\n');
  config = testConfig({
    ...runtimeVars,
    DIGDAG_HA_STATE_DIR: tempDir(),
    LOCAL_PORT_BASE: String(await freePortRange(4, 61000)),
    LOCAL_METRICS_PORT_BASE: String(await freePortRange(9, 61500)),
    WORKER_REPLICAS: String(WORKERS),
    AGENT_MAX_TASK_THREADS: String(THREADS),
    WORKFLOW_DIR: failing,
    WORKFLOW_PROJECT: 'failing',
  });
  unavailable = await prepareRuntime(config, runner);
});

after(async () => {
  if (!config) return;
  const entries = listProcesses(config);
  await downLocal(testCtx(config, runner), true);
  for (const p of entries) assert.equal(isAlive(p), false, `${p.name} still running after down`);
});

type Counters = Map<string, { enqueued: number; finished: number }>;
async function counters(): Promise<Counters> {
  const out: Counters = new Map();
  for (const p of listProcesses(config).filter((e) => e.role)) {
    const text = await scrape(`http://127.0.0.1:${p.metricsPort}/metrics`);
    assert.ok(text, `${p.name}: its metrics page does not answer`);
    out.set(p.name, {
      enqueued: sampleValue(text, 'digdag_executor_enqueued_tasks_total') ?? 0,
      finished: sampleValue(text, 'digdag_timer_calls_total', '{category="agent",method="opm_run"}') ?? 0,
    });
  }
  return out;
}

test(`a burst of ${TASKS} tasks on ${WORKERS}x${THREADS} threads: counters move, the queue rises and falls, status = database`, { timeout: 900_000 }, async (t) => {
  if (unavailable) return t.skip(`no Digdag runtime on this machine: ${unavailable}`);
  const ctx = testCtx(config, runner);
  await runSteps(ALL_STEPS.filter((s) => ['build-image', 'create-secret', 'start-postgres', 'init-db', 'apply', 'push-workflow'].includes(s.name)), ctx, { renderer: 'silent' });
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  const endpoint = authenticatedEndpoint(config, `http://127.0.0.1:${config.local.portBase}`);
  const before = await counters();
  assert.equal(before.size, instances(config).length, 'every role process serves metrics');

  const failed = await startAttempt(endpoint, await workflowId(endpoint, 'failing', 'fail'), new Date(Date.UTC(2026, 0, 1)));
  const burst = await startAttempt(endpoint, await workflowId(endpoint, SAMPLE_PROJECT, 'parallel'), new Date(Date.UTC(2026, 0, 2)), { tasks: TASKS, sleep_seconds: 6 });

  // The queue exporter sees the queue rise past the free threads…
  const depth = async () => {
    const text = (await scrape(queueExporterUrl(ctx))) ?? '';
    const v = (n: string) => Number(/^(\S+)\{[^}]*\} (\S+)$/m.exec(text.split('\n').filter((l) => l.startsWith(`${n}{`)).join('\n'))?.[2] ?? NaN);
    return { waiting: v('digdag_queue_waiting'), running: v('digdag_queue_running') };
  };
  let peak = { waiting: 0, running: 0 };
  assert.ok(await waitFor(async () => {
    const d = await depth();
    if (d.waiting > peak.waiting) peak = d;
    return d.waiting >= TASKS - WORKERS * THREADS - 2 && d.running === WORKERS * THREADS;
  }, 120_000, 250), `the queue exporter never showed the burst queued (peak ${JSON.stringify(peak)})`);

  // …and status shows what the database holds at that moment (read before and after: equal = steady).
  let compared = false;
  for (let i = 0; i < 20 && !compared; i++) {
    const dbBefore = parseDbNumbers(await queryAsApp(runner, config, db, STATUS_SQL));
    const report = await localStatus(ctx);
    const dbAfter = parseDbNumbers(await queryAsApp(runner, config, db, STATUS_SQL));
    if (JSON.stringify(dbBefore) !== JSON.stringify(dbAfter)) continue;
    compared = true;
    assert.deepEqual(report.queue, { waiting: Number(dbBefore.waiting), running: Number(dbBefore.running) });
    assert.equal(report.attempts.running, Number(dbBefore.attempts_running));
    assert.deepEqual(report.agents.map((a) => [a.agent, a.tasks]), dbBefore.agents.map((a) => [a.agent, Number(a.tasks)]));
    for (const p of report.processes.filter((x) => runsTasks(x.role as Role))) {
      assert.equal(p.tasksRunning, Number(dbBefore.agents.find((a) => a.agent === p.name)?.tasks ?? 0), `${p.name} tasks now`);
    }
    assert.ok(report.processes.every((p) => p.answers && p.metricsAnswers), JSON.stringify(report.processes));
    assert.equal(report.queueExporter?.up, true);
    assert.equal(report.capacity, WORKERS * THREADS);
    t.diagnostic(`during the burst: waiting ${report.queue.waiting}, running ${report.queue.running}, agents ${JSON.stringify(report.agents)}`);
  }
  assert.ok(compared, 'the database never held still long enough to compare');

  // Drained: the queue falls back to zero.
  assert.equal((await waitAttempt(endpoint, burst, 300_000)).success, true);
  assert.ok(await waitFor(async () => {
    const d = await depth();
    return d.waiting === 0 && d.running === 0;
  }, 60_000, 500), `the queue never drained on the exporter: ${JSON.stringify(await depth())}`);
  assert.equal((await waitAttempt(endpoint, failed, 300_000)).success, false);

  // Counters moved: every agent ran tasks, executors enqueued them.
  const afterBurst = await counters();
  let finished = 0;
  for (const inst of instances(config)) {
    const [b, a] = [before.get(inst.name)!, afterBurst.get(inst.name)!];
    if (runsTasks(inst.role)) {
      assert.ok(a.finished > b.finished, `${inst.name}: agent counter did not move (${b.finished} → ${a.finished})`);
      finished += a.finished - b.finished;
    } else {
      assert.equal(a.finished, 0, `${inst.name} runs no agent`);
    }
    if (!runsExecutorLoop(config.layout, inst.role)) assert.equal(a.enqueued, 0, `${inst.name} runs no executor loop`);
  }
  const enqueued = [...afterBurst.values()].reduce((n, c) => n + c.enqueued, 0) - [...before.values()].reduce((n, c) => n + c.enqueued, 0);
  assert.ok(finished >= TASKS + 2, `agents finished ${finished} tasks, expected at least the ${TASKS} sh> tasks and the others`);
  assert.ok(enqueued >= TASKS + 2, `executors enqueued ${enqueued} tasks`);
  t.diagnostic(`peak ${JSON.stringify(peak)}; agents finished ${finished}, executors enqueued ${enqueued}`);

  // The failure is on the screen, with its link.
  const report = await localStatus(ctx);
  const shown = report.failed.find((f) => f.id === failed);
  assert.ok(shown, `failed attempt ${failed} not listed: ${JSON.stringify(report.failed)}`);
  assert.equal(shown.url, `http://127.0.0.1:${config.local.portBase}/attempts/${failed}`);
  assert.deepEqual([shown.project, shown.workflow], ['failing', 'fail']);
  assert.deepEqual(report.queue, { waiting: 0, running: 0 });
});
