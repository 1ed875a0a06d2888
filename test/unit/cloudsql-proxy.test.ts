// The Cloud SQL Auth Proxy v2 sidecar in the chart: a native sidecar (init container with
// restartPolicy: Always) first in every Digdag pod, the migration Job and the queue exporter when
// CLOUDSQL_INSTANCE is set; Digdag's database host becomes 127.0.0.1; nothing changes without it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { test } from 'node:test';
import type { KubeObject } from '../../lib/kube/render.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { valuesFromConfig } from '../../lib/kube/values.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { dbQuery } from '../../lib/kube/db-query.ts';
import { UserError } from '../../lib/errors.ts';
import { ROOT } from '../../lib/paths.ts';
import { CLOUD_SQL_PROXY_IMAGE } from '../../lib/versions.ts';
import { CHART, helmTemplate } from '../helpers/chart.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { makeTestPki } from '../helpers/gcp/pki.ts';
import { validateStrictly } from '../helpers/tools.ts';

const runner = new ShellRunner(false, () => {});
const INSTANCE = 'my-project:asia-northeast1:digdag-pg';
const GKE = {
  DIGDAG_HA_TARGET: 'gke',
  IMAGE: 'asia-northeast1-docker.pkg.dev/my-project/digdag/digdag-ha:0.10.5.1',
  GCP_PROJECT: 'my-project',
  GCP_SERVICE_ACCOUNT: 'digdag@my-project.iam.gserviceaccount.com',
  DATABASE_URL: 'postgresql://digdag@127.0.0.1:5432/digdag',
  CLOUDSQL_INSTANCE: INSTANCE,
};

type Pod = { initContainers?: any[]; containers: any[]; serviceAccountName?: string };
const podSpec = (o: KubeObject): Pod => (o as any).spec.template.spec;
const podsOf = (objs: KubeObject[]) => objs.filter((o) => o.kind === 'Deployment' || o.kind === 'Job' || o.kind === 'StatefulSet');

test('CLOUDSQL_INSTANCE: every Digdag pod, the migration Job and the queue exporter start the proxy first, as a native sidecar; valid objects', async () => {
  const config = testConfig({ ...GKE, MONITORING: 'prometheus-operator' });
  const { objects } = await renderManifests(config, runner);
  const pods = podsOf(objects);
  assert.ok(!pods.some((o) => o.kind === 'StatefulSet'), 'no in-cluster PostgreSQL');
  const names = pods.map((o) => o.metadata.name).sort();
  assert.ok(names.includes('digdag-migrate') && names.includes('digdag-worker') && names.includes('digdag-queue-exporter'), names.join(', '));
  for (const o of pods) {
    const spec = podSpec(o);
    const proxy = spec.initContainers?.[0];
    assert.equal(proxy?.name, 'cloud-sql-proxy', `${o.metadata.name}: the proxy is the first init container`);
    assert.equal(proxy.restartPolicy, 'Always', `${o.metadata.name}: native sidecar`);
    assert.equal(proxy.args.at(-1), INSTANCE);
    assert.ok(proxy.args.includes('--port=5432') && proxy.args.includes('--health-check') && !proxy.args.includes('--private-ip'));
    assert.equal(proxy.startupProbe.httpGet.path, '/startup', 'the next init container waits until the proxy listens');
    assert.equal(proxy.securityContext.readOnlyRootFilesystem, true);
    assert.equal(spec.serviceAccountName, 'digdag', `${o.metadata.name}: Workload Identity through the digdag service account`);
  }
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'digdag-config')!;
  for (const [file, text] of Object.entries(cm.data!)) if (file.endsWith('.properties')) assert.match(text, /^database\.host = 127\.0\.0\.1$/m, file);
  const egress = objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-egress') as any;
  const rules = JSON.stringify(egress.spec.egress);
  assert.ok(rules.includes('"port":3307'), 'the proxy reaches the instance on 3307');
  assert.ok(!rules.includes('127.0.0.1'), 'no policy rule for the loopback address');
  assert.deepEqual(await validateStrictly(objects), []);
});

test('private IP, and without CLOUDSQL_INSTANCE no proxy anywhere', async () => {
  assert.equal(valuesFromConfig(testConfig({ ...GKE, CLOUDSQL_PRIVATE_IP: 'true' })).cloudSqlProxy && (valuesFromConfig(testConfig({ ...GKE, CLOUDSQL_PRIVATE_IP: 'true' })).cloudSqlProxy as any).privateIp, true);
  const withIp = helmTemplate(['database.external.enabled=true', 'database.external.host=127.0.0.1', `cloudSqlProxy.instance=${INSTANCE}`, 'cloudSqlProxy.privateIp=true']);
  assert.equal(withIp.status, 0, withIp.stderr);
  assert.ok(podsOf(withIp.objects).every((o) => podSpec(o).initContainers![0].args.includes('--private-ip')));
  const plain = helmTemplate(['database.external.enabled=true', 'database.external.host=10.1.2.3']);
  assert.equal(plain.status, 0, plain.stderr);
  assert.ok(!JSON.stringify(plain.objects).includes('cloud-sql-proxy'));
});

