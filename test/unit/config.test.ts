// Config: defaults, precedence, and a clear, named failure for every kind of bad value.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import { loadConfig, renderEnvExample, VARIABLES } from '../../lib/config.ts';
import { UserError } from '../../lib/errors.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

function fails(vars: Record<string, string>, re: RegExp, fix?: RegExp) {
  assert.throws(
    () => testConfig(vars),
    (err: unknown) => {
      assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
      assert.match(err.message, re);
      if (fix) assert.match(err.fix ?? '', fix);
      return true;
    },
  );
}

test('defaults load into a frozen, typed config', () => {
  const c = testConfig();
  assert.equal(c.target, 'local');
  assert.equal(c.layout, 'worker');
  assert.deepEqual(c.replicas, { ui: 1, scheduler: 1, worker: 2, workflow: 0, agent: 0 });
  assert.equal(c.agent.maxTaskThreads, 4);
  // Local target defaults to fast failover so verify-ha takes seconds.
  assert.equal(c.agent.heartbeatInterval, 2);
  assert.equal(c.agent.lockRetentionTime, 8);
  assert.equal(c.logs.server, 'local');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.replicas) && Object.isFrozen(c.vars));
  assert.throws(() => {
    (c.replicas as { agent: number }).agent = 9;
  }, TypeError);
});

test('Kubernetes targets get Digdag-like timings and no local log server', () => {
  const c = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  assert.equal(c.agent.heartbeatInterval, 10);
  assert.equal(c.agent.lockRetentionTime, 60);
  assert.equal(c.logs.server, 'none');
  assert.equal(c.k8s.context, 'digdag-ha');
});

test('a negative replica count names the variable, the range and an example', () => {
  fails({ AGENT_REPLICAS: '-1' }, /AGENT_REPLICAS="-1".*out of range \(1\.\.50\)/, /AGENT_REPLICAS=4/);
});

test('WORKFLOW_MAX_TASKS: Digdag\'s 1000 by default; below 10, above 100000 or not a number refused with the variable, range and an example', () => {
  assert.equal(testConfig({}).executor.taskMaxRun, 1000);
  assert.equal(testConfig({ WORKFLOW_MAX_TASKS: '2000' }).executor.taskMaxRun, 2000);
  fails({ WORKFLOW_MAX_TASKS: '0' }, /WORKFLOW_MAX_TASKS="0".*out of range \(10\.\.100000\)/, /WORKFLOW_MAX_TASKS=5000/);
  fails({ WORKFLOW_MAX_TASKS: '1000000' }, /WORKFLOW_MAX_TASKS="1000000".*out of range \(10\.\.100000\)/);
  fails({ WORKFLOW_MAX_TASKS: 'many' }, /WORKFLOW_MAX_TASKS="many".*not a whole number/);
});

test('a port that is not a number is refused', () => {
  fails({ POSTGRES_PORT: 'abc' }, /POSTGRES_PORT="abc".*not a whole number/, /POSTGRES_PORT=54320/);
});

test('an unknown target is refused with the choices', () => {
  fails({ DIGDAG_HA_TARGET: 'kind' }, /DIGDAG_HA_TARGET="kind".*not one of: local, minikube, gke/);
});

test('workflow replicas cannot be 0: workflows would stall', () => {
  fails({ WORKFLOW_REPLICAS: '0' }, /WORKFLOW_REPLICAS.*out of range \(1\.\.20\)/);
});

test('lock retention shorter than three heartbeats is refused', () => {
  fails({ AGENT_HEARTBEAT_INTERVAL: '10', AGENT_LOCK_RETENTION_TIME: '20' }, /less than 3 x AGENT_HEARTBEAT_INTERVAL/, /AGENT_LOCK_RETENTION_TIME=30/);
});

test('pools that exceed max_connections are refused before anything starts', () => {
  fails({ WORKER_REPLICAS: '20', DB_POOL_SIZE: '20' }, /need \d+ connections/, /POSTGRES_MAX_CONNECTIONS/);
  fails({ DIGDAG_HA_LAYOUT: 'split', AGENT_REPLICAS: '20', DB_POOL_SIZE: '20' }, /need \d+ connections/, /POSTGRES_MAX_CONNECTIONS/);
});

test('the layout decides which roles run; the other layout\'s replica counts are ignored', () => {
  const w = testConfig({ AGENT_REPLICAS: '7', WORKER_REPLICAS: '3' });
  assert.equal(w.layout, 'worker');
  assert.deepEqual(w.replicas, { ui: 1, scheduler: 1, worker: 3, workflow: 0, agent: 0 });
  const s = testConfig({ DIGDAG_HA_LAYOUT: 'split', AGENT_REPLICAS: '7', WORKER_REPLICAS: '3' });
  assert.deepEqual(s.replicas, { ui: 1, scheduler: 1, worker: 0, workflow: 1, agent: 7 });
  fails({ DIGDAG_HA_LAYOUT: 'both' }, /DIGDAG_HA_LAYOUT="both".*not one of: worker, split/);
  fails({ WORKER_REPLICAS: '0' }, /WORKER_REPLICAS.*out of range \(1\.\.50\)/);
});

