// The own cluster's metrics-server add-on, as configuration: the config value, its image built
// from the cached binary, its own manifests/base re-tagged and bent (the kubelet verified against
// the cluster CA on the node's InternalIP, a serving certificate the APIService trusts, a 10 s
// resolution), the bring-up's steps, status and down, and apply's warning when a CPU HPA meets a
// cluster without that API (the real thing runs in test/integration/suites/keda.ts, registered by
// kube-e2e.test.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { components } from '../../lib/cluster/components.ts';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import {
  METRIC_RESOLUTION,
  METRICS_API,
  METRICS_SERVER_CPU_REQUEST,
  METRICS_SERVER_TLS_SECRET,
  metricsServerDir,
  metricsServerDockerfile,
  metricsServerImage,
  metricsServerMissing,
  metricsServerObjects,
  metricsServerStatusLine,
  POD_CLUSTER_CA,
  removeMetricsServerWorkloads,
  startMetricsServer,
} from '../../lib/cluster/metrics-server.ts';
import { identities } from '../../lib/cluster/pki.ts';
import { UserError } from '../../lib/errors.ts';
import { metricsApiWarning } from '../../lib/kube/apply.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { METRICS_SERVER_VERSION } from '../../lib/versions.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { addonUpRunner } from '../helpers/image-builds.ts';

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
  assert.match(metricsServerMissing(cc).join(), /metrics-server v0\.8\.0 in .*: metrics-server, manifests\/base\/kustomization\.yaml \(bash \.ci\/install-metrics-server\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-metrics-server')));
  assert.ok(!missingPrerequisites(mk()).some((m) => m.includes('install-metrics-server')), 'not asked for: not needed');
  await assert.rejects(startMetricsServer(new RecordingRunner(), cc), (e: unknown) => e instanceof UserError && /metrics-server cannot start/.test(e.message) && e.fix === 'bash .ci/install-metrics-server');
  fs.mkdirSync(metricsServerDir(cc), { recursive: true });
  fs.writeFileSync(path.join(metricsServerDir(cc), 'metrics-server'), '');
  // A cache from before it ran as a pod (the binary, no manifests/): still refused, same fix.
  assert.match(metricsServerMissing(cc).join(), /: manifests\/base\/kustomization\.yaml \(bash \.ci\/install-metrics-server\)/);
  fs.mkdirSync(path.join(metricsServerDir(cc), 'manifests', 'base'), { recursive: true });
  fs.writeFileSync(path.join(metricsServerDir(cc), 'manifests', 'base', 'kustomization.yaml'), '');
  assert.deepEqual(metricsServerMissing(cc), []);
});

/** manifests/base as `kubectl kustomize` renders it (v0.8.0), abridged: the ServiceAccount, one
 * binding, the Deployment (staging tag, upstream's args and requests), the APIService. */
const RENDERED = `apiVersion: v1
kind: ServiceAccount
metadata: {labels: {k8s-app: metrics-server}, name: metrics-server, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {labels: {k8s-app: metrics-server}, name: 'metrics-server:system:auth-delegator'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:auth-delegator'}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {labels: {k8s-app: metrics-server}, name: metrics-server, namespace: kube-system}
spec:
  selector: {matchLabels: {k8s-app: metrics-server}}
  template:
    metadata: {labels: {k8s-app: metrics-server}}
    spec:
      serviceAccountName: metrics-server
      containers:
      - name: metrics-server
        image: gcr.io/k8s-staging-metrics-server/metrics-server:master
        imagePullPolicy: IfNotPresent
        args: [--cert-dir=/tmp, --secure-port=10250, '--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname', --kubelet-use-node-status-port, --metric-resolution=15s]
        resources: {requests: {cpu: 100m, memory: 200Mi}}
        readinessProbe: {httpGet: {path: /readyz, port: https, scheme: HTTPS}, periodSeconds: 10, failureThreshold: 3, initialDelaySeconds: 20}
        securityContext: {readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, seccompProfile: {type: RuntimeDefault}, capabilities: {drop: [ALL]}}
        volumeMounts: [{mountPath: /tmp, name: tmp-dir}]
      volumes: [{emptyDir: {}, name: tmp-dir}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {labels: {k8s-app: metrics-server}, name: v1beta1.metrics.k8s.io}
spec: {group: metrics.k8s.io, groupPriorityMinimum: 100, insecureSkipTLSVerify: true, service: {name: metrics-server, namespace: kube-system}, version: v1beta1, versionPriority: 100}
`;
const TLS = { cert: 'CERT', key: 'KEY', ca: 'CA' };
type Ctr = { image: string; imagePullPolicy: string; readinessProbe: Record<string, unknown>; args: string[]; resources: { requests: Record<string, string> }; securityContext: Record<string, unknown>; volumeMounts: { name: string; mountPath: string }[] };
type Dep = { spec: { template: { spec: { containers: Ctr[]; volumes: { name: string; secret?: { secretName: string } }[] } } } };