test('bad combinations fail the render (chart) or the config (toolkit), naming the fix', async () => {
  const refuse = (set: string[], re: RegExp) => {
    const r = helmTemplate(set);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, re);
  };
  refuse([`cloudSqlProxy.instance=${INSTANCE}`], /needs database\.external\.enabled=true/);
  refuse(['database.external.enabled=true', 'database.external.host=127.0.0.1', 'cloudSqlProxy.instance=digdag-pg'], /not an instance connection name: set it to PROJECT:REGION:INSTANCE/);
  refuse(['database.external.enabled=true', 'database.external.host=127.0.0.1', `cloudSqlProxy.instance=${INSTANCE}`, 'autoscaling.mode=keda'], /KEDA's operator .* cannot reach/);
  assert.throws(() => testConfig({ ...GKE, DATABASE_URL: 'postgresql://digdag:pw@10.1.2.3:5432/digdag' }), (e: unknown) => e instanceof UserError && /needs DATABASE_URL to name the proxy/.test(e.message) && /127\.0\.0\.1/.test(e.fix ?? ''));
  assert.throws(() => testConfig({ CLOUDSQL_INSTANCE: INSTANCE, DATABASE_URL: GKE.DATABASE_URL }), (e: unknown) => e instanceof UserError && /local target has none/.test(e.message));
});

test('the chart\'s proxy image is the version .ci/install-cloud-sql-proxy builds (lib/versions.ts)', () => {
  const values = parseYaml(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));
  assert.equal(values.cloudSqlProxy.image, CLOUD_SQL_PROXY_IMAGE);
  assert.match(fs.readFileSync(path.join(ROOT, '.ci', 'install-cloud-sql-proxy'), 'utf8'), /CLOUD_SQL_PROXY_VERSION/);
});

test('with CLOUDSQL_INSTANCE the toolkit\'s own database queries say how to reach the instance from this machine', async () => {
  const config = testConfig(GKE);
  ensureSecrets(config);
  const r = new RecordingRunner((argv) => (argv.some((a) => a.endsWith('psql')) ? { code: 2, stderr: 'psql: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused' } : undefined));
  await assert.rejects(dbQuery(testCtx(config, r))('SELECT 1'), (e: unknown) => e instanceof UserError && /Cloud SQL my-project:asia-northeast1:digdag-pg\) does not answer on 127\.0\.0\.1:5432/.test(e.message) && /cloud-sql-proxy --port 5432 my-project:asia-northeast1:digdag-pg/.test(e.fix ?? ''));
});

test('googleApis.caBundle (a private endpoint): the proxy trusts it too — SSL_CERT_DIR on the digdag-extra-ca ConfigMap in every pod it runs in; unset, nothing of it', async () => {
  const pki = makeTestPki(path.join(tempDir('cloudsql-ca-'), 'pki'), '10.244.0.1');
  const config = testConfig({ ...GKE, MONITORING: 'prometheus-operator', GOOGLE_APIS_ADDRESS: '10.244.0.1', GOOGLE_APIS_CA_FILE: pki.caPem });
  const { objects } = await renderManifests(config, runner);
  const pods = podsOf(objects);
  assert.ok(pods.length >= 4);
  for (const o of pods) {
    const spec = podSpec(o) as Pod & { volumes: any[] };
    const proxy = spec.initContainers![0];
    assert.deepEqual(proxy.env, [{ name: 'SSL_CERT_DIR', value: '/etc/cloud-sql-proxy-ca' }], o.metadata.name);
    assert.deepEqual(proxy.volumeMounts, [{ name: 'cloud-sql-proxy-ca', mountPath: '/etc/cloud-sql-proxy-ca', readOnly: true }], o.metadata.name);
    assert.deepEqual(spec.volumes.filter((v) => v.name === 'cloud-sql-proxy-ca'), [{ name: 'cloud-sql-proxy-ca', configMap: { name: 'digdag-extra-ca' } }], o.metadata.name);
  }
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'digdag-extra-ca')!;
  assert.equal(cm.data!['ca.crt'], fs.readFileSync(pki.caPem, 'utf8'));
  assert.deepEqual(await validateStrictly(objects), []);
  // Without a caBundle (a real Cloud SQL): the proxy has no env, no mount, the pods no such volume.
  const plain = await renderManifests(testConfig(GKE), runner);
  const text = JSON.stringify(plain.objects);
  assert.ok(!text.includes('SSL_CERT_DIR') && !text.includes('cloud-sql-proxy-ca'));
});

