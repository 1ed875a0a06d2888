// status: the screen rendered from a fixed report, and the data gathering on both targets with the
// recording runner (the exact commands; the database's answer and the HTTP probes stand in).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { kubectl } from '../../lib/kube/kubectl.ts';
import { kubeStatus } from '../../lib/kube/status.ts';
import { localStatus, type Probes } from '../../lib/local/status.ts';
import { psqlBin } from '../../lib/postgres.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { quantity } from '../../lib/kube/autoscaler-status.ts';
import { renderStatus, sampleValue, shortScalingMessage, STATUS_SQL, type StatusReport } from '../../lib/status.ts';
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
  autoscaler: { mode: 'none', role: 'worker', objects: [], min: 2, max: 2, desired: 2, current: 1, ready: 1, note: 'the local target does not autoscale: 2 fixed worker processes (WORKER_REPLICAS=2)' },
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
  assert.match(text, /^AUTOSCALER none — the local target does not autoscale: 2 fixed worker processes \(WORKER_REPLICAS=2\); 1 up, 1 answering$/m);
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
  assert.deepEqual(r.autoscaler, { mode: 'none', role: 'worker', objects: [], min: 2, max: 2, desired: 2, current: 0, ready: 0, note: 'the local target does not autoscale: 2 fixed worker processes (WORKER_REPLICAS=2)' });
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
  assert.deepEqual(report.database, [{ name: 'digdag-postgres-0', role: '-', ready: true, state: 'Running', restarts: 0 }]);
  assert.match(renderStatus(report), /^DATABASE  one PostgreSQL \(not highly available\)\n  digdag-postgres-0 +- +ready$/m);
});

test('Kubernetes with Patroni: each member\'s role and readiness; a member that cannot start says why (its log\'s last failure line), a missing leader is a warning', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  ensureSecrets(config);
  const member = (name: string, role: string | undefined, ready: boolean, container: object) => {
    const p = pod(name, 'postgres', ready, '10.0.0.9');
    return { ...p, metadata: { ...p.metadata, labels: { ...p.metadata.labels, ...(role ? { role } : {}) } }, status: { ...p.status, containerStatuses: [{ name: 'postgres', ...container }] } };
  };
  const pods = [
    member('digdag-postgres-0', 'replica', true, { restartCount: 0, state: { running: {} } }),
    // A full disk: PostgreSQL exits, the container restarts (its previous log says why).
    member('digdag-postgres-1', undefined, false, { restartCount: 4, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 1, reason: 'Error' } } }),
    // A wrong replication password: Patroni keeps running and retrying, the pod never becomes Ready.
    member('digdag-postgres-2', 'replica', false, { restartCount: 0, state: { running: {} } }),
  ];
  const logs: Record<string, string> = {
    'digdag-postgres-1': '2026-12-02 05:00:01 UTC [41] LOG:  starting PostgreSQL 15\n2026-12-02 05:00:01 UTC [41] PANIC:  could not write to file "pg_wal/xlogtemp.41": No space left on device\n2026-12-02 05:00:01 UTC [40] LOG:  database system is shut down',
    'digdag-postgres-2': '2026-12-02 05:00:03,101 INFO: trying to bootstrap from leader\npg_basebackup: error: connection to server failed: FATAL:  password authentication failed for user "replicator"\n2026-12-02 05:00:03,300 ERROR: Error when fetching backup: pg_basebackup exited with code=1',
  };
  const r = new RecordingRunner((argv) => {
    if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
    if (argv.includes('logs')) return { stdout: logs[argv[argv.indexOf('logs') + 1]!] ?? '' };
    if (argv.includes('pods')) return { stdout: JSON.stringify({ items: [pod('digdag-ui-a', 'ui', true, '10.0.0.1'), ...pods] }) };
    if (argv.includes(STATUS_SQL)) return { code: 1, stderr: 'no leader' };
    return undefined;
  });
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  const K = kubectl(config).join(' ');
  assert.ok(r.commands().includes(`${K} logs digdag-postgres-1 -c postgres --tail=40 --previous`), 'the restarted member: its previous container\'s log');
  assert.ok(r.commands().includes(`${K} logs digdag-postgres-2 -c postgres --tail=40`), 'the running one: its current log');
  assert.ok(!r.commands().some((c) => c.includes('logs digdag-postgres-0')), 'a ready member is not asked');
  assert.deepEqual(report.database!.map((m) => [m.name, m.role, m.ready, m.state, m.restarts]), [
    ['digdag-postgres-0', 'replica', true, 'Running', 0],
    ['digdag-postgres-1', 'unknown', false, 'CrashLoopBackOff', 4],
    ['digdag-postgres-2', 'replica', false, 'Running', 0],
  ]);
  assert.equal(report.database![1]!.reason, 'CrashLoopBackOff, last exit 1 (Error): 2026-12-02 05:00:01 UTC [41] PANIC:  could not write to file "pg_wal/xlogtemp.41": No space left on device');
  assert.match(report.database![2]!.reason!, /^Running, not ready: .*ERROR: Error when fetching backup: pg_basebackup exited with code=1$/);
  const text = renderStatus(report);
  assert.match(text, /^DATABASE  Patroni, 3 members$/m);
  assert.match(text, /^  digdag-postgres-1 +unknown +NOT READY +restarts 4 — CrashLoopBackOff, last exit 1 \(Error\): .*No space left on device$/m);
  assert.match(text, /^WARNING: database members not ready: digdag-postgres-1 \(CrashLoopBackOff.*\); digdag-postgres-2 \(Running, not ready: .*\)$/m);
  assert.match(text, /^WARNING: the database has 0 leaders \(expected 1\): writes wait until Patroni elects one$/m);
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

