// status: the screen rendered from a fixed report, and the data gathering on both targets with the
// recording runner (the exact commands; the database's answer and the HTTP probes stand in).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { kubeStatus } from '../../lib/kube/status.ts';
import { localStatus, type Probes } from '../../lib/local/status.ts';
import { psqlBin } from '../../lib/postgres.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { renderStatus, sampleValue, STATUS_SQL, type StatusReport } from '../../lib/status.ts';
import { statusFlags } from '../../tasks/status.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const DB_ANSWER = JSON.stringify({ waiting: 5, running: 4, attempts_running: 2, agents: [{ agent: 'worker-1', tasks: 3 }, { agent: 'worker-2', tasks: 1 }] });
const NOW = new Date('2026-11-25T05:30:00Z');

const report: StatusReport = {
  target: 'local', layout: 'worker', at: NOW.toISOString(), endpoint: 'http://127.0.0.1:65432',
  processes: [
    { name: 'ui-1', role: 'ui', state: 'running', pid: 10, answers: true, metricsUrl: 'http://127.0.0.1:9401/metrics', metricsAnswers: true, tasksEnqueued: 2 },
    { name: 'worker-1', role: 'worker', state: 'running', pid: 12, answers: true, metricsUrl: 'http://127.0.0.1:9405/metrics', metricsAnswers: true, tasksRunning: 4, tasksFinished: 17, tasksEnqueued: 30 },
    { name: 'worker-2', role: 'worker', state: 'down', answers: false, metricsUrl: 'http://127.0.0.1:9407/metrics', metricsAnswers: false, tasksRunning: 0 },
  ],
  queueExporter: { url: 'http://127.0.0.1:9400/metrics', up: true },
  queue: { waiting: 6, running: 4 }, capacity: 4, attempts: { running: 1 },
  agents: [{ agent: 'worker-1', process: 'worker-1', tasks: 4 }],
  failed: [{ id: '42', project: 'etl', workflow: 'nightly', sessionTime: '2026-11-24T00:00:00+00:00', finishedAt: '2026-11-25T05:29:01Z', url: 'http://127.0.0.1:65432/attempts/42' }],
  problems: [],
};

