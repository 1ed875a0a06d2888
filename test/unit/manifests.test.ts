// The toolkit's rendering (chart/digdag-ha through `helm template` with the config's values) under
// several configs: every object validated against the Kubernetes (and KEDA) schemas, the roles and
// their flags, and the properties the pods get are the ones the local target runs with.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import type { Config } from '../../lib/config.ts';
import { renderManifests, type KubeObject } from '../../lib/kube/render.ts';
import { PLACEMENT_KEYS, parseProperties } from '../../lib/properties.ts';
import { LAYOUT_ROLES, LAYOUTS, roleFlags, taskRole } from '../../lib/roles.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { QUEUE_DEPTH_SQL } from '../../lib/scaling.ts';
import { validateObjects } from '../../lib/schema.ts';
import { javaFlags } from '../../lib/digdag.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { writeRuntime } from '../../lib/digdag.ts';
import { planLocal } from '../../lib/local/apply.ts';
import { POD_METRICS, podMetricsJvmArgs } from '../../lib/metrics.ts';
import { POSTGRES_EXPORTER_IMAGE } from '../../lib/versions.ts';
import { AGENT_POLL_ENV, EXECUTOR_POLL_ENV, patchesEnv } from '../../lib/digdag-patches.ts';
import { podProperties } from '../helpers/chart.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';
import { validateStrictly } from '../helpers/tools.ts';

const runner = new ShellRunner(false, () => {});
const render = async (vars: Record<string, string>) => (await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars }), runner)).objects;
const find = (objs: KubeObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name.startsWith(name));
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};

const CONFIGS: Record<string, Record<string, string>> = {
  'minikube defaults': {},
  'split layout': { DIGDAG_HA_LAYOUT: 'split' },
  'gke, KEDA, Workload Identity, 4 agents': {
    DIGDAG_HA_TARGET: 'gke', DIGDAG_HA_LAYOUT: 'split', IMAGE: 'asia-northeast1-docker.pkg.dev/p/r/digdag-ha:0.10.5.1', AGENT_AUTOSCALING: 'keda', AGENT_REPLICAS: '4',
    AGENT_MAX_REPLICAS: '12', GCP_SERVICE_ACCOUNT: 'digdag@my-project.iam.gserviceaccount.com', GCP_PROJECT: 'my-project', GCS_LOG_BUCKET: 'my-logs', K8S_NAMESPACE: 'wf',
  },
  'gke, KEDA on workers': { DIGDAG_HA_TARGET: 'gke', IMAGE: 'reg.example.com/p/digdag-ha:1', AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '3', AGENT_MAX_REPLICAS: '8' },
  'Cloud SQL via DATABASE_URL, CPU HPA': { DATABASE_URL: 'postgresql://digdag:pw-secret-123@10.1.2.3:5432/digdag_db', AGENT_AUTOSCALING: 'hpa', INGRESS_HOST: 'digdag.example.com' },
};

for (const [name, vars] of Object.entries(CONFIGS)) {
  test(`${name}: every rendered object validates against its schema`, async () => {
    const objs = await render(vars);
    assert.ok(objs.length >= 12, `${objs.length} objects`);
    assert.deepEqual(await validateStrictly(objs), []);
    assert.ok(!objs.some((o) => o.kind === 'Secret'), 'secrets are never rendered into manifests');
    for (const o of objs.filter((x) => x.kind === 'ConfigMap')) {
      assert.doesNotMatch(JSON.stringify(o.data), /pw-secret-123|database\.password|encryption-key =/, `no secret in ConfigMap ${o.metadata.name}`);
    }
  });
}

/** A rendered Deployment to break on purpose. */
const aDeployment = async () => structuredClone(find(await render({ DIGDAG_HA_LAYOUT: 'split' }), 'Deployment', 'digdag-agent'));

test('the strict validator catches what the models let through: an unknown field', async () => {
  const dep = await aDeployment();
  dep!.spec.template.spec.containers[0].imagee = 'typo';
  dep!.spec.template.spec.securityContext.runAsNonroot = true;
  const errors = await validateStrictly([dep!]);
  assert.ok(errors.some((e) => /must NOT have additional properties \(imagee\)/.test(e)), errors.join('\n'));
  assert.ok(errors.some((e) => /\(runAsNonroot\)/.test(e)), errors.join('\n'));
});