// Answers as KEDA v2.16.1 and Kubernetes 1.31 give them (abridged to the fields status reads and a few around them).
const SELECTOR = '&LabelSelector{MatchLabels:map[string]string{scaledobject.keda.sh/name: digdag-autoscaler,},MatchExpressions:[]LabelSelectorRequirement{},}';
const scaledObject = (min: number, active: boolean) => ({
  apiVersion: 'keda.sh/v1alpha1', kind: 'ScaledObject', metadata: { name: 'digdag-autoscaler', namespace: 'digdag' },
  spec: { minReplicaCount: min, maxReplicaCount: 3, pollingInterval: 5, cooldownPeriod: 30, scaleTargetRef: { name: 'digdag-worker' } },
  status: {
    scaleTargetKind: 'apps/v1.Deployment', hpaName: 'keda-hpa-digdag-autoscaler', externalMetricNames: ['s0-postgresql'], lastActiveTime: '2026-11-25T05:29:55Z',
    conditions: [
      { type: 'Ready', status: 'True', reason: 'ScaledObjectReady', message: 'ScaledObject is defined correctly and is ready for scaling' },
      { type: 'Active', status: active ? 'True' : 'False', reason: active ? 'ScalerActive' : 'ScalerNotActive', message: '' },
      { type: 'Fallback', status: 'False', reason: 'NoFallbackFound', message: '' },
    ],
  },
});
const workerDeployment = (spec: number, replicas: number, ready: number) => ({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'digdag-worker' }, spec: { replicas: spec }, status: { replicas, readyReplicas: ready, availableReplicas: ready } });
const kedaHpa = (desired: number, scalingActive: { status: string; reason: string; message: string }) => ({
  apiVersion: 'autoscaling/v2', kind: 'HorizontalPodAutoscaler', metadata: { name: 'keda-hpa-digdag-autoscaler' },
  spec: { minReplicas: 1, maxReplicas: 3, metrics: [{ type: 'External', external: { metric: { name: 's0-postgresql', selector: { matchLabels: { 'scaledobject.keda.sh/name': 'digdag-autoscaler' } } }, target: { type: 'AverageValue', averageValue: '4' } } }] },
  status: {
    currentReplicas: 2, desiredReplicas: desired, lastScaleTime: '2026-11-25T05:29:40Z',
    currentMetrics: [{ type: 'External', external: { metric: { name: 's0-postgresql', selector: { matchLabels: { 'scaledobject.keda.sh/name': 'digdag-autoscaler' } } }, current: { averageValue: '5500m' } } }],
    conditions: [{ type: 'AbleToScale', status: 'True', reason: 'ReadyForNewScale', message: 'recommended size matches current size' }, { type: 'ScalingActive', ...scalingActive }],
  },
});
const event = (kind: string, name: string, reason: string, message: string, at: string) => ({ apiVersion: 'v1', kind: 'Event', metadata: { name: `${name}.1`, creationTimestamp: at }, involvedObject: { kind, name, namespace: 'digdag' }, reason, message, type: 'Normal', count: 1, firstTimestamp: at, lastTimestamp: at });
const EVENTS = [
  event('ScaledObject', 'digdag-autoscaler', 'KEDAScalersStarted', 'Scaler postgresql is built.', '2026-11-25T05:20:00Z'),
  event('HorizontalPodAutoscaler', 'keda-hpa-digdag-autoscaler', 'SuccessfulRescale', `New size: 2; reason: external metric s0-postgresql(${SELECTOR}) above target`, '2026-11-25T05:29:10Z'),
  event('HorizontalPodAutoscaler', 'keda-hpa-digdag-autoscaler', 'SuccessfulRescale', `New size: 3; reason: external metric s0-postgresql(${SELECTOR}) above target`, '2026-11-25T05:29:40Z'),
  event('Pod', 'digdag-worker-x', 'Killing', 'Stopping container digdag', '2026-11-25T05:29:50Z'),
  event('HorizontalPodAutoscaler', 'some-other-hpa', 'SuccessfulRescale', 'New size: 9; reason: cpu resource utilization above target', '2026-11-25T05:29:59Z'),
];