test('autoscaling settings: a target or interval of 0 is refused with the variable named', () => {
  fails({ AGENT_MAX_TASK_THREADS: '0' }, /AGENT_MAX_TASK_THREADS.*out of range \(1\.\.256\)/);
  fails({ AUTOSCALING_POLLING_SECONDS: '0' }, /AUTOSCALING_POLLING_SECONDS.*out of range \(1\.\.3600\)/);
  fails({ AUTOSCALING_COOLDOWN_SECONDS: '0' }, /AUTOSCALING_COOLDOWN_SECONDS.*out of range/);
  fails({ AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS: '-1' }, /AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS/);
  const c = testConfig({ AUTOSCALING_POLLING_SECONDS: '5', AUTOSCALING_COOLDOWN_SECONDS: '30' });
  assert.equal(c.k8s.autoscalingPollingSeconds, 5);
  assert.equal(c.k8s.autoscalingCooldownSeconds, 30);
});

// The Kubernetes-only combinations (autoscaling bounds, UI_REPLICAS=0, the edge) are the chart's:
// test/unit/renderer.test.ts renders them and sees them refused.

test('a missing service-account key file is named', () => {
  fails({ GCP_SA_KEY_FILE: '/nonexistent/key.json' }, /GCP_SA_KEY_FILE=\/nonexistent\/key.json does not exist/);
});

test('gke needs an image with a registry path', () => {
  fails({ DIGDAG_HA_TARGET: 'gke' }, /IMAGE=digdag-ha:0.10.5.1 has no registry path/);
});

test('LOG_SERVER=local is refused on Kubernetes; gcs needs a bucket', () => {
  fails({ DIGDAG_HA_TARGET: 'minikube', LOG_SERVER: 'local' }, /only works on the local target/);
  fails({ LOG_SERVER: 'gcs' }, /needs a bucket/);
});

test('precedence: default < .env < environment < --set', () => {
  const dir = tempDir();
  const envFile = path.join(dir, '.env');
  fs.writeFileSync(envFile, 'WORKER_REPLICAS=3\nUI_REPLICAS=2\nSCHEDULER_REPLICAS=0\n');
  const c = loadConfig({
    root: ROOT,
    envFile,
    env: { UI_REPLICAS: '4', SCHEDULER_REPLICAS: '' },
    overrides: { DIGDAG_HA_TARGET: 'local', DIGDAG_HA_STATE_DIR: dir, WORKER_REPLICAS: '5' },
  });
  assert.equal(c.replicas.worker, 5); // --set beats .env
  assert.equal(c.replicas.ui, 4); // environment beats .env
  assert.equal(c.replicas.scheduler, 0); // an empty environment value does not erase .env
});

test('a bad value in .env says it came from .env', () => {
  const dir = tempDir();
  const envFile = path.join(dir, '.env');
  fs.writeFileSync(envFile, 'AGENT_MAX_TASK_THREADS=lots\n');
  assert.throws(() => loadConfig({ root: ROOT, envFile, env: {}, overrides: { DIGDAG_HA_TARGET: 'local', DIGDAG_HA_STATE_DIR: dir } }), /AGENT_MAX_TASK_THREADS="lots" \(from \.env\)/);
});

test('an unknown variable in .env is refused (typos do not pass silently)', () => {
  const dir = tempDir();
  const envFile = path.join(dir, '.env');
  fs.writeFileSync(envFile, 'AGENT_REPLICA=3\n');
  assert.throws(() => loadConfig({ root: ROOT, envFile, env: {}, overrides: { DIGDAG_HA_STATE_DIR: dir } }), /sets AGENT_REPLICA, which digdag-ha does not know/);
});

test('DATABASE_URL is masked in its own error message', () => {
  assert.throws(() => testConfig({ DATABASE_URL: 'mysql://u:hunter22@h/db' }), (err: Error) => {
    assert.doesNotMatch(err.message, /hunter22/);
    return true;
  });
});

test('no target: minikube when docker and minikube answer, else local, with the reason', () => {
  const kube = testConfig({ DIGDAG_HA_TARGET: '' }, { detectKube: () => true });
  assert.equal(kube.target, 'minikube');
  assert.match(kube.targetReason, /docker and minikube answer/);
  const local = testConfig({ DIGDAG_HA_TARGET: '' }, { detectKube: () => false });
  assert.equal(local.target, 'local');
  assert.match(local.targetReason, /does not answer here/);
});

test('.env.example lists every variable with its comment and default, generated from the schema', () => {
  const text = fs.readFileSync(path.join(ROOT, '.env.example'), 'utf8');
  assert.equal(text, renderEnvExample(), '.env.example is stale: regenerate it with npm run env-example');
  for (const v of VARIABLES) {
    assert.match(text, new RegExp(`# ${v.description.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n${v.name}=${v.default.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\n`));
  }
});