test('the validator is not a rubber stamp: a broken object is reported', async () => {
  const dep = await aDeployment();
  dep!.spec.template.spec.containers[0].ports[0].containerPort = 'http';
  const errors = await validateObjects([dep!, { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }]);
  assert.equal(errors.length, 2);
  assert.match(errors[0]!.message, /containerPort must be integer/);
  assert.match(errors[1]!.message, /no schema known for apiVersion example.com\/v1/);
});

for (const layout of LAYOUTS) test(`layout ${layout}: each role Deployment runs its flags, probes, ports and security settings; no other role runs`, async () => {
  const objs = await render({ DIGDAG_HA_LAYOUT: layout, UI_REPLICAS: '2', WORKFLOW_REPLICAS: '2', AGENT_REPLICAS: '3', WORKER_REPLICAS: '4', AGENT_TERMINATION_GRACE_SECONDS: '1800' });
  assert.deepEqual(objs.filter((o) => o.kind === 'Deployment').map((o) => o.metadata.labels!['app.kubernetes.io/component']).sort(), [...LAYOUT_ROLES[layout]].sort());
  for (const role of LAYOUT_ROLES[layout]) {
    const d = find(objs, 'Deployment', `digdag-${role}`);
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    assert.deepEqual(c.args, ['server', ...roleFlags(layout, role)], `${role} args`);
    assert.equal(d.spec.replicas, { ui: 2, workflow: 2, scheduler: 1, agent: 3, worker: 4 }[role]);
    assert.equal(c.env.find((e: { name: string }) => e.name === 'DIGDAG_ROLE').value, role);
    assert.equal(c.startupProbe.httpGet.path, '/api/version');
    assert.equal(c.livenessProbe.httpGet.path, '/api/version');
    // Authenticated database round trip through the entrypoint (docker.test.ts runs it).
    assert.deepEqual(c.readinessProbe.exec.command, ['/usr/local/bin/digdag-entrypoint', 'probe']);
    assert.deepEqual(c.ports, [{ name: 'http', containerPort: 65432 }, { name: 'metrics', containerPort: POD_METRICS.port }]);
    // Metrics: the agent's flags after the heap, its config mounted, annotations for scraping.
    const javaOpts = c.env.find((e: { name: string }) => e.name === 'JAVA_OPTS').value as string;
    assert.ok(javaOpts.endsWith(` ${podMetricsJvmArgs().join(' ')}`), `${role} JAVA_OPTS: ${javaOpts}`);
    assert.ok(!pod.initContainers[0].env.find((e: { name: string }) => e.name === 'JAVA_OPTS').value.includes('javaagent'), 'the init container runs no agent');
    assert.equal(c.volumeMounts.find((m: { name: string }) => m.name === 'metrics-config').mountPath, path.dirname(POD_METRICS.config));
    assert.match(pod.volumes.find((v: { name: string }) => v.name === 'metrics-config').configMap.name, /^digdag-jmx-exporter/);
    const { 'checksum/config': checksum, ...scrape } = d.spec.template.metadata.annotations;
    assert.deepEqual(scrape, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(POD_METRICS.port), 'prometheus.io/path': '/metrics' });
    assert.match(checksum, /^[0-9a-f]{64}$/, 'a changed configuration rolls the pods');
    assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(pod.initContainers[0].args[0], 'wait-migrated', 'roles wait for the migration');
    assert.ok(!JSON.stringify(pod).includes('DIGDAG_CONFIG'), 'secrets do not go through the environment');
    assert.equal(find(objs, 'PodDisruptionBudget', `digdag-${role}`).spec.maxUnavailable, 1);
  }
  assert.equal(find(objs, 'Deployment', `digdag-${taskRole(layout)}`).spec.template.spec.terminationGracePeriodSeconds, 1800);
});

test('Service, Ingress and container agree on port 65432 (the seed did not)', async () => {
  const objs = await render({});
  const svc = find(objs, 'Service', 'digdag-ui');
  assert.deepEqual(svc.spec.ports, [{ name: 'http', port: 65432, targetPort: 'http' }]);
  const ing = find(objs, 'Ingress', 'digdag');
  assert.equal(ing.spec.rules[0].http.paths[0].backend.service.port.number, 65432);
  assert.equal(ing.spec.rules[0].http.paths[0].backend.service.name, 'digdag-ui');
  assert.equal(ing.metadata.annotations!['nginx.ingress.kubernetes.io/affinity'], 'cookie');
  const ui = find(objs, 'Deployment', 'digdag-ui');
  assert.equal(ui.spec.template.metadata.labels['digdag-ha/api'], svc.spec.selector['digdag-ha/api']);
});

