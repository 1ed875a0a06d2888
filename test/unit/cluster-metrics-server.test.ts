// The own cluster's metrics-server add-on, as configuration: the config value, the host process's
// argv, the objects serving metrics.k8s.io through the aggregation layer, and apply's warning
// when a CPU HPA meets a cluster without that API (the real thing runs in
// test/integration/suites/keda.ts, registered by kube-e2e.test.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { METRIC_RESOLUTION, METRICS_API, METRICS_SERVER_PORT, METRICS_SERVER_USER, metricsServerComponent, metricsServerDir, metricsServerMissing, metricsServerObjects, startMetricsServer } from '../../lib/cluster/metrics-server.ts';
import { UserError } from '../../lib/errors.ts';
import { metricsApiWarning } from '../../lib/kube/apply.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { METRICS_SERVER_VERSION } from '../../lib/versions.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';

const vars = (more: Record<string, string> = {}) => {
  const state = tempDir('dh-ms-');
  return { DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: path.join(state, 'cache'), ...more };
};
const mk = (more: Record<string, string> = {}) => loadClusterConfig(testConfig(vars(more)));

test('CLUSTER_ADDONS=metrics-server: accepted with the others; refused until .ci/install-metrics-server has built it, naming the fix', async () => {
  assert.deepEqual(mk({ CLUSTER_ADDONS: 'keda,traefik,metrics-server' }).addons, ['keda', 'traefik', 'metrics-server']);
  const cc = mk({ CLUSTER_ADDONS: 'metrics-server' });
  assert.deepEqual(cc.addons, ['metrics-server']);
  assert.equal(metricsServerDir(cc), path.join(cc.cacheDir, `metrics-server-${METRICS_SERVER_VERSION}`));
  assert.match(metricsServerMissing(cc).join(), /metrics-server v0\.8\.0 in .*: metrics-server \(bash \.ci\/install-metrics-server\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-metrics-server')));
  assert.ok(!missingPrerequisites(mk()).some((m) => m.includes('install-metrics-server')), 'not asked for: not needed');
  await assert.rejects(startMetricsServer(new RecordingRunner(), cc, async () => {}), (e: unknown) => e instanceof UserError && /metrics-server cannot start/.test(e.message) && e.fix === 'bash .ci/install-metrics-server');
  fs.mkdirSync(metricsServerDir(cc), { recursive: true });
  fs.writeFileSync(path.join(metricsServerDir(cc), 'metrics-server'), '');
  assert.deepEqual(metricsServerMissing(cc), []);
});

test('metrics-server as a host process: its own kubeconfig, served on the bridge, the kubelet verified against the cluster CA, a 10 s resolution', () => {
  const cc = mk();
  const c = metricsServerComponent(cc);
  const pki = path.join(cc.dir, 'pki');
  assert.equal(c.name, 'metrics-server');
  assert.equal(c.argv[0], path.join(metricsServerDir(cc), 'metrics-server'));
  for (const f of ['--kubeconfig', '--authentication-kubeconfig', '--authorization-kubeconfig']) assert.ok(c.argv.includes(`${f}=${path.join(pki, 'metrics-server.kubeconfig')}`), f);
  assert.ok(c.argv.includes(`--bind-address=${cc.net.bridgeIp}`), 'Endpoints reject loopback addresses');
  assert.ok(c.argv.includes(`--secure-port=${METRICS_SERVER_PORT}`));
  assert.ok(c.argv.includes(`--tls-cert-file=${path.join(pki, 'metrics-server-serving.crt')}`));
  assert.ok(c.argv.includes(`--kubelet-certificate-authority=${path.join(pki, 'ca.crt')}`));
  assert.ok(!c.argv.some((a) => a.startsWith('--kubelet-insecure-tls')), 'the kubelet\'s certificate is verified');
  assert.ok(c.argv.includes('--kubelet-preferred-address-types=Hostname'));
  assert.ok(c.argv.includes(`--kubelet-port=${cc.ports.kubelet}`));
  assert.equal(METRIC_RESOLUTION, '10s');
  assert.ok(c.argv.includes('--metric-resolution=10s'));
  assert.ok(c.argv.includes('--kubelet-request-timeout=5s'), 'below the resolution, or it refuses to start');
  assert.ok(c.argv.some((a) => a.includes(`${cc.dir}/`)), 'its argv names the cluster dir: the lifecycle recognises its processes by it');
});

test('metrics-server\'s objects: the APIService trusts the cluster CA and leads to the bridge; its user may read the kubelet\'s metrics and delegate auth', () => {
  const cc = mk();
  fs.mkdirSync(path.join(cc.dir, 'pki'), { recursive: true });
  fs.writeFileSync(path.join(cc.dir, 'pki', 'ca.crt'), 'CA');
  const objs = metricsServerObjects(cc) as unknown as { kind: string; metadata: { name: string; namespace?: string }; spec?: Record<string, unknown>; subsets?: unknown[]; subjects?: { name: string }[]; roleRef?: { name: string }; rules?: { resources: string[]; verbs: string[] }[] }[];
  const api = objs.find((o) => o.kind === 'APIService')!;
  assert.equal(api.metadata.name, METRICS_API);
  assert.deepEqual(api.spec, { service: { name: 'metrics-server', namespace: 'kube-system', port: 443 }, group: 'metrics.k8s.io', version: 'v1beta1', caBundle: Buffer.from('CA').toString('base64'), groupPriorityMinimum: 100, versionPriority: 100 });
  const svc = objs.find((o) => o.kind === 'Service')!;
  assert.equal(svc.spec!.selector, undefined, 'no selector: its Endpoints are ours');
  assert.deepEqual(svc.spec!.ports, [{ name: 'https', port: 443, targetPort: METRICS_SERVER_PORT, protocol: 'TCP' }]);
  const ep = objs.find((o) => o.kind === 'Endpoints')!;
  assert.deepEqual(ep.subsets, [{ addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: METRICS_SERVER_PORT, protocol: 'TCP' }] }]);
  const role = objs.find((o) => o.kind === 'ClusterRole' && o.metadata.name === METRICS_SERVER_USER)!;
  assert.ok(role.rules!.some((r) => r.resources.includes('nodes/metrics') && r.verbs.includes('get')));
  const bound = objs.filter((o) => o.subjects?.some((s) => s.name === METRICS_SERVER_USER)).map((o) => [o.kind, o.roleRef!.name, o.metadata.namespace]);
  assert.deepEqual(bound, [
    ['ClusterRoleBinding', METRICS_SERVER_USER, undefined],
    ['ClusterRoleBinding', 'system:auth-delegator', undefined],
    ['RoleBinding', 'extension-apiserver-authentication-reader', 'kube-system'],
  ]);
});