test('the screen: every process with API/metrics answers, the queue against free threads with a verdict, agents, failures with links', () => {
  const text = renderStatus(report);
  assert.match(text, /^digdag-ha status · local · layout worker · 2026-11-25T05:30:00.000Z$/m);
  assert.match(text, /^worker-1 +worker +running +ok +ok +4 +17 +30$/m);
  assert.match(text, /^worker-2 +worker +down +NO +NO +0 +- +-$/m);
  assert.match(text, /^queue-exporter +- +running +- +ok$/m);
  assert.match(text, /^QUEUE +waiting 6 +running 4 +free task threads 0 of 4 +→ SATURATED/m);
  assert.match(text, /^ATTEMPTS +running 1$/m);
  assert.match(text, /^AGENTS +worker-1 4$/m);
  assert.match(text, /#42 +etl\/nightly .* http:\/\/127\.0\.0\.1:65432\/attempts\/42$/m);
  assert.match(text, /WARNING: 1 of 3 processes do not answer/);
  assert.doesNotMatch(text, /\x1b\[/, 'no escape codes in the text itself');
  assert.match(renderStatus({ ...report, queue: { waiting: 0, running: 1 }, failed: [] }), /→ keeping up[\s\S]*LAST FAILED ATTEMPTS  none/);
});

test('reading a sample from Prometheus text: by exact name and labels', () => {
  const text = '# HELP x\ndigdag_timer_calls_total{category="agent",method="opm_run"} 13.0\ndigdag_timer_calls_total{category="agent",method="opm_runWithHeartbeat"} 9.0\ndigdag_executor_enqueued_tasks_total 21.0\n';
  assert.equal(sampleValue(text, 'digdag_timer_calls_total', '{category="agent",method="opm_run"}'), 13);
  assert.equal(sampleValue(text, 'digdag_executor_enqueued_tasks_total'), 21);
  assert.equal(sampleValue(text, 'digdag_executor_enqueued'), undefined);
});

test('local gathering: one read-only psql as Digdag\'s role, registry + probes per process, the failed list through the API endpoint', async () => {
  const config = testConfig({ POSTGRES_PORT: '55990', LOCAL_PORT_BASE: '61000', LOCAL_METRICS_PORT_BASE: '61100' });
  ensureSecrets(config);
  const runner = new RecordingRunner((argv) => (argv.includes(STATUS_SQL) ? { stdout: `${DB_ANSWER}\n` } : undefined));
  const asked: string[] = [];
  const probes: Probes = {
    version: async (u) => (asked.push(u), '0.10.5.1'),
    scrape: async (u) => (asked.push(u), 'digdag_executor_enqueued_tasks_total 3.0\n'),
    exporterUp: async () => true,
    failed: async (endpoint) => (asked.push(`failed ${typeof endpoint === 'string' ? endpoint : `${endpoint.url} ${endpoint.authorization ? 'with header' : 'no header'}`}`), []),
  };
  const r = await localStatus(testCtx(config, runner), probes, NOW);
  assert.deepEqual(runner.commands(), [`${psqlBin(config)} -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 55990 -U digdag -d digdag -c ${STATUS_SQL}`]);
  assert.ok(runner.calls.every((c) => !c.mutates), 'status changes nothing');
  assert.deepEqual(r.queue, { waiting: 5, running: 4 });
  assert.equal(r.attempts.running, 2);
  // Nothing was started here: every process is down and not probed, but listed with its metrics URL.
  assert.deepEqual(r.processes.map((p) => [p.name, p.state, p.metricsUrl, p.tasksRunning]), [
    ['ui-1', 'down', 'http://127.0.0.1:61101/metrics', undefined],
    ['scheduler-1', 'down', 'http://127.0.0.1:61103/metrics', undefined],
    ['worker-1', 'down', 'http://127.0.0.1:61105/metrics', 3],
    ['worker-2', 'down', 'http://127.0.0.1:61107/metrics', 1],
  ]);
  assert.deepEqual(asked, ['failed http://127.0.0.1:61000 with header']);
  assert.equal(r.queueExporter!.up, false, 'not registered = not up');
  assert.equal(r.capacity, 0, 'no worker answers');
});

const pod = (name: string, component: string, ready: boolean, ip: string) => ({
  metadata: { name, labels: { 'app.kubernetes.io/name': 'digdag', 'app.kubernetes.io/component': component } },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});

function kubeRunner(config: Config) {
  return new RecordingRunner((argv) => {
    if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
    if (argv.includes('pods')) {
      return { stdout: JSON.stringify({ items: [pod('digdag-ui-a', 'ui', true, '10.0.0.1'), pod('digdag-worker-b', 'worker', true, '10.0.0.2'), pod('digdag-worker-c', 'worker', false, '10.0.0.3'), pod('digdag-postgres-0', 'postgres', true, '10.0.0.9'), pod('digdag-queue-exporter-x', 'queue-exporter', true, '10.0.0.7')] }) };
    }
    if (argv.includes(STATUS_SQL)) return { stdout: JSON.stringify({ waiting: 2, running: 3, attempts_running: 1, agents: [{ agent: '7@digdag-worker-b', tasks: 3 }] }) };
    return undefined;
  });
}

test('Kubernetes gathering: pods by label, psql through kubectl exec on digdag-postgres-0, pod metrics URLs, agent ids mapped to pods', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  ensureSecrets(config);
  const r = kubeRunner(config);
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  const K = `kubectl --context ${config.k8s.context} -n ${config.k8s.namespace}`;
  assert.deepEqual(r.commands(), [
    `${K} version --request-timeout=10s -o json`,
    `${K} get pods -l app.kubernetes.io/name=digdag -o json`,
    `${K} exec digdag-postgres-0 -c postgres -- psql -X -At -U postgres -d digdag -c ${STATUS_SQL}`,
  ]);
  assert.deepEqual(report.processes.map((p) => [p.name, p.answers, p.metricsUrl, p.tasksRunning]), [
    ['digdag-ui-a', true, 'http://10.0.0.1:9404/metrics', undefined],
    ['digdag-worker-b', true, 'http://10.0.0.2:9404/metrics', 3],
    ['digdag-worker-c', false, 'http://10.0.0.3:9404/metrics', 0],
  ]);
  assert.deepEqual(report.queueExporter, { url: 'http://10.0.0.7:9187/metrics', up: true });
  assert.deepEqual(report.queue, { waiting: 2, running: 3 });
  assert.equal(report.capacity, config.agent.maxTaskThreads, 'one ready worker');
  assert.deepEqual(report.agents, [{ agent: '7@digdag-worker-b', process: 'digdag-worker-b', tasks: 3 }]);
});

test('Kubernetes with DATABASE_URL: psql straight to that server, the password in the environment only', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', DATABASE_URL: 'postgresql://dd:pw-secret-123@10.1.2.3:6432/dd_db' });
  ensureSecrets(config);
  const r = kubeRunner(config);
  await kubeStatus(testCtx(config, r), async () => [], NOW);
  const psql = r.calls.find((c) => c.argv.includes(STATUS_SQL))!;
  assert.deepEqual(psql.argv.slice(1, 13), ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', '10.1.2.3', '-p', '6432', '-U', 'dd', '-d', 'dd_db']);
  assert.doesNotMatch(r.commands().join('\n'), /pw-secret-123/);
});

test('status flags: --json, --watch, --interval; the rest goes to the common parser', () => {
  assert.deepEqual(statusFlags(['--json', '--target', 'local', '--watch', '--interval', '5']), { json: true, watch: true, intervalMs: 5000, rest: ['--target', 'local'] });
  assert.throws(() => statusFlags(['--interval=0']), /expected seconds/);
});