for (const layout of LAYOUTS) test(`layout ${layout}: only Digdag pods reach PostgreSQL; the migration Job and the roles are its clients`, async () => {
  const objs = await render({ DIGDAG_HA_LAYOUT: layout });
  const np = find(objs, 'NetworkPolicy', 'digdag-postgres');
  const admitted = (labels: Record<string, string>) => Object.entries(np.spec.ingress[0].from[0].podSelector.matchLabels).every(([k, v]) => labels[k] === v);
  assert.ok(Object.keys(np.spec.ingress[0].from[0].podSelector.matchLabels).includes('digdag-ha/db-client'));
  for (const role of LAYOUT_ROLES[layout]) assert.ok(admitted(find(objs, 'Deployment', `digdag-${role}`).spec.template.metadata.labels), role);
  assert.ok(admitted(find(objs, 'Job', 'digdag-migrate').spec.template.metadata.labels), 'the migration Job');
  const pg = find(objs, 'StatefulSet', 'digdag-postgres').spec.template.spec.containers[0];
  assert.ok(pg.args.includes('idle_in_transaction_session_timeout=600000') && pg.args.includes('tcp_keepalives_idle=60'));
});

for (const [label, vars] of Object.entries<Record<string, string>>({
  defaults: {},
  'GCS logs, an external database, other numbers': { GCS_LOG_BUCKET: 'my-logs', GCS_LOG_PATH: 'p/q', DATABASE_URL: 'postgresql://dd:pw-secret-123@10.1.2.3:6432/dd_db', DB_POOL_SIZE: '2', AGENT_MAX_TASK_THREADS: '3', AGENT_HEARTBEAT_INTERVAL: '4', AGENT_LOCK_RETENTION_TIME: '13', LOCK_EXPIRE_INTERVAL: '7' },
})) test(`the chart's properties are the generator's, byte for byte (${label})`, async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars });
  assert.deepEqual(find((await renderManifests(config, runner)).objects, 'ConfigMap', 'digdag-config').data, podProperties(config));
});

for (const layout of LAYOUTS) test(`layout ${layout}: the ConfigMap carries the generator output; it equals what the local target runs with but for placement`, async () => {
  const vars = { DIGDAG_HA_LAYOUT: layout, AGENT_MAX_TASK_THREADS: '6', DB_POOL_SIZE: '10', AGENT_HEARTBEAT_INTERVAL: '5', AGENT_LOCK_RETENTION_TIME: '30', LOCK_EXPIRE_INTERVAL: '5' };
  const kube = testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars });
  const cm = find((await renderManifests(kube, runner)).objects, 'ConfigMap', 'digdag-config');
  assert.deepEqual(cm.data, podProperties(kube));
  // The local target, same settings: its per-process properties differ only in placement keys.
  const local = testConfig({ ...vars, POSTGRES_PORT: '55998' });
  ensureSecrets(local);
  const jar = path.join(tempDir(), 'digdag.jar');
  fs.writeFileSync(jar, '');
  writeRuntime(local, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  const plan = await planLocal(local, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  for (const role of LAYOUT_ROLES[layout]) {
    const ran = parseProperties(plan.find((p) => p.instance.role === role)!.properties);
    const pod = parseProperties(cm.data![`${role}.properties`]!);
    for (const k of [...ran.keys(), ...pod.keys()]) {
      if ((PLACEMENT_KEYS as readonly string[]).includes(k) || k.startsWith('log-server.')) continue;
      assert.equal(pod.get(k), ran.get(k), `${role}: ${k}`);
    }
    assert.equal(pod.get('server.bind'), '0.0.0.0');
    assert.equal(ran.get('server.bind'), '127.0.0.1');
    assert.equal(pod.get('database.migrate'), 'false');
    assert.equal(pod.get('agent.max-task-threads'), '6');
    for (const p of [pod, ran]) assert.deepEqual([p.get('metrics.enable'), p.get('metrics.jmx.categories')], ['jmx', 'all'], `${role}: metrics on`);
    assert.equal(pod.get('server.jmx.port'), String(POD_METRICS.jmxPort));
  }
  // Every local process: its own metrics and JMX ports, the agent only on `server`.
  const ports = plan.flatMap((p) => [p.port, p.metricsPort, p.jmxPort]);
  assert.equal(new Set(ports).size, ports.length, 'no port shared');
  for (const p of plan) assert.ok(p.argv.includes(`-javaagent:${jar}=127.0.0.1:${p.metricsPort}:${path.join(ROOT, 'monitoring', 'jmx-exporter.yaml')}`) && p.argv.indexOf('server') > p.argv.findIndex((a) => a.startsWith('-javaagent:')));
});

