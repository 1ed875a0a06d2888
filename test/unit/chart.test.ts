// The Helm chart: lint --strict, `helm template` under several value sets, every object
// schema-validated, and properties byte-for-byte equal to the shared generator's.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import { isValidEncryptionKey } from '../../lib/credentials.ts';
import type { KubeObject } from '../../lib/kube/render.ts';
import { loadRuleGroups, POD_METRICS, podMetricsJvmArgs } from '../../lib/metrics.ts';
import { LAYOUT_ROLES, LAYOUTS, holdsApiPassword, roleFlags, taskRole } from '../../lib/roles.ts';
import { QUEUE_DEPTH_SQL } from '../../lib/scaling.ts';
import { parseProperties, serverProperties } from '../../lib/properties.ts';
import { valuesFromConfig, variablesIn } from '../../lib/kube/values.ts';
import { CHART, helmTemplate, podProperties } from '../helpers/chart.ts';
import { testConfig } from '../helpers/fixtures.ts';
import { helmBin, validateStrictly } from '../helpers/tools.ts';

const helm = helmBin();
const template = helmTemplate;
const find = (objs: KubeObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};

test('helm lint --strict passes', () => {
  const r = spawnSync(helm, ['lint', '--strict', CHART], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

const VALUE_SETS: Record<string, string[]> = {
  defaults: [],
  'split layout': ['layout=split'],
  'KEDA + Cloud SQL + GCS logs + Workload Identity': [
    'layout=split', 'autoscaling.mode=keda', 'database.external.enabled=true', 'database.external.host=10.1.2.3', 'logs.server=gcs', 'logs.gcsBucket=my-logs',
    'gcp.project=my-project', 'gcp.workloadIdentityServiceAccount=digdag@my-project.iam.gserviceaccount.com', 'roles.agent.replicas=3',
  ],
  'HPA + existing Secret + no ingress': ['autoscaling.mode=hpa', 'roles.worker.replicas=3', 'secrets.existingSecret=my-secret', 'auth.existingSecret=my-api', 'ingress.enabled=false', 'networkPolicy.enabled=false'],
  'no auth, no spread': ['auth.mode=none', 'topologySpread.enabled=false'],
  'Patroni, 3 members': ['postgres.members=3'],
  'edge basic auth, own certificate, namespace': ['edgeAuth.mode=nginx-basic', 'ingress.tls.mode=existingSecret', 'ingress.host=digdag.example.com', 'namespace.create=true'],
};

for (const [name, set] of Object.entries(VALUE_SETS)) {
  test(`helm template (${name}) renders objects that validate against their schemas`, async () => {
    const r = template(set);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.objects.length >= 12);
    assert.deepEqual(await validateStrictly(r.objects), []);
  });
}

test('the chart\'s default values are the toolkit\'s default config: the same properties', () => {
  const cm = find(template().objects, 'ConfigMap', 'digdag-config');
  const files = podProperties(testConfig({ DIGDAG_HA_TARGET: 'minikube' }));
  for (const [file, text] of Object.entries(files)) assert.equal(cm.data![file], text, file);
});

test('WORKFLOW_MAX_TASKS reaches executor.task_max_run on the local target and in the chart alike; the chart refuses a bad one', () => {
  const local = testConfig({ WORKFLOW_MAX_TASKS: '2000' });
  for (const role of ['ui', 'worker', 'scheduler'] as const) {
    const props = parseProperties(serverProperties(local, role, { bind: '127.0.0.1', port: 1, jmxPort: 3, dbHost: '127.0.0.1', dbPort: 2, dbName: 'd', dbUser: 'u' }));
    assert.equal(props.get('executor.task_max_run'), '2000', `local ${role}`);
  }
  assert.equal(parseProperties(serverProperties(testConfig({}), 'worker', { bind: '127.0.0.1', port: 1, jmxPort: 3, dbHost: 'h', dbPort: 2, dbName: 'd', dbUser: 'u' })).get('executor.task_max_run'), '1000', 'Digdag\'s default, explicit');
  const kube = testConfig({ DIGDAG_HA_TARGET: 'minikube', WORKFLOW_MAX_TASKS: '2000' });
  assert.deepEqual(valuesFromConfig(kube).executor, { taskMaxRun: 2000, pollMillis: 500 });
  const cm = find(template(['executor.taskMaxRun=2000']).objects, 'ConfigMap', 'digdag-config');
  const files = podProperties(kube);
  for (const [file, text] of Object.entries(files)) assert.equal(cm.data![file], text, file);
  assert.match(cm.data!['worker.properties']!, /^executor\.task_max_run = 2000$/m);
  for (const bad of ['executor.taskMaxRun=0', 'executor.taskMaxRun=many']) {
    const r = template([bad]);
    assert.notEqual(r.status, 0, bad);
    assert.match(r.stderr, /taskMaxRun/, bad);
  }
  assert.deepEqual(variablesIn('executor.taskMaxRun: Must be greater than or equal to 10'), ['executor.taskMaxRun = WORKFLOW_MAX_TASKS'], 'a refusal names the variable');
});

test('the chart and the generator agree on GCS logs and an external database too', () => {
  const cm = find(template(VALUE_SETS['KEDA + Cloud SQL + GCS logs + Workload Identity']!).objects, 'ConfigMap', 'digdag-config');
  const files = podProperties(testConfig({ DIGDAG_HA_TARGET: 'minikube', DATABASE_URL: 'postgresql://digdag:x@10.1.2.3:5432/digdag', GCS_LOG_BUCKET: 'my-logs' }));
  assert.equal(cm.data!['agent.properties'], files['agent.properties']);
  assert.equal(cm.data!['migrate.properties'], files['migrate.properties']);
});

for (const layout of LAYOUTS) test(`layout ${layout}: role Deployments run the same roles and flags as the local processes (lib/roles.ts)`, () => {
  const objs = template([`layout=${layout}`]).objects;
  assert.deepEqual(objs.filter((o) => o.kind === 'Deployment').map((o) => o.metadata.labels!['app.kubernetes.io/component']), [...LAYOUT_ROLES[layout]]);
  for (const role of LAYOUT_ROLES[layout]) {
    const c = find(objs, 'Deployment', `digdag-${role}`).spec.template.spec.containers[0];
    assert.deepEqual(c.args, ['server', ...roleFlags(layout, role)], role);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  }
});

test('secrets are generated once (kept on upgrade) or taken from existingSecret', () => {
  const generated = find(template().objects, 'Secret', 'digdag-secrets');
  assert.deepEqual(Object.keys(generated.data!).sort(), ['db-password', 'encryption-key', 'postgres-password', 'secret.properties']);
  assert.ok(isValidEncryptionKey(Buffer.from(generated.data!['encryption-key']!, 'base64').toString()), 'digdag.secret-encryption-key is base64 of 16 bytes');
  assert.match(Buffer.from(generated.data!['secret.properties']!, 'base64').toString(), /^database\.password = \S{32}\ndigdag\.secret-encryption-key = \S{22}==\n$/);
  assert.equal(generated.metadata.annotations!['helm.sh/resource-policy'], 'keep');
  const existing = template(VALUE_SETS['HPA + existing Secret + no ingress']!).objects;
  assert.ok(!existing.some((o) => o.kind === 'Secret'), 'both existingSecrets: no Secret rendered');
  assert.equal(find(existing, 'Deployment', 'digdag-worker').spec.template.spec.volumes.find((v: { name: string }) => v.name === 'secret').secret.secretName, 'my-secret');
  assert.ok(!existing.some((o) => o.kind === 'Ingress' || o.kind === 'NetworkPolicy'));
});

test('auth: API credentials generated once or from auth.existingSecret; password only on the UI; authenticated readiness; spread', () => {
  for (const layout of LAYOUTS) {
    const objs = template([`layout=${layout}`]).objects;
    const api = find(objs, 'Secret', 'digdag-api-credentials');
    assert.equal(Buffer.from(api.data!.username!, 'base64').toString(), 'digdag');
    assert.match(Buffer.from(api.data!.password!, 'base64').toString(), /^\S{32}$/);
    assert.equal(api.metadata.annotations!['helm.sh/resource-policy'], 'keep');
    assert.equal(find(objs, 'ConfigMap', 'digdag-env').data!.DIGDAG_AUTH, 'basic');
    for (const role of LAYOUT_ROLES[layout]) {
      const spec = find(objs, 'Deployment', `digdag-${role}`).spec.template.spec;
      const vol = spec.volumes.find((v: { name: string }) => v.name === 'api-credentials').secret;
      assert.equal(vol.secretName, 'digdag-api-credentials');
      if (holdsApiPassword(role)) assert.equal(vol.items, undefined);
      else assert.deepEqual(vol.items, [{ key: 'username', path: 'username' }], `${role} must not get the password`);
      assert.deepEqual(spec.containers[0].readinessProbe.exec.command, ['/usr/local/bin/digdag-entrypoint', 'probe']);
      assert.deepEqual(spec.topologySpreadConstraints.map((c: { topologyKey: string }) => c.topologyKey), ['topology.kubernetes.io/zone', 'kubernetes.io/hostname']);
      assert.equal(spec.automountServiceAccountToken, false);
    }
  }
  const existing = template(VALUE_SETS['HPA + existing Secret + no ingress']!).objects;
  assert.equal(find(existing, 'Deployment', 'digdag-ui').spec.template.spec.volumes.find((v: { name: string }) => v.name === 'api-credentials').secret.secretName, 'my-api');
  const none = template(VALUE_SETS['no auth, no spread']!).objects;
  assert.ok(!none.some((o) => o.kind === 'Secret' && o.metadata.name === 'digdag-api-credentials'));
  assert.equal(find(none, 'ConfigMap', 'digdag-env').data!.DIGDAG_AUTH, 'none');
  assert.equal(find(none, 'Deployment', 'digdag-ui').spec.template.spec.topologySpreadConstraints, undefined);
  assert.match(template(['auth.mode=open']).stderr, /auth.mode must be (basic or none|one of the following: "basic", "none")/);
});

test('KEDA: the tested queue query, target = threads, bounds from values', () => {
  const objs = template(VALUE_SETS['KEDA + Cloud SQL + GCS logs + Workload Identity']!).objects;
  const so = find(objs, 'ScaledObject', 'digdag-autoscaler');
  assert.equal(so.spec.scaleTargetRef.name, 'digdag-agent');
  assert.equal(so.spec.triggers[0].metadata.query, QUEUE_DEPTH_SQL);
  assert.equal(so.spec.triggers[0].metadata.targetQueryValue, '4');
  assert.equal(so.spec.triggers[0].metadata.host, '10.1.2.3');
  assert.equal(so.spec.minReplicaCount, 3);
  assert.equal(find(objs, 'Deployment', 'digdag-agent').spec.replicas, undefined, 'KEDA owns the agent count');
  assert.ok(!objs.some((o) => o.kind === 'StatefulSet'), 'external DB: no in-cluster PostgreSQL');
  const hpa = template(VALUE_SETS['HPA + existing Secret + no ingress']!).objects;
  const h = find(hpa, 'HorizontalPodAutoscaler', 'digdag-autoscaler');
  assert.equal(h.spec.scaleTargetRef.name, `digdag-${taskRole('worker')}`);
  assert.equal(h.spec.minReplicas, 3);
});

test('bad values fail the render with the reason', () => {
  const noWorkflow = template(['layout=split', 'roles.workflow.replicas=0']);
  assert.notEqual(noWorkflow.status, 0);
  assert.match(noWorkflow.stderr, /roles.workflow.replicas must be at least 1/);
  assert.match(template(['roles.worker.replicas=0']).stderr, /roles.worker.replicas must be at least 1/);
  assert.match(template(['layout=both']).stderr, /layout must be (worker or split|one of the following: "worker", "split")/);
  const retention = template(['agent.lockRetentionTime=20']);
  assert.match(retention.stderr, /lockRetentionTime must be at least 3 x agent.heartbeatInterval/);
  assert.match(template(['autoscaling.mode=magic']).stderr, /autoscaling.mode must be (none, keda or hpa|one of the following: "none", "keda", "hpa")/);
  assert.match(template(['logs.server=gcs']).stderr, /logs.gcsBucket is required/);
  assert.match(template(['roles.ui.replicas=0']).stderr, /roles.ui.replicas must be at least 1: the UI Service and the Ingress would have no pods/);
  assert.match(template(['autoscaling.mode=keda', 'roles.worker.replicas=5', 'autoscaling.maxReplicas=3']).stderr, /autoscaling.maxReplicas=3 is below roles.worker.replicas=5/);
  assert.match(template(['layout=split', 'autoscaling.mode=hpa', 'roles.agent.replicas=5', 'autoscaling.maxReplicas=3']).stderr, /autoscaling.maxReplicas=3 is below roles.agent.replicas=5/);
  assert.equal(template(['roles.worker.replicas=12', 'autoscaling.maxReplicas=3']).status, 0, 'autoscaling off: no bound to check');
});

test('metrics in the chart: every role pod runs the agent with its port, config and annotations; the Operator objects and the queue exporter on request, valid, same rules as monitoring/', async () => {
  const { objects, stderr } = template(['metrics.podMonitor.enabled=true', 'metrics.prometheusRule.enabled=true', 'metrics.queueExporter.enabled=true', 'metrics.queueExporter.image=mirror.example.com/pg-exp:v0.11.1']);
  assert.ok(objects.length, stderr);
  assert.deepEqual(await validateStrictly(objects), []);
  for (const role of LAYOUT_ROLES.worker) {
    const d = find(objects, 'Deployment', `digdag-${role}`);
    const c = d.spec.template.spec.containers[0];
    assert.ok(c.env.find((e: { name: string }) => e.name === 'JAVA_OPTS').value.endsWith(podMetricsJvmArgs().join(' ')), role);
    assert.ok(c.ports.some((p: { name: string; containerPort: number }) => p.name === 'metrics' && p.containerPort === POD_METRICS.port));
    assert.equal(d.spec.template.metadata.annotations['prometheus.io/port'], String(POD_METRICS.port));
  }
  assert.deepEqual(find(objects, 'PrometheusRule', 'digdag').spec.groups, loadRuleGroups());
  assert.equal(find(objects, 'Deployment', 'digdag-queue-exporter').spec.template.spec.containers[0].image, 'mirror.example.com/pg-exp:v0.11.1');
  assert.match(find(objects, 'ConfigMap', 'digdag-jmx-exporter').data!['config.yaml']!, /digdag_executor_loops_total/);
  const plain = template([]).objects;
  assert.ok(!plain.some((o) => o.apiVersion.startsWith('monitoring.coreos.com/') || o.metadata.name === 'digdag-queue-exporter'), 'off by default');
});

test('the chart bootstraps its own database: bootstrap-db runs sql/*.sql (kept equal) as the superuser, passwords from the Secret, not argv', () => {
  const sql = fs.readdirSync(path.join(ROOT, 'sql')).filter((f) => f.endsWith('.sql')).sort().map((f) => fs.readFileSync(path.join(ROOT, 'sql', f), 'utf8')).join('');
  const bootstrap = fs.readFileSync(path.join(CHART, 'files', 'bootstrap.sql'), 'utf8');
  assert.ok(bootstrap.endsWith(sql), 'files/bootstrap.sql must be sql/*.sql after its header (regenerate it)');
  assert.match(bootstrap, /^\\getenv db_password DB_PASSWORD$/m);
  const { objects } = template();
  const job = find(objects, 'Job', 'digdag-migrate-1');
  const init = job.spec.template.spec.initContainers[0];
  assert.equal(init.name, 'bootstrap-db');
  assert.equal(init.image, find(objects, 'StatefulSet', 'digdag-postgres').spec.template.spec.containers[0].image);
  assert.deepEqual(init.env.filter((e: { valueFrom?: unknown }) => e.valueFrom).map((e: { name: string }) => e.name), ['PGPASSWORD', 'DB_PASSWORD']);
  assert.ok(!init.command.join(' ').includes('password'));
  assert.equal(find(objects, 'ConfigMap', 'digdag-bootstrap-sql').data!['bootstrap.sql'], bootstrap);
  const external = template(['database.external.enabled=true', 'database.external.host=10.1.2.3']).objects;
  assert.equal(external.find((o) => o.kind === 'Job')!.spec.template.spec.initContainers, undefined, 'an external database is the user\'s to prepare');
});

test('values.schema.json describes every values key and rejects typos and bad enums; postgres image and pull policy are values', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(CHART, 'values.schema.json'), 'utf8'));
  const values = parseYaml(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const walk = (v: Record<string, unknown>, s: { properties?: Record<string, unknown> }, at: string) => {
    for (const [k, x] of Object.entries(v)) {
      const sub = s.properties?.[k] as { properties?: Record<string, unknown>; additionalProperties?: unknown } | undefined;
      assert.ok(sub, `values.schema.json lacks ${at}${k}`);
      // A map (podLabels: any key, schema in additionalProperties) has no keys to describe.
      const isMap = typeof sub.additionalProperties === 'object';
      if (x && typeof x === 'object' && !Array.isArray(x) && !k.endsWith('resources') && !isMap) walk(x as Record<string, unknown>, sub, `${at}${k}.`);
    }
  };
  walk(values, schema, '');
  assert.match(template(['roles.ui.replica=2']).stderr, /Additional property replica is not allowed/);
  assert.match(template(['image.pullPolicy=Sometimes']).stderr, /pullPolicy/);
  const pg = find(template(['postgres.image=mirror.example.com/postgres:15', 'postgres.pullPolicy=Never']).objects, 'StatefulSet', 'digdag-postgres').spec.template.spec.containers[0];
  assert.equal(pg.image, 'mirror.example.com/postgres:15');
  assert.equal(pg.imagePullPolicy, 'Never');
});