function kedaRunner(answers: { so?: object; list?: object[]; listErr?: string; events?: object[]; depth?: number }) {
  return new RecordingRunner((argv) => {
    if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
    if (argv.includes('pods')) return { stdout: JSON.stringify({ items: [pod('digdag-ui-a', 'ui', true, '10.0.0.1'), pod('digdag-worker-b', 'worker', true, '10.0.0.2'), pod('digdag-worker-c', 'worker', false, '10.0.0.3')] }) };
    if (argv.includes(STATUS_SQL)) return { stdout: JSON.stringify({ waiting: 8, running: 4, queue_depth: answers.depth ?? 12, attempts_running: 3, agents: [{ agent: '7@digdag-worker-b', tasks: 4 }] }) };
    if (argv.includes('scaledobject')) return answers.so ? { stdout: JSON.stringify(answers.so) } : { code: 1, stderr: 'Error from server (NotFound): scaledobjects.keda.sh "digdag-autoscaler" not found' };
    if (argv.some((a) => a.startsWith('deployment/'))) {
      const items = answers.list ?? [];
      return { code: answers.listErr ? 1 : 0, stdout: items.length === 1 ? JSON.stringify(items[0]) : JSON.stringify({ apiVersion: 'v1', kind: 'List', items }), stderr: answers.listErr ?? '' };
    }
    if (argv.includes('events')) return { stdout: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: answers.events ?? [] }) };
    return undefined;
  });
}

test('Kubernetes with KEDA: the ScaledObject, then its Deployment and HPA in one call, then the Events; desired against current, the queue by KEDA\'s query, the newest scaling step', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '3' });
  ensureSecrets(config);
  const r = kedaRunner({ so: scaledObject(1, true), list: [workerDeployment(3, 3, 2), kedaHpa(3, { status: 'True', reason: 'ValidMetricFound', message: 'the HPA was able to successfully calculate a replica count from external metric s0-postgresql' })], events: EVENTS });
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  const K = `kubectl --context ${config.k8s.context} -n ${config.k8s.namespace}`;
  assert.deepEqual(r.commands().slice(3), [
    `${K} get scaledobject digdag-autoscaler -o json`,
    `${K} get deployment/digdag-worker horizontalpodautoscaler/keda-hpa-digdag-autoscaler -o json`,
    `${K} get events -o json`,
  ]);
  assert.ok(r.calls.every((c) => !c.mutates), 'status changes nothing');
  assert.match(STATUS_SQL, /'queue_depth', \(SELECT count\(\*\) FROM queued_task_locks\)/, 'the very query KEDA runs');
  assert.deepEqual(report.autoscaler, {
    mode: 'keda', role: 'worker', objects: ['ScaledObject/digdag-autoscaler', 'HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler'],
    min: 1, max: 3, desired: 3, current: 3, ready: 2,
    queue: { depth: 12, threadsPerWorker: 4, wants: 3 },
    metric: { name: 's0-postgresql', current: 5.5, target: 4, unit: 'tasks per pod' },
    active: true,
    lastScale: { at: '2026-11-25T05:29:40Z', object: 'HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler', reason: 'SuccessfulRescale', message: `New size: 3; reason: external metric s0-postgresql(${SELECTOR}) above target` },
  });
  assert.deepEqual(report.problems, []);
  const text = renderStatus(report);
  assert.match(text, /^AUTOSCALER keda +workers desired 3 +current 3 +ready 2 +min 1 max 3 +active$/m);
  assert.match(text, /^ {2}objects ScaledObject\/digdag-autoscaler → HorizontalPodAutoscaler\/keda-hpa-digdag-autoscaler$/m);
  assert.match(text, /^ {2}scales on the queue 12 \(waiting \+ running, KEDA's query\) ÷ 4 threads per worker → wants 3; HPA last read 5\.5 per pod \(target 4\)$/m);
  assert.match(text, /^ {2}last scaling 2026-11-25T05:29:40Z +HorizontalPodAutoscaler\/keda-hpa-digdag-autoscaler SuccessfulRescale: New size: 3; reason: external metric s0-postgresql above target$/m);
  assert.equal(JSON.parse(JSON.stringify(report)).autoscaler.queue.wants, 3, 'the same in --json');
});

