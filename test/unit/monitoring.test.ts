// The metrics configuration and the Kubernetes monitoring objects: properties and JVM args, the
// chart rendered by the toolkit with MONITORING=prometheus-operator, its custom resources validated
// against the Prometheus Operator CRDs (strict), its Deployment against the Kubernetes spec, one rule source.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { crdValidator } from '../../lib/crd-schema.ts';
import { ROOT } from '../../lib/cli.ts';
import { renderManifests, type KubeObject } from '../../lib/kube/render.ts';
import { jmxExporterJarName, loadRuleGroups, metricsJvmArgs, obtainJmxExporter, metricsProperties, monitoringGeneratedFiles, monitoringCacheDir, queueExporterCommand } from '../../lib/metrics.ts';
import { parseProperties } from '../../lib/properties.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { JMX_EXPORTER_VERSION, POSTGRES_EXPORTER_IMAGE } from '../../lib/versions.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';
import { operatorCrds, validateStrictly } from '../helpers/tools.ts';

let rendered: Promise<KubeObject[]> | undefined;
/** The monitoring objects of the toolkit's rendering with MONITORING=prometheus-operator (rendered once). */
function renderComponent(): Promise<KubeObject[]> {
  rendered ??= renderManifests(testConfig({ DIGDAG_HA_TARGET: 'minikube', MONITORING: 'prometheus-operator' }), new ShellRunner(false, () => {}))
    .then(({ objects }) => objects.filter((o) => ['monitoring', 'queue-exporter'].includes(o.metadata.labels?.['app.kubernetes.io/component'] ?? '')));
  return rendered;
}

const find = (objs: KubeObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name.startsWith(name));
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};

test('metrics properties: JMX metrics for every category and the JMX port HikariCP needs', () => {
  const p = parseProperties(metricsProperties(9010).map(([k, v]) => `${k} = ${v}`).join('\n'));
  assert.equal(p.get('metrics.enable'), 'jmx');
  assert.equal(p.get('metrics.jmx.categories'), 'all');
  assert.equal(p.get('server.jmx.port'), '9010');
});

test('JVM args: self-attach allowed and reachable, remote JMX on loopback only, the agent with its port and config', () => {
  assert.deepEqual(metricsJvmArgs({ jar: '/c/jmx.jar', config: '/etc/m/config.yaml', bind: '0.0.0.0', port: 9404 }), [
    '--add-exports', 'jdk.attach/sun.tools.attach=ALL-UNNAMED',
    '-Djdk.attach.allowAttachSelf=true',
    '-Dcom.sun.management.jmxremote.host=127.0.0.1',
    '-javaagent:/c/jmx.jar=0.0.0.0:9404:/etc/m/config.yaml',
  ]);
});

test('the monitoring cache lives outside the repo, under XDG_CACHE_HOME when set', () => {
  assert.equal(monitoringCacheDir({ XDG_CACHE_HOME: '/x/cache' }), '/x/cache/digdag-ha/monitoring');
  assert.ok(!monitoringCacheDir().startsWith(ROOT));
});

test('the chart holds the generator output (one source for rules and exporter configs)', () => {
  for (const [f, text] of Object.entries(monitoringGeneratedFiles())) {
    assert.equal(fs.readFileSync(path.join(ROOT, f), 'utf8'), text, `${f} is stale: run npm run generate`);
  }
});

test('rendered component: PodMonitor and PrometheusRule valid against the Prometheus Operator CRDs, the rest against Kubernetes', async () => {
  const objs = await renderComponent();
  const crd = await crdValidator(operatorCrds());
  const custom = objs.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/'));
  assert.deepEqual(custom.map((o) => o.kind).sort(), ['PodMonitor', 'PrometheusRule']);
  assert.deepEqual(custom.flatMap(crd), []);
  assert.deepEqual(await validateStrictly(objs.filter((o) => !o.apiVersion.startsWith('monitoring.coreos.com/'))), []);
});

test('the CRD validator is strict: unknown fields and wrong types are reported', async () => {
  const crd = await crdValidator(operatorCrds());
  const pm = structuredClone(find(await renderComponent(), 'PodMonitor', 'digdag'));
  pm.spec.podMetricsEndpoints[0].prot = 'metrics';
  pm.spec.podMetricsEndpoints[0].interval = 30;
  const errors = crd(pm);
  assert.ok(errors.some((e) => /\(prot\)/.test(e)), errors.join('\n'));
  assert.ok(errors.some((e) => /interval must be string/.test(e)), errors.join('\n'));
  assert.match(crd({ apiVersion: 'monitoring.coreos.com/v1', kind: 'Widget', metadata: { name: 'w' } })[0]!, /no CRD/);
});