test('helm test: an authenticated API call through the UI Service, credentials from a file', () => {
  const pod = find(template().objects, 'Pod', 'dd-api-test');
  assert.equal(pod.metadata.annotations!['helm.sh/hook'], 'test');
  const script = pod.spec.containers[0].args[0] as string;
  assert.match(script, /curl -fsS[^\n]*-K \/tmp\/curlrc[^\n]*http:\/\/digdag-ui:65432\/api\//);
  assert.ok(pod.spec.volumes.some((v: { secret?: { secretName: string } }) => v.secret?.secretName === 'digdag-api-credentials'));
});

test('KEDA settings: polling, cooldown and scale-in pace from values; the in-cluster database by its full name; zero refused', () => {
  const objs = template(['autoscaling.mode=keda', 'roles.worker.replicas=1', 'autoscaling.maxReplicas=3', 'autoscaling.pollingInterval=5', 'autoscaling.cooldownPeriod=30', 'autoscaling.scaleDownPeriod=10']).objects;
  const so = find(objs, 'ScaledObject', 'digdag-autoscaler');
  assert.equal(so.spec.pollingInterval, 5);
  assert.equal(so.spec.cooldownPeriod, 30);
  assert.equal(so.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds, 30);
  assert.deepEqual(so.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.policies, [{ type: 'Pods', value: 1, periodSeconds: 10 }]);
  assert.equal(so.spec.minReplicaCount, 1);
  assert.equal(so.spec.maxReplicaCount, 3);
  // KEDA's operator resolves the name from its own namespace.
  assert.equal(so.spec.triggers[0].metadata.host, 'digdag-postgres.digdag.svc.cluster.local');
  for (const bad of ['autoscaling.pollingInterval=0', 'autoscaling.cooldownPeriod=0', 'autoscaling.scaleDownPeriod=0', 'agent.maxTaskThreads=0']) {
    const r = template(['autoscaling.mode=keda', bad]);
    assert.notEqual(r.status, 0, bad);
    assert.match(r.stderr, /must be greater than or equal to 1/i, bad);
  }
});

test('image.buildId (build-image records the loaded image\'s ID) rolls the Digdag pods when an image is rebuilt under the same tag; nothing without it', () => {
  const id = `sha256:${'c'.repeat(64)}`;
  const annotations = (set: string[]) => {
    const r = template(set);
    assert.equal(r.status, 0, r.stderr);
    return r.objects.filter((o) => o.kind === 'Deployment').map((d) => (d as unknown as { spec: { template: { metadata: { annotations?: Record<string, string> } } } }).spec.template.metadata.annotations ?? {});
  };
  const withId = annotations([`image.buildId=${id}`]);
  assert.ok(withId.length >= 3 && withId.every((a) => a['digdag-ha/image-build'] === id), JSON.stringify(withId));
  assert.ok(annotations([]).every((a) => !('digdag-ha/image-build' in a)), 'the default render has no such annotation');
  const bad = template(['image.buildId=latest']);
  assert.notEqual(bad.status, 0, 'not an image ID: refused by the values schema');
});