test('Kubernetes with KEDA at zero (min 0): desired 0, its HPA disabled on purpose is no problem, KEDA\'s own deactivation is the last step', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'keda', AGENT_MAX_REPLICAS: '3' });
  ensureSecrets(config);
  // As recorded on the own cluster (test/integration/suites/keda.ts, run by kube-e2e): KEDA's own steps to and from zero.
  const events = [...EVENTS,
    event('ScaledObject', 'digdag-autoscaler', 'KEDAScaleTargetActivated', 'Scaled apps/v1.Deployment digdag/digdag-worker from 0 to 1, triggered by postgreSQLScaler', '2026-11-25T05:29:45Z'),
    event('ScaledObject', 'digdag-autoscaler', 'KEDAScaleTargetDeactivated', 'Deactivated apps/v1.Deployment digdag/digdag-worker from 1 to 0', '2026-11-25T05:29:58Z')];
  const r = kedaRunner({ so: scaledObject(0, false), list: [workerDeployment(0, 0, 0), kedaHpa(1, { status: 'False', reason: 'ScalingDisabled', message: 'scaling is disabled since the replica count of the target is zero' })], events, depth: 0 });
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  const a = report.autoscaler;
  assert.deepEqual([a.min, a.desired, a.current, a.ready, a.active, a.queue], [0, 0, 0, 0, false, { depth: 0, threadsPerWorker: 4, wants: 0 }]);
  assert.deepEqual(a.lastScale, { at: '2026-11-25T05:29:58Z', object: 'ScaledObject/digdag-autoscaler', reason: 'KEDAScaleTargetDeactivated', message: 'Deactivated apps/v1.Deployment digdag/digdag-worker from 1 to 0' });
  assert.deepEqual(report.problems, []);
  assert.match(renderStatus(report), /workers desired 0 +current 0 +ready 0 +min 0 max 3 +idle$/m);
});

test('Kubernetes with KEDA, broken: a missing ScaledObject and an HPA that cannot read its metric are problem lines; what was read still shows', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'keda' });
  ensureSecrets(config);
  const failing = kedaHpa(2, { status: 'False', reason: 'FailedGetExternalMetric', message: 'the HPA was unable to compute the replica count: unable to get external metric digdag/s0-postgresql' });
  const r = kedaRunner({ list: [workerDeployment(2, 2, 2), { ...failing, status: { ...failing.status, currentMetrics: null, lastScaleTime: undefined } }] });
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  assert.deepEqual(report.problems, [
    'autoscaler: ScaledObject digdag-autoscaler: Error from server (NotFound): scaledobjects.keda.sh "digdag-autoscaler" not found',
    'autoscaler: HorizontalPodAutoscaler keda-hpa-digdag-autoscaler cannot scale (FailedGetExternalMetric: the HPA was unable to compute the replica count: unable to get external metric digdag/s0-postgresql)',
  ]);
  assert.deepEqual([report.autoscaler.objects, report.autoscaler.current, report.autoscaler.metric, report.autoscaler.lastScale], [['HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler'], 2, undefined, undefined]);
  assert.match(renderStatus(report), /last scaling none recorded/);
  // Neither object there at all: kubectl names both; the count is still the Deployment's.
  const gone = await kubeStatus(testCtx(config, kedaRunner({ list: [workerDeployment(2, 2, 1)], listErr: 'Error from server (NotFound): horizontalpodautoscalers.autoscaling "keda-hpa-digdag-autoscaler" not found' })), async () => [], NOW);
  assert.deepEqual([gone.autoscaler.current, gone.autoscaler.ready, gone.autoscaler.desired], [2, 1, 2]);
  assert.match(gone.problems.join('\n'), /deployment digdag-worker, HorizontalPodAutoscaler keda-hpa-digdag-autoscaler: Error from server \(NotFound\)/);
});

