// The autoscaling query against a real Digdag database under load: with N tasks queued behind
// one worker of T threads, QUEUE_DEPTH_SQL returns N, which yields ceil(N / T) agents.
// Needs the Digdag runtime; SKIPPED with the reason where none can be had.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { requireSecrets } from '../../lib/credentials.ts';
import { attemptTasks, getAttempt, startAttempt, workflowId } from '../../lib/digdag-api.ts';
import { runSteps } from '../../lib/pipeline.ts';
import { dbEndpoint, queryAsApp } from '../../lib/postgres.ts';
import { waitFor } from '../../lib/processes.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { desiredAgents, QUEUE_DEPTH_SQL } from '../../lib/scaling.ts';
import { apply } from '../../tasks/apply.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { downLocal } from '../../lib/local/down.ts';
import { initDb } from '../../tasks/init-db.ts';
import { authenticatedEndpoint } from '../../lib/auth.ts';
import { SAMPLE_PROJECT } from '../../lib/push-workflow.ts';
import { pushWorkflow } from '../../tasks/push-workflow.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { freePortRange, prepareRuntime, runtimeVars } from '../helpers/runtime.ts';

const THREADS = 2;
const QUEUED = 7;
/** Long enough to count the queue while the first two run (seconds after the start), short enough
 * that down, which lets a worker finish its tasks, is not kept waiting (120 s until 2026-12-03: the
 * file then idled ~2 min in CI). */
const TASK_SECONDS = 45;
let config: Config;
let unavailable: string | undefined;
const runner = new ShellRunner(false, () => {});

before(async () => {
  config = testConfig({
    ...runtimeVars,
    DIGDAG_HA_STATE_DIR: tempDir(),
    LOCAL_PORT_BASE: String(await freePortRange(3, 61000)),
    LOCAL_METRICS_PORT_BASE: String(await freePortRange(3, 61500)),
    UI_REPLICAS: '0',
    SCHEDULER_REPLICAS: '0',
    WORKER_REPLICAS: '1',
    AGENT_MAX_TASK_THREADS: String(THREADS),
  });
  unavailable = await prepareRuntime(config, runner);
});

after(async () => {
  if (config) await downLocal(testCtx(config, runner), true);
});

test(`with ${QUEUED} tasks queued behind one ${THREADS}-thread worker the query asks for ceil(${QUEUED}/${THREADS}) agents`, { timeout: 600_000 }, async (t) => {
  if (unavailable) return t.skip(`no Digdag runtime on this machine: ${unavailable}`);
  const ctx = testCtx(config, runner);
  await runSteps([createSecret, startPostgres, initDb, apply, pushWorkflow], ctx, { renderer: 'silent' });
  // With UI_REPLICAS=0 and no scheduler the one worker (first port) serves the API.
  const endpoint = authenticatedEndpoint(config, `http://127.0.0.1:${config.local.portBase}`);
  const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
  const attempt = await startAttempt(endpoint, wf, new Date(Date.UTC(2020, 0, 1)), { tasks: QUEUED, sleep_seconds: TASK_SECONDS });
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  const count = async () => Number(await queryAsApp(runner, config, db, QUEUE_DEPTH_SQL));
  const running = async () => Number(await queryAsApp(runner, config, db, 'SELECT count(*) FROM queued_task_locks WHERE lock_agent_id IS NOT NULL'));
  // Reached once the loop has generated its children and the agent holds as many as it has threads.
  assert.ok(await waitFor(async () => (await count()) === QUEUED && (await running()) === THREADS, 120_000, 500), `queue depth never reached ${QUEUED} with ${THREADS} running (last: ${await count()}, running ${await running()}; attempt ${attempt}: ${JSON.stringify(await getAttempt(endpoint, attempt))}; tasks: ${(await attemptTasks(endpoint, attempt)).map((t) => `${t.fullName}=${t.state}`).join(', ')})`);
  assert.equal(desiredAgents(await count(), THREADS), Math.ceil(QUEUED / THREADS));
  assert.equal(Number(await queryAsApp(runner, config, db, 'SELECT count(*) FROM queued_task_locks WHERE lock_expire_time IS NULL')), QUEUED - THREADS, 'the rest are waiting');
});