for (const [label, vars] of Object.entries<Record<string, string>>({ 'in-cluster PostgreSQL': {}, 'DATABASE_URL': { DATABASE_URL: 'postgresql://dd:pw-secret-123@10.1.2.3:6432/dd_db' } })) {
  test(`MONITORING=prometheus-operator (${label}): PodMonitor, rules, one queue exporter on the configured DB and image, Prometheus let in; all valid`, async () => {
    const objs = await render({ MONITORING: 'prometheus-operator', QUEUE_EXPORTER_IMAGE: 'mirror.example.com/pg-exp@sha256:' + 'a'.repeat(64), PROMETHEUS_NAMESPACE: 'prom', ...vars });
    assert.deepEqual(await validateStrictly(objs), []);
    for (const kind of ['PodMonitor', 'PrometheusRule']) find(objs, kind, 'digdag');
    const qe = find(objs, 'Deployment', 'digdag-queue-exporter');
    assert.equal(qe.spec.replicas, 1);
    const c = qe.spec.template.spec.containers[0];
    assert.equal(c.image, 'mirror.example.com/pg-exp@sha256:' + 'a'.repeat(64));
    const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    assert.equal(env.DATA_SOURCE_URI, 'DATABASE_URL' in vars ? '10.1.2.3:6432/dd_db?sslmode=disable' : 'digdag-postgres:5432/digdag?sslmode=disable');
    assert.equal(env.DATA_SOURCE_USER, 'DATABASE_URL' in vars ? 'dd' : 'digdag');
    assert.doesNotMatch(JSON.stringify(objs), /pw-secret-123/);
    assert.deepEqual(find(objs, 'NetworkPolicy', 'digdag-metrics-from-prometheus').spec.ingress[0].from[0].namespaceSelector.matchLabels, { 'kubernetes.io/metadata.name': 'prom' });
  });
}