test('the kubelet listens on the node\'s InternalIP (the bridge address) with a certificate naming it; the API server reaches it there', () => {
  const cc = mk();
  const kubelet = components(cc).find((c) => c.name === 'kubelet')!;
  kubelet.prepare!();
  const config = fs.readFileSync(path.join(cc.dir, 'kubelet', 'config.yaml'), 'utf8');
  assert.match(config, new RegExp(`^address: ${cc.net.bridgeIp.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(config, /^healthzBindAddress: 127\.0\.0\.1$/m, 'its health endpoint stays on loopback');
  assert.ok(kubelet.argv.includes(`--node-ip=${cc.net.bridgeIp}`));
  assert.deepEqual(identities(cc).find((i) => i.name === 'kubelet-serving')!.sans, ['DNS:localhost', 'IP:127.0.0.1', `IP:${cc.net.bridgeIp}`]);
  assert.ok(components(cc).find((c) => c.name === 'kube-apiserver')!.argv.includes('--kubelet-preferred-address-types=InternalIP'));
});

test('metrics-server\'s image: the cached binary alone, upstream\'s entry point, a numeric non-root user, a local name never pulled', () => {
  const i = metricsServerImage();
  assert.equal(i.image, 'digdag-ha.local/metrics-server:0.8.0');
  const df = metricsServerDockerfile();
  assert.match(df, /^FROM scratch$/m);
  assert.match(df, /^COPY metrics-server \/metrics-server$/m);
  assert.match(df, /^USER 65534:65534$/m, 'runAsNonRoot needs a numeric user');
  assert.match(df, /^ENTRYPOINT \["\/metrics-server"\]$/m);
});

test('metrics-server\'s own manifests/base: re-tagged and never pulled, the kubelet verified against the cluster CA on its InternalIP, a 10 s resolution, a serving certificate from the cluster CA the APIService trusts', () => {
  const objs = metricsServerObjects(RENDERED, TLS);
  assert.deepEqual(objs.map((o) => `${o.kind}/${o.metadata.name}`), [`Secret/${METRICS_SERVER_TLS_SECRET}`, 'ServiceAccount/metrics-server', 'ClusterRoleBinding/metrics-server:system:auth-delegator', 'Deployment/metrics-server', `APIService/${METRICS_API}`]);
  const c = (objs.find((o) => o.kind === 'Deployment') as unknown as Dep).spec.template.spec.containers[0]!;
  assert.deepEqual([c.image, c.imagePullPolicy], ['digdag-ha.local/metrics-server:0.8.0', 'Never']);
  assert.equal(METRIC_RESOLUTION, '10s');
  assert.deepEqual(c.args, [
    '--cert-dir=/tmp',
    '--secure-port=10250',
    '--kubelet-use-node-status-port',
    '--kubelet-preferred-address-types=InternalIP',
    `--kubelet-certificate-authority=${POD_CLUSTER_CA}`,
    '--metric-resolution=10s',
    '--kubelet-request-timeout=5s',
    '--tls-cert-file=/etc/metrics-server/tls/tls.crt',
    '--tls-private-key-file=/etc/metrics-server/tls/tls.key',
  ]);
  assert.ok(!c.args.some((a) => a.startsWith('--kubelet-insecure-tls')), 'the kubelet\'s certificate is verified');
  assert.deepEqual(c.readinessProbe, { httpGet: { path: '/readyz', port: 'https', scheme: 'HTTPS' }, periodSeconds: 2, failureThreshold: 3, initialDelaySeconds: 0 }, 'looked at from the start, every 2 s');
  assert.equal(POD_CLUSTER_CA, '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt');
  assert.deepEqual(c.resources.requests, { cpu: METRICS_SERVER_CPU_REQUEST, memory: '200Mi' });
  assert.deepEqual(c.securityContext, { readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, seccompProfile: { type: 'RuntimeDefault' }, capabilities: { drop: ['ALL'] } }, 'upstream\'s: Pod Security restricted');
  const pod = (objs.find((o) => o.kind === 'Deployment') as unknown as Dep).spec.template.spec;
  assert.deepEqual(pod.volumes.find((v) => v.name === 'tls'), { name: 'tls', secret: { secretName: METRICS_SERVER_TLS_SECRET } });
  assert.ok(c.volumeMounts.some((m) => m.name === 'tls' && m.mountPath === '/etc/metrics-server/tls'));
  const secret = objs.find((o) => o.kind === 'Secret') as unknown as { type: string; metadata: { namespace: string; labels: Record<string, string> }; data: Record<string, string> };
  assert.equal(secret.type, 'kubernetes.io/tls');
  assert.equal(secret.metadata.namespace, 'kube-system');
  assert.deepEqual(secret.metadata.labels, { 'k8s-app': 'metrics-server' });
  assert.deepEqual(secret.data, { 'tls.crt': Buffer.from('CERT').toString('base64'), 'tls.key': Buffer.from('KEY').toString('base64') });
  const api = objs.find((o) => o.kind === 'APIService') as unknown as { spec: Record<string, unknown> };
  assert.equal(api.spec.insecureSkipTLSVerify, undefined, 'not upstream\'s: the CA is known');
  assert.equal(api.spec.caBundle, Buffer.from('CA').toString('base64'));
  assert.throws(() => metricsServerObjects(RENDERED.replace('gcr.io/k8s-staging-metrics-server/metrics-server:master', 'example.org/other:1'), TLS), (e: unknown) => e instanceof UserError && /names image example\.org\/other:1/.test(e.message));
  const insecure = metricsServerObjects(RENDERED.replace('--kubelet-use-node-status-port,', '--kubelet-use-node-status-port, --kubelet-insecure-tls,'), TLS);
  assert.ok(!(insecure.find((o) => o.kind === 'Deployment') as unknown as Dep).spec.template.spec.containers[0]!.args.includes('--kubelet-insecure-tls'));
});

test('metrics-server up: its image built once into the image cache and imported, its certificate signed, manifests/base applied server-side, then the Deployment and the APIService waited for; up again does nothing', async () => {
  const cc = mk({ CLUSTER_ADDONS: 'metrics-server' });
  fs.mkdirSync(path.join(metricsServerDir(cc), 'manifests', 'base'), { recursive: true });
  fs.writeFileSync(path.join(metricsServerDir(cc), 'manifests', 'base', 'kustomization.yaml'), '');
  fs.writeFileSync(path.join(metricsServerDir(cc), 'metrics-server'), '#!ms');
  const pki = path.join(cc.dir, 'pki');
  fs.mkdirSync(pki, { recursive: true });
  fs.writeFileSync(path.join(pki, 'ca.crt'), 'CA');
  fs.writeFileSync(path.join(pki, 'ca.key'), 'CAKEY');
  let applied = false;
  const { dockerfiles, runner: r } = addonUpRunner((argv, a) => {
    // openssl: the files signCertificate makes.
    if (argv[0] === 'openssl' && argv.includes('-keyout')) fs.writeFileSync(argv[argv.indexOf('-keyout') + 1]!, 'KEY');
    if (argv[0] === 'openssl' && argv[1] === 'x509') fs.writeFileSync(argv[argv.indexOf('-out') + 1]!, 'CERT');
    if (argv[1] === 'kustomize') return { stdout: RENDERED };
    if (a.includes(' apply ')) applied = true;
    if (a.includes('get deployment ') || a.includes('get apiservice ')) return { stdout: applied ? 'True' : '' };
    return undefined;
  });
  const lines: string[] = [];
  const line = await startMetricsServer(r, cc, (l) => lines.push(l));
  assert.match(line, /^metrics-server v0\.8\.0 up in \d+\.\d s \(a pod from its own manifests\/base; v1beta1\.metrics\.k8s\.io Available; kubelet scraped every 10s, its certificate verified against the cluster CA\)$/);
  assert.equal(dockerfiles.length, 1);
  assert.deepEqual(fs.readdirSync(path.join(cc.cacheDir, 'images')).map((f) => f.replace(/-[0-9a-f]{24}\.tar$/, '')), ['digdag-ha.local_metrics-server_0.8.0'], 'kept in the image cache');
  const cmds = r.commands();
  assert.equal(cmds.filter((c) => / images import /.test(c)).length, 1, 'imported into containerd');
  assert.ok(cmds.includes(`kubectl kustomize ${path.join(metricsServerDir(cc), 'manifests', 'base')}`));
  const x509 = r.calls.find((c) => c.argv[0] === 'openssl' && c.argv[1] === 'x509')!;
  assert.ok(x509.argv.includes(path.join(pki, 'ca.crt')), 'signed by the cluster CA');
  const applies = r.calls.filter((c) => c.argv.includes('apply'));
  assert.equal(applies.length, 1);
  assert.ok(applies[0]!.argv.includes('--server-side'));
  assert.match(applies[0]!.input!, /"kind":"Secret"/);
  assert.match(applies[0]!.input!, /digdag-ha\.local\/metrics-server:0\.8\.0/);
  const order = (re: RegExp) => cmds.findIndex((c) => re.test(c));
  assert.ok(order(/ build /) < order(/kubectl kustomize/) && order(/kubectl kustomize/) < order(/ apply /));
  assert.ok(lines.some((l) => /manifests\/base applied \(5 objects\)/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /Deployment Available after/.test(l)), lines.join('\n'));
  const again = new RecordingRunner((argv) => (argv.includes('deployment') || argv.includes('apiservice') ? { stdout: 'True' } : undefined));
  assert.equal(await startMetricsServer(again, cc), 'metrics-server v0.8.0: already up');
  assert.ok(again.calls.every((c) => !c.mutates));
});

test('metrics-server in status and down: its Deployment and APIService in one line; down deletes its Deployment and ReplicaSets (by upstream\'s label) so that an up without it starts no pod', async () => {
  const cc = mk({ CLUSTER_ADDONS: 'metrics-server' });
  const half = new RecordingRunner((argv) => (argv.includes('deployment') ? { stdout: 'True' } : argv.includes('apiservice') ? { stdout: 'False' } : undefined));
  assert.match(await metricsServerStatusLine(half, cc), /^metrics-server \(pod\) +Deployment metrics-server Available in namespace kube-system; v1beta1\.metrics\.k8s\.io not Available$/);
  const r = new RecordingRunner();
  await removeMetricsServerWorkloads(r, cc);
  assert.deepEqual(r.calls.map((c) => c.argv.slice(3).join(' ')), ['delete deployments,replicasets -n kube-system -l k8s-app=metrics-server --ignore-not-found --wait=false']);
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