test('CLOUDSQL_PROXY_CREDENTIALS=key (no Workload Identity): --credentials-file from the key Secret, mounted into the proxy only; CLOUDSQL_INSTANCE_CIDRS opens 3307 to the instance; every pod with a proxy reaches the Admin API through googleApis.address', async () => {
  const dir = tempDir('cloudsql-key-');
  const keyFile = path.join(dir, 'key.json');
  fs.writeFileSync(keyFile, '{}');
  const config = testConfig({ ...GKE, MONITORING: 'prometheus-operator', CLOUDSQL_PROXY_CREDENTIALS: 'key', GCP_SA_KEY_FILE: keyFile, CLOUDSQL_PRIVATE_IP: 'true', CLOUDSQL_INSTANCE_CIDRS: '10.20.0.0/16', GOOGLE_APIS_ADDRESS: '10.244.0.1' });
  const { objects } = await renderManifests(config, runner);
  const pods = podsOf(objects);
  assert.ok(pods.length >= 4);
  for (const o of pods) {
    const spec = podSpec(o) as Pod & { volumes: any[]; hostAliases?: any[] };
    const proxy = spec.initContainers![0];
    assert.ok(proxy.args.includes('--credentials-file=/etc/cloud-sql-proxy-key/key.json'), o.metadata.name);
    assert.deepEqual(proxy.volumeMounts, [{ name: 'cloud-sql-proxy-key', mountPath: '/etc/cloud-sql-proxy-key', readOnly: true }], o.metadata.name);
    assert.deepEqual(spec.volumes.filter((v) => v.name === 'cloud-sql-proxy-key'), [{ name: 'cloud-sql-proxy-key', secret: { secretName: 'digdag-gcp-key', items: [{ key: 'key.json', path: 'key.json' }] } }], o.metadata.name);
    // Only the proxy holds the key (the Digdag container's own gcp-key mount is the GCP_SA_KEY_FILE feature).
    for (const c of spec.containers) assert.ok(!(c.volumeMounts ?? []).some((m: any) => m.name === 'cloud-sql-proxy-key'), `${o.metadata.name}/${c.name}`);
    assert.ok(spec.hostAliases?.some((h) => h.ip === '10.244.0.1' && h.hostnames.includes('sqladmin.googleapis.com') && h.hostnames.includes('oauth2.googleapis.com')), `${o.metadata.name}: the Admin API and the token endpoint lead to googleApis.address`);
  }
  const egress = objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-egress') as any;
  assert.ok(egress.spec.egress.some((r: any) => JSON.stringify(r) === JSON.stringify({ to: [{ ipBlock: { cidr: '10.20.0.0/16' } }], ports: [{ port: 3307, protocol: 'TCP' }] })), 'the instance range on 3307 only');
  assert.deepEqual(await validateStrictly(objects), []);
  // Workload Identity (the default): no key anywhere near the proxy, no 3307 rule beyond egressCidrs.
  const wi = JSON.stringify((await renderManifests(testConfig(GKE), runner)).objects);
  assert.ok(!wi.includes('credentials-file') && !wi.includes('cloud-sql-proxy-key') && !wi.includes('10.20.0.0/16'));
  assert.throws(() => testConfig({ ...GKE, CLOUDSQL_PROXY_CREDENTIALS: 'key' }), (e: unknown) => e instanceof UserError && /needs GCP_SA_KEY_FILE/.test(e.message));
  assert.throws(() => testConfig({ ...GKE, CLOUDSQL_INSTANCE_CIDRS: '10.20.0.0' }), (e: unknown) => e instanceof UserError && /not a CIDR/.test(e.message));
});

test('cloudSqlProxy.keySecret: the proxy\'s key from a Secret of its own, Digdag\'s containers keep gcp.keySecret\'s (or none: ADC); empty: gcp.keySecret', () => {
  const base = ['database.external.enabled=true', 'database.external.host=127.0.0.1', `cloudSqlProxy.instance=${INSTANCE}`, 'cloudSqlProxy.credentials=keySecret'];
  const secrets = (set: string[]) => {
    const r = helmTemplate([...base, ...set]);
    assert.equal(r.status, 0, r.stderr);
    return podsOf(r.objects).map((o) => {
      const vols = (podSpec(o) as Pod & { volumes: any[] }).volumes;
      return [vols.find((v) => v.name === 'cloud-sql-proxy-key')?.secret.secretName, vols.find((v) => v.name === 'gcp-key')?.secret.secretName];
    });
  };
  const own = secrets(['cloudSqlProxy.keySecret=sql-client-key']);
  assert.ok(own.length >= 3 && own.every(([proxy]) => proxy === 'sql-client-key'), JSON.stringify(own));
  assert.ok(own.some(([, digdag]) => digdag === 'digdag-gcp-key'), JSON.stringify(own));
  assert.ok(secrets(['gcp.keySecret=shared-key']).every(([proxy]) => proxy === 'shared-key'));
  assert.ok(secrets([]).every(([proxy]) => proxy === 'digdag-gcp-key'));
});