test('MONITORING=none (default): no Operator objects and no queue exporter, the scrape annotations stay', async () => {
  const objs = await render({});
  assert.ok(!objs.some((o) => o.apiVersion.startsWith('monitoring.coreos.com/') || o.metadata.name === 'digdag-queue-exporter'));
  assert.ok(!JSON.stringify(objs).includes(POSTGRES_EXPORTER_IMAGE));
  assert.equal(find(objs, 'Deployment', 'digdag-ui').spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
});

for (const layout of LAYOUTS) test(`layout ${layout}: KEDA scales the task-running role on the tested queue query with target = agent.max-task-threads`, async () => {
  const scaled = `digdag-${taskRole(layout)}`;
  const objs = await render({ DIGDAG_HA_LAYOUT: layout, AGENT_AUTOSCALING: 'keda', AGENT_MAX_TASK_THREADS: '8', AGENT_REPLICAS: '2', WORKER_REPLICAS: '2', AGENT_MAX_REPLICAS: '20' });
  const so = find(objs, 'ScaledObject', 'digdag-autoscaler');
  assert.equal(so.spec.scaleTargetRef.name, scaled);
  const trig = so.spec.triggers[0];
  assert.equal(trig.type, 'postgresql');
  assert.equal(trig.metadata.query, QUEUE_DEPTH_SQL);
  assert.equal(trig.metadata.targetQueryValue, '8');
  assert.equal(so.spec.minReplicaCount, 2);
  assert.equal(so.spec.maxReplicaCount, 20);
  assert.equal(find(objs, 'TriggerAuthentication', 'digdag-postgres').spec.secretTargetRef[0].key, 'db-password');
  assert.equal(find(objs, 'Deployment', scaled).spec.replicas, undefined, 'the autoscaler, not apply, owns the count');
  const hpa = await render({ DIGDAG_HA_LAYOUT: layout, AGENT_AUTOSCALING: 'hpa', AGENT_REPLICAS: '2', WORKER_REPLICAS: '2' });
  assert.equal(find(hpa, 'HorizontalPodAutoscaler', 'digdag-autoscaler').spec.minReplicas, 2);
  assert.equal(find(hpa, 'HorizontalPodAutoscaler', 'digdag-autoscaler').spec.scaleTargetRef.name, scaled);
});

test('an external database removes the in-cluster PostgreSQL and points every role at it', async () => {
  const objs = await render({ DATABASE_URL: 'postgresql://dd:pw-secret-123@10.1.2.3:6432/dd_db' });
  assert.ok(!objs.some((o) => o.metadata.name === 'digdag-postgres' && o.kind !== 'TriggerAuthentication'));
  const cm = find(objs, 'ConfigMap', 'digdag-config');
  const p = parseProperties(cm.data!['workflow.properties']!);
  assert.deepEqual([p.get('database.host'), p.get('database.port'), p.get('database.database'), p.get('database.user')], ['10.1.2.3', '6432', 'dd_db', 'dd']);
});

test('gke: Workload Identity annotation, registry image, namespace applied everywhere', async () => {
  const objs = await render(CONFIGS['gke, KEDA, Workload Identity, 4 agents']!);
  assert.equal(find(objs, 'ServiceAccount', 'digdag').metadata.annotations!['iam.gke.io/gcp-service-account'], 'digdag@my-project.iam.gserviceaccount.com');
  assert.equal(find(objs, 'Deployment', 'digdag-ui').spec.template.spec.containers[0].image, 'asia-northeast1-docker.pkg.dev/p/r/digdag-ha:0.10.5.1');
  assert.ok(objs.filter((o) => o.kind !== 'Namespace').every((o) => o.metadata.namespace === 'wf'));
  assert.equal(find(objs, 'Namespace', 'wf').kind, 'Namespace');
  const agent = parseProperties(find(objs, 'ConfigMap', 'digdag-config').data!['agent.properties']!);
  assert.equal(agent.get('log-server.type'), 'gcs');
  assert.equal(agent.get('log-server.gcs.bucket'), 'my-logs');
  assert.equal(find(objs, 'ConfigMap', 'digdag-env').data!.GCP_PROJECT, 'my-project');
});

test('the agent and executor patches\' waits reach every Digdag pod the way the local target sets them: one setting, one variable each', async () => {
  const vars = { AGENT_POLL_MILLIS: '350', EXECUTOR_POLL_MILLIS: '750' };
  const objs = await render(vars);
  assert.deepEqual(patchesEnv(testConfig({ DIGDAG_HA_TARGET: 'local', ...vars })), { [AGENT_POLL_ENV]: '350', [EXECUTOR_POLL_ENV]: '750' });
  assert.equal(find(objs, 'ConfigMap', 'digdag-env').data![AGENT_POLL_ENV], '350');
  assert.equal(find(objs, 'ConfigMap', 'digdag-env').data![EXECUTOR_POLL_ENV], '750');
  assert.equal(find(await render({}), 'ConfigMap', 'digdag-env').data![EXECUTOR_POLL_ENV], '500', 'the default');
  // Every Digdag server container reads digdag-env.
  for (const d of objs.filter((o) => o.kind === 'Deployment' && o.metadata.name.startsWith('digdag-'))) {
    const c = d.spec.template.spec.containers.find((x: { name: string }) => x.name === 'digdag');
    assert.ok(c?.envFrom?.some((e: { configMapRef?: { name: string } }) => e.configMapRef?.name === 'digdag-env'), d.metadata.name);
  }
  assert.deepEqual(patchesEnv(testConfig({ DIGDAG_HA_TARGET: 'local', ...vars, DIGDAG_PATCHES: 'false' })), {}, 'Digdag as released: nothing to read it');
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'local', AGENT_POLL_MILLIS: '5' }), /AGENT_POLL_MILLIS/);
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'local', EXECUTOR_POLL_MILLIS: '50' }), /EXECUTOR_POLL_MILLIS/);
});