test('PrometheusRule carries exactly the rule groups of monitoring/alerts.yaml', async () => {
  const rule = find(await renderComponent(), 'PrometheusRule', 'digdag');
  assert.deepEqual(rule.spec.groups, loadRuleGroups());
  assert.equal(rule.metadata.namespace, 'digdag');
});

test('PodMonitor scrapes the metrics port of Digdag pods and labels each target with its role', async () => {
  const objs = await renderComponent();
  const pm = find(objs, 'PodMonitor', 'digdag');
  assert.deepEqual(pm.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'digdag', 'app.kubernetes.io/instance': 'digdag' });
  assert.equal(pm.spec.podMetricsEndpoints[0].port, 'metrics');
  assert.deepEqual(pm.spec.podMetricsEndpoints[0].relabelings[0], { sourceLabels: ['__meta_kubernetes_pod_label_app_kubernetes_io_component'], targetLabel: 'role' });
  const qe = find(objs, 'Deployment', 'digdag-queue-exporter').spec.template;
  for (const [k, v] of Object.entries(pm.spec.selector.matchLabels)) assert.equal(qe.metadata.labels[k], v, 'the PodMonitor selects the queue exporter too');
  assert.equal(qe.metadata.labels['app.kubernetes.io/component'], 'queue-exporter', 'role="queue-exporter", as the alerts expect');
  assert.equal(qe.spec.containers[0].ports[0].name, 'metrics');
});

test('queue exporter: one replica, the local flags, password from a file, non-root, read-only', async () => {
  const objs = await renderComponent();
  const d = find(objs, 'Deployment', 'digdag-queue-exporter');
  assert.equal(d.spec.replicas, 1, 'once per cluster');
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  assert.equal(c.image, POSTGRES_EXPORTER_IMAGE);
  const local = queueExporterCommand('/bin/x', { host: 'h', port: 1, database: 'd', user: 'u', passwordFile: '/p' }, ':9187', '/etc/digdag-queue/queries.yaml');
  assert.deepEqual(c.args, local.argv.slice(1));
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  assert.deepEqual(Object.keys(env).sort(), Object.keys(local.env).sort());
  assert.ok(env.DATA_SOURCE_PASS_FILE.startsWith(c.volumeMounts.find((m: { name: string }) => m.name === 'secrets').mountPath));
  assert.ok(!JSON.stringify(c.env).includes('DATA_SOURCE_PASS"'), 'no password in the environment');
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.ok(c.resources.requests.cpu && c.resources.limits.memory && c.readinessProbe && c.livenessProbe);
  assert.equal(d.spec.template.metadata.labels['digdag-ha/db-client'], 'true', 'allowed through the PostgreSQL NetworkPolicy');
  const cms = objs.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name);
  assert.ok(cms.some((n) => n.startsWith('digdag-queue-queries')));
});

test('fetching the JMX agent: Maven with strict checksums, then the pinned sha256; a wrong jar is removed and refused', async () => {
  const dir = tempDir();
  const jar = path.join(dir, 'jmx-exporter', jmxExporterJarName);
  // Maven "downloads" a tampered jar.
  const runner = new RecordingRunner((argv) => {
    if (argv[0] === 'mvn') fs.writeFileSync(jar, 'not the agent');
    return undefined;
  });
  await assert.rejects(obtainJmxExporter(dir, 'https://repo.example/maven2', runner), /has sha256 [0-9a-f]{64}, expected 7d61f737/);
  assert.ok(!fs.existsSync(jar), 'the bad jar is not left in the cache');
  assert.deepEqual(runner.commands(), [
    `mvn -B -q --strict-checksums -f ${path.join(dir, 'jmx-exporter', 'pom.xml')} org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy -Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:${JMX_EXPORTER_VERSION} -DoutputDirectory=${path.join(dir, 'jmx-exporter')}`,
  ]);
  assert.match(fs.readFileSync(path.join(dir, 'jmx-exporter', 'pom.xml'), 'utf8'), /<url>https:\/\/repo\.example\/maven2<\/url>/);
  // Dry run: the command is shown, nothing is written.
  const dry = new RecordingRunner(undefined, true);
  const other = tempDir();
  await obtainJmxExporter(other, 'https://repo.example/maven2', dry);
  assert.equal(dry.calls.length, 1);
  assert.ok(!fs.existsSync(path.join(other, 'jmx-exporter')));
});
