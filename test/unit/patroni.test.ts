// The highly available in-cluster PostgreSQL (Patroni): the settings and their refusals, and the
// chart's rendering of it — members, leader and replica Services, the DCS Role, Pod Security,
// spread, the PodDisruptionBudget and the NetworkPolicies around the members and the API server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UserError } from '../../lib/errors.ts';
import { renderManifests, type KubeObject } from '../../lib/kube/render.ts';
import { LEADER_SELECTOR, dbPod } from '../../lib/kube/kubectl.ts';
import { renderWarnings } from '../../lib/kube/values.ts';
import { claimedClasses, requireStorageClasses } from '../../lib/kube/start-postgres.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const runner = new ShellRunner(false, () => {});
type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const find = (objs: KubeObject[], kind: string, name: string): Any => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} missing`);
  return o as Any;
};
const refused = (vars: Record<string, string>, message: RegExp, fix: RegExp) =>
  assert.throws(() => testConfig(vars), (e: unknown) => e instanceof UserError && message.test(e.message) && fix.test(e.fix ?? ''));

test('members: 3 with synchronous replication on the own cluster, 1 (and a plain warning) where the public image has no Patroni', () => {
  const cluster = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  assert.equal(cluster.db.members, 3);
  assert.equal(cluster.db.synchronous, true);
  assert.deepEqual(renderWarnings(cluster).filter((w) => /POSTGRES_/.test(w)), []);
  const minikube = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  assert.equal(minikube.db.members, 1);
  assert.equal(minikube.db.synchronous, false);
  assert.ok(renderWarnings(minikube).some((w) => /POSTGRES_MEMBERS=1: .*NOT highly available/.test(w)));
  const async = testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_SYNC: 'off' });
  assert.equal(async.db.synchronous, false);
  assert.ok(renderWarnings(async).some((w) => /asynchronous, so a failover can lose/.test(w)));
});

test('bad database settings are refused before anything is applied, naming the fix', () => {
  refused({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '0' }, /POSTGRES_MEMBERS=0: .*1 to 9 members/, /POSTGRES_MEMBERS=3/);
  refused({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '1', POSTGRES_SYNC: 'on' }, /POSTGRES_SYNC=on with POSTGRES_MEMBERS=1/, /POSTGRES_MEMBERS=3/);
  refused({ DIGDAG_HA_TARGET: 'minikube', POSTGRES_MEMBERS: '3' }, /has no Patroni/, /POSTGRES_IMAGE .*docker\/postgres/);
  // An image of one's own with Patroni is accepted; an external database needs no members.
  assert.equal(testConfig({ DIGDAG_HA_TARGET: 'minikube', POSTGRES_MEMBERS: '3', POSTGRES_IMAGE: 'mirror.example.com/digdag-ha-postgres:15' }).db.members, 3);
  assert.doesNotThrow(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', POSTGRES_MEMBERS: '1', POSTGRES_SYNC: 'on', DATABASE_URL: 'postgresql://d:p@10.0.0.5:5432/digdag' }));
});

test('the chart renders a Patroni cluster: leader Service for Digdag, replicas, DCS Role, PDB, spread, restricted pods', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  const { objects } = await renderManifests(config, runner);
  assert.equal(objects.filter((o) => o.kind === 'StatefulSet').length, 1);
  const sts = find(objects, 'StatefulSet', 'digdag-postgres');
  assert.equal(sts.spec.replicas, 3);
  const pod = sts.spec.template.spec;
  const labels = sts.spec.template.metadata.labels;
  assert.equal(labels['digdag-ha/apiserver-client'], 'true');
  assert.equal(labels['cluster-name'], 'digdag-postgres');
  assert.equal(pod.serviceAccountName, 'digdag-postgres');
  assert.equal(pod.automountServiceAccountToken, true);
  assert.deepEqual(pod.securityContext, { runAsNonRoot: true, runAsUser: 70, runAsGroup: 70, fsGroup: 70, seccompProfile: { type: 'RuntimeDefault' } });
  const c = pod.containers[0];
  assert.equal(c.image, 'digdag-ha.local/postgres:15');
  assert.deepEqual(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
  const env = Object.fromEntries(c.env.map((e: Any) => [e.name, e.value ?? e.valueFrom]));
  assert.equal(env.PATRONI_SCOPE, 'digdag-postgres');
  assert.deepEqual(env.PATRONI_SUPERUSER_PASSWORD, { secretKeyRef: { name: 'digdag-secrets', key: 'postgres-password' } });
  assert.ok(!c.env.some((e: Any) => /PASSWORD/.test(e.name) && e.value), 'no password in the manifest');
  assert.ok(pod.topologySpreadConstraints.every((t: Any) => t.whenUnsatisfiable === 'ScheduleAnyway'));
  assert.deepEqual(pod.topologySpreadConstraints.map((t: Any) => t.topologyKey), ['topology.kubernetes.io/zone', 'kubernetes.io/hostname']);
  // The leader Service has no selector (Patroni writes its Endpoints); Digdag and the migration use it.
  const leader = find(objects, 'Service', 'digdag-postgres');
  assert.equal(leader.spec.selector, undefined);
  assert.equal(leader.spec.type, 'ClusterIP');
  assert.deepEqual(leader.spec.ports.map((p: Any) => [p.name, p.port]), [['postgresql', 5432]]);
  assert.match(find(objects, 'ConfigMap', 'digdag-config').data['server.properties'] ?? JSON.stringify(find(objects, 'ConfigMap', 'digdag-config').data), /digdag-postgres/);
  assert.equal(find(objects, 'Service', 'digdag-postgres-replicas').spec.selector.role, 'replica');
  assert.equal(find(objects, 'Service', 'digdag-postgres-config').spec.clusterIP, 'None');
  assert.equal(find(objects, 'PodDisruptionBudget', 'digdag-postgres').spec.maxUnavailable, 1);
  // Only what the Kubernetes DCS needs, in the namespace.
  assert.deepEqual(find(objects, 'Role', 'digdag-postgres').rules, [
    { apiGroups: [''], resources: ['endpoints'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'] },
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'update', 'patch'] },
  ]);
  assert.ok(!objects.some((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding'));
  const patroni = find(objects, 'ConfigMap', 'digdag-postgres-patroni').data['patroni.yml'];
  assert.match(patroni, /synchronous_mode: true/);
  assert.match(patroni, /master_start_timeout: 0/);
  assert.match(patroni, /use_endpoints: true/);
  // Every other pod keeps no token and no apiserver label.
  for (const o of objects.filter((x) => ['Deployment', 'Job'].includes(x.kind))) {
    const t = (o as Any).spec.template;
    assert.notEqual(t.spec.automountServiceAccountToken, true, `${o.kind}/${o.metadata.name}`);
    assert.equal(t.metadata.labels['digdag-ha/apiserver-client'], undefined, `${o.kind}/${o.metadata.name}`);
  }
});

test('NetworkPolicies: members reach each other, Digdag pods only port 5432, the API server only from members', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  const { objects } = await renderManifests(config, runner);
  const api = find(objects, 'NetworkPolicy', 'digdag-apiserver-egress');
  assert.deepEqual(api.spec.podSelector.matchLabels['digdag-ha/apiserver-client'], 'true');
  assert.deepEqual(api.spec.egress, [{ to: [{ ipBlock: { cidr: `${config.cluster.nodeAddress}/32` } }], ports: [{ port: 6443, protocol: 'TCP' }] }]);
  const members = find(objects, 'NetworkPolicy', 'digdag-postgres-members');
  assert.deepEqual(members.spec.policyTypes, ['Ingress', 'Egress']);
  assert.deepEqual(members.spec.ingress[0].ports.map((p: Any) => p.port), [5432, 8008]);
  assert.equal(members.spec.ingress[0].from[0].podSelector.matchLabels['cluster-name'], 'digdag-postgres');
  const clients = find(objects, 'NetworkPolicy', 'digdag-postgres');
  assert.deepEqual(clients.spec.ingress[0].ports, [{ port: 5432, protocol: 'TCP' }]);
  // Elsewhere (minikube, gke) the chart's default: any address, on the API server's ports only.
  const mk = await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'minikube', POSTGRES_MEMBERS: '3', POSTGRES_IMAGE: 'mirror.example.com/digdag-ha-postgres:15' }), runner);
  const mkApi = find(mk.objects, 'NetworkPolicy', 'digdag-apiserver-egress');
  assert.equal(mkApi.spec.egress[0].to, undefined);
  assert.deepEqual(mkApi.spec.egress[0].ports.map((p: Any) => p.port), [443, 6443, 8443]);
  // One member: the plain StatefulSet, no Patroni objects, no API server access for anyone.
  const single = (await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '1' }), runner)).objects;
  assert.ok(!single.some((o) => ['Role', 'PodDisruptionBudget'].includes(o.kind) && o.metadata.name === 'digdag-postgres'));
  assert.ok(!single.some((o) => o.metadata.name === 'digdag-apiserver-egress'));
  assert.equal(find(single, 'StatefulSet', 'digdag-postgres').spec.replicas, 1);
});

test('database commands go to the leader: the member Patroni labels leader, found by label', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  const r = new RecordingRunner(() => ({ stdout: 'digdag-postgres-2' }));
  assert.equal(await dbPod(testCtx(config, r)), 'digdag-postgres-2');
  assert.ok(r.calls[0]!.argv.join(' ').includes(`get pods -l ${LEADER_SELECTOR}`), r.calls[0]!.argv.join(' '));
  const single = testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '1' });
  assert.equal(await dbPod(testCtx(single, new RecordingRunner())), 'digdag-postgres-0');
});

test('start-postgres refuses a StorageClass the cluster cannot give before applying anything: a named one it lacks, or the default when none is marked', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster' });
  const { objects } = await renderManifests(config, runner);
  const db = objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'postgres');
  assert.deepEqual(claimedClasses(db), [''], 'the own cluster: the default class');
  const gke = await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'gke', GCP_PROJECT: 'my-project-123', IMAGE: 'asia-northeast1-docker.pkg.dev/my-project-123/digdag/digdag-ha:0.10.5.1' }), runner);
  assert.deepEqual(claimedClasses(gke.objects), ['premium-rwo']);
  const cls = (name: string, isDefault = false) => ({ metadata: { name, ...(isDefault ? { annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } : {}) } });
  const answering = (answer: { code?: number; stdout?: string; stderr?: string }) => testCtx(config, new RecordingRunner((argv) => (argv.includes('storageclass') ? answer : undefined)));
  await requireStorageClasses(answering({ stdout: JSON.stringify({ items: [cls('local-path', true)] }) }), db);
  await assert.rejects(requireStorageClasses(answering({ stdout: JSON.stringify({ items: [cls('slow'), cls('fast')] }) }), db), (e: unknown) =>
    e instanceof UserError && /marks none as default \(it has: slow, fast\)/.test(e.message) && /is-default-class=true/.test(e.fix ?? ''));
  await assert.rejects(requireStorageClasses(answering({ stdout: JSON.stringify({ items: [cls('standard', true)] }) }), gke.objects), (e: unknown) =>
    e instanceof UserError && /asks for StorageClass premium-rwo, which this cluster does not have \(it has: standard\)/.test(e.message) && /postgres\.storageClass/.test(e.fix ?? ''));
  // Not allowed to list StorageClasses (a namespaced account): no verdict here; the rollout's diagnostics will tell.
  await requireStorageClasses(answering({ code: 1, stderr: 'Error from server (Forbidden): storageclasses.storage.k8s.io is forbidden' }), db);
});

test('a database volume size that is not a Kubernetes quantity is refused by the chart before anything is applied', async () => {
  const { helmTemplate } = await import('../helpers/chart.ts');
  for (const ok of ['10Gi', '500Mi', '1.5Gi', '20G']) assert.equal(helmTemplate([`postgres.storage=${ok}`]).status, 0, ok);
  for (const bad of ['10GB', '10 Gi', 'lots', '-1Gi']) {
    const r = helmTemplate([`postgres.storage=${bad}`]);
    assert.notEqual(r.status, 0, bad);
    assert.match(r.stderr, /postgres\.storage|storage/, r.stderr);
  }
});