test('Kubernetes with the chart\'s CPU HPA (split layout): agents, its own bounds and CPU reading, its rescale Event', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_LAYOUT: 'split', AGENT_AUTOSCALING: 'hpa', AGENT_REPLICAS: '2', AGENT_MAX_REPLICAS: '6' });
  ensureSecrets(config);
  const hpa = {
    apiVersion: 'autoscaling/v2', kind: 'HorizontalPodAutoscaler', metadata: { name: 'digdag-autoscaler' },
    spec: { minReplicas: 2, maxReplicas: 6, metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }] },
    status: { currentReplicas: 4, desiredReplicas: 5, currentMetrics: [{ type: 'Resource', resource: { name: 'cpu', current: { averageUtilization: 91, averageValue: '455m' } } }], conditions: [] },
  };
  const agents = { ...workerDeployment(4, 4, 4), metadata: { name: 'digdag-agent' } };
  const events = [event('HorizontalPodAutoscaler', 'digdag-autoscaler', 'SuccessfulRescale', 'New size: 4; reason: cpu resource utilization (percentage of request) above target', '2026-11-25T05:28:00Z')];
  const r = kedaRunner({ list: [agents, hpa], events });
  const report = await kubeStatus(testCtx(config, r), async () => [], NOW);
  const K = `kubectl --context ${config.k8s.context} -n ${config.k8s.namespace}`;
  assert.deepEqual(r.commands().slice(3), [`${K} get deployment/digdag-agent horizontalpodautoscaler/digdag-autoscaler -o json`, `${K} get events -o json`]);
  const a = report.autoscaler;
  assert.deepEqual([a.mode, a.role, a.min, a.max, a.desired, a.current, a.queue, a.active], ['hpa', 'agent', 2, 6, 5, 4, undefined, undefined]);
  assert.deepEqual(a.metric, { name: 'cpu', current: 91, target: 70, unit: '% CPU' });
  assert.equal(a.lastScale?.reason, 'SuccessfulRescale');
  const text = renderStatus(report);
  assert.match(text, /^AUTOSCALER hpa +agents desired 5 +current 4 +ready 4 +min 2 max 6$/m);
  assert.match(text, /^ {2}scales on cpu: HPA last read 91% CPU \(target 70\)$/m);
});

test('Kubernetes without autoscaling: the fixed count said plainly, no autoscaler call', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  ensureSecrets(config);
  const report = await kubeStatus(testCtx(config, kubeRunner(config)), async () => [], NOW);
  assert.deepEqual(report.autoscaler, { mode: 'none', role: 'worker', objects: [], min: 2, max: 2, desired: 2, current: 2, ready: 1, note: 'AGENT_AUTOSCALING=none: 2 fixed worker pods (WORKER_REPLICAS=2)' });
  assert.match(renderStatus(report), /^AUTOSCALER none — AGENT_AUTOSCALING=none: 2 fixed worker pods \(WORKER_REPLICAS=2\); 2 up, 1 answering$/m);
});

test('quantities and the shortened rescale message', () => {
  assert.deepEqual(['4', '5500m', '1k', '0', 'x'].map(quantity), [4, 5.5, 1000, 0, undefined]);
  assert.equal(shortScalingMessage(`New size: 3; reason: external metric s0-postgresql(${SELECTOR}) above target`), 'New size: 3; reason: external metric s0-postgresql above target');
});

test('status flags: --json, --watch, --interval; the rest goes to the common parser', () => {
  assert.deepEqual(statusFlags(['--json', '--target', 'local', '--watch', '--interval', '5']), { json: true, watch: true, intervalMs: 5000, rest: ['--target', 'local'] });
  assert.throws(() => statusFlags(['--interval=0']), /expected seconds/);
});