test('apply warns when AGENT_AUTOSCALING=hpa meets a cluster without the metrics.k8s.io API, naming the fix; not for KEDA, not when it is there', async () => {
  const answer = (stdout: string, code = 0) => new RecordingRunner((argv) => (argv.includes('apiservice') ? { code, stdout, stderr: code ? 'Error from server (NotFound)' : '' } : undefined));
  const objectsOf = async (v: Record<string, string>) => (await renderManifests(testConfig(v), new ShellRunner(false, () => {}))).objects;
  const own = testConfig(vars({ DIGDAG_HA_TARGET: 'cluster', AGENT_AUTOSCALING: 'hpa', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '2' }));
  const hpa = await objectsOf(vars({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'hpa', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '2' }));
  assert.ok(hpa.some((o) => o.kind === 'HorizontalPodAutoscaler'));
  const none = await metricsApiWarning(testCtx(own, answer('', 1)), hpa);
  assert.match(none ?? '', /AGENT_AUTOSCALING=hpa renders a CPU HorizontalPodAutoscaler, but this cluster serves no metrics\.k8s\.io API \(no APIService v1beta1\.metrics\.k8s\.io\)/);
  assert.match(none ?? '', /bash \.ci\/install-metrics-server; CLUSTER_ADDONS=metrics-server npx tsx tasks\/cluster\.ts up/);
  const elsewhere = testConfig(vars({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'hpa' }));
  assert.match((await metricsApiWarning(testCtx(elsewhere, answer('False')), hpa)) ?? '', /APIService v1beta1\.metrics\.k8s\.io is not Available.*install metrics-server/);
  assert.equal(await metricsApiWarning(testCtx(own, answer('True')), hpa), undefined);
  const keda = await objectsOf(vars({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '2' }));
  const r = answer('', 1);
  assert.equal(await metricsApiWarning(testCtx(own, r), keda), undefined);
  assert.deepEqual(r.calls, [], 'no HPA of the project\'s: nothing asked');
});
