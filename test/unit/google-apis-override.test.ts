// The private endpoint for Google's APIs (tests and air-gapped setups): the chart's googleApis.*
// values and the toolkit's GOOGLE_APIS_ADDRESS / GOOGLE_APIS_CA_FILE behind them. Off by default
// (nothing rendered); set, every Digdag pod maps Google's host names to the address (hostAliases),
// may reach it on 443 (NetworkPolicy), and mounts the CA bundle the entrypoint trusts; bad values
// are refused by the chart and by the config, naming the fix.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { UserError } from '../../lib/errors.ts';
import { parseObjects, renderManifests, type KubeObject } from '../../lib/kube/render.ts';
import { renderWarnings, valuesFromConfig } from '../../lib/kube/values.ts';
import { LAYOUT_ROLES } from '../../lib/roles.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { CHART, helmNotes, helmTemplate } from '../helpers/chart.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';
import { GOOGLEAPIS_HOSTS } from '../helpers/gcp/pki.ts';
import { helmBin, validateStrictly } from '../helpers/tools.ts';

const runner = new ShellRunner(false, () => {});
/** The chart's default googleApis.hostNames: the names the test edge's certificate covers. */
const HOSTS = [...GOOGLEAPIS_HOSTS];

function makeCa(): { dir: string; pem: string; file: string; key: string } {
  const dir = tempDir('google-ca-');
  const file = path.join(dir, 'ca.pem');
  const key = path.join(dir, 'ca.key');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', file, '-days', '1', '-subj', '/CN=private endpoint test CA'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { dir, pem: fs.readFileSync(file, 'utf8'), file, key };
}
const ca = makeCa();

const deployments = (objs: KubeObject[]) => objs.filter((o) => o.kind === 'Deployment' && o.metadata.name.startsWith('digdag-') && o.metadata.name !== 'digdag-queue-exporter');
const egress = (objs: KubeObject[]) => objs.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-egress')!.spec.egress as { to?: { ipBlock?: { cidr: string } }[]; ports?: { port: number }[] }[];

function assertOverride(objs: KubeObject[], address: string, pem: string, roles: readonly string[]): void {
  const deps = deployments(objs);
  assert.deepEqual(deps.map((d) => d.metadata.labels!['app.kubernetes.io/component']).sort(), [...roles].sort());
  for (const d of deps) {
    const pod = d.spec.template.spec;
    assert.deepEqual(pod.hostAliases, [{ ip: address, hostnames: HOSTS }], d.metadata.name);
    const c = pod.containers.find((x: { name: string }) => x.name === 'digdag');
    assert.ok(c.volumeMounts.some((m: { name: string; mountPath: string; readOnly: boolean }) => m.name === 'extra-ca' && m.mountPath === '/etc/digdag-ca' && m.readOnly), `${d.metadata.name} mounts the CA bundle`);
    assert.deepEqual(pod.volumes.find((v: { name: string }) => v.name === 'extra-ca'), { name: 'extra-ca', configMap: { name: 'digdag-extra-ca' } });
  }
  const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'digdag-extra-ca');
  assert.ok(cm, 'ConfigMap digdag-extra-ca');
  assert.deepEqual(cm.data, { 'ca.crt': pem });
  const rule = egress(objs).find((r) => r.to?.some((t) => t.ipBlock?.cidr === `${address}/32`) && r.ports?.some((p) => p.port === 443));
  assert.ok(rule, `egress to ${address}/32`);
  assert.deepEqual(rule.ports, [{ port: 443, protocol: 'TCP' }]);
}

test('chart defaults render nothing of it: no hostAliases, no CA volume or ConfigMap, no extra egress rule', () => {
  const r = helmTemplate();
  assert.equal(r.status, 0, r.stderr);
  for (const d of deployments(r.objects)) {
    assert.equal(d.spec.template.spec.hostAliases, undefined);
    assert.ok(!d.spec.template.spec.volumes.some((v: { name: string }) => v.name === 'extra-ca'));
  }
  assert.ok(!r.objects.some((o) => o.metadata.name === 'digdag-extra-ca'));
  assert.ok(!egress(r.objects).some((x) => x.ports?.some((p) => p.port === 443) && x.to?.some((t) => /\/32$/.test(t.ipBlock?.cidr ?? ''))), 'no address of its own on 443');
});

for (const layout of ['worker', 'split'] as const) {
  test(`chart (${layout}): googleApis.address + caBundle → hostAliases, the CA mounted from its ConfigMap, egress to the address on 443, valid objects; a new bundle rolls the pods`, async () => {
    const set = [`layout=${layout}`, 'googleApis.address=10.244.0.1'];
    const rendered = helmTemplateFile([...set], ca.file);
    assert.equal(rendered.status, 0, rendered.stderr);
    assertOverride(rendered.objects, '10.244.0.1', ca.pem, LAYOUT_ROLES[layout]);
    assert.deepEqual(await validateStrictly(rendered.objects), []);
    const other = makeCa();
    const again = helmTemplateFile(set, other.file);
    const sum = (objs: KubeObject[]) => deployments(objs).map((d) => d.spec.template.metadata.annotations['checksum/config']);
    sum(again.objects).forEach((s, i) => assert.notEqual(s, sum(rendered.objects)[i], 'another CA bundle changes the pods\' checksum'));
  });
}

/** helm template with --set values and the CA bundle from a file (--set-file, as a helm user would). */
function helmTemplateFile(set: string[], caFile: string) {
  const r = spawnSync(helmBin(), ['template', 'dd', CHART, '--namespace', 'digdag', ...set.flatMap((s) => ['--set', s]), '--set-file', `googleApis.caBundle=${caFile}`], { encoding: 'utf8' });
  return { status: r.status ?? 1, stderr: r.stderr, objects: r.status === 0 ? parseObjects(r.stdout) : [] };
}

test('chart: only a CA bundle (a proxy found through DNS) mounts it without hostAliases; only an address maps the names without a CA', () => {
  const caOnly = helmTemplateFile([], ca.file);
  assert.equal(caOnly.status, 0, caOnly.stderr);
  for (const d of deployments(caOnly.objects)) {
    assert.equal(d.spec.template.spec.hostAliases, undefined);
    assert.ok(d.spec.template.spec.volumes.some((v: { name: string }) => v.name === 'extra-ca'));
  }
  const addressOnly = helmTemplate(['googleApis.address=10.1.2.3', 'googleApis.hostNames={www.googleapis.com}']);
  assert.equal(addressOnly.status, 0, addressOnly.stderr);
  for (const d of deployments(addressOnly.objects)) {
    assert.deepEqual(d.spec.template.spec.hostAliases, [{ ip: '10.1.2.3', hostnames: ['www.googleapis.com'] }]);
    assert.ok(!d.spec.template.spec.volumes.some((v: { name: string }) => v.name === 'extra-ca'));
  }
  assert.ok(!addressOnly.objects.some((o) => o.metadata.name === 'digdag-extra-ca'));
  assert.match(helmNotes(['googleApis.address=10.1.2.3']), /googleApis\.address=10\.1\.2\.3: www\.googleapis\.com, oauth2\.googleapis\.com[^\n]*lead there in every Digdag pod/);
  assert.doesNotMatch(helmNotes(), /googleApis/);
});

test('chart refuses bad googleApis values, naming the fix', () => {
  const refusals: [string[], RegExp][] = [
    [['googleApis.address=not-an-ip'], /googleApis\.address: Does not match pattern/],
    [['googleApis.address=300.1.2.3'], /googleApis\.address: Does not match pattern/],
    [['googleApis.address=127.0.0.77'], /googleApis\.address=127\.0\.0\.77 is a loopback address: in a pod it is the pod itself/],
    [['googleApis.address=10.1.2.3', 'googleApis.hostNames=null'], /googleApis\.address needs googleApis\.hostNames/],
    [['googleApis.hostNames={Bad_Name}'], /googleApis\.hostNames\.0: Does not match pattern/],
    [['googleApis.caBundle=hello'], /googleApis\.caBundle is not a PEM certificate[^\n]*--set-file googleApis\.caBundle=ca\.pem/],
    [['googleApis.adress=10.1.2.3'], /Additional property adress is not allowed/],
    [['googleApis.metadataServer=10.1.2.3'], /googleApis\.metadataServer: Does not match pattern/],
    [['googleApis.metadataServer=10.1.2.3:70000'], /googleApis\.metadataServer: Does not match pattern/],
    [['googleApis.metadataServer=metadata.internal:80'], /googleApis\.metadataServer: Does not match pattern/],
    [['googleApis.metadataServer=127.0.0.1:8080'], /googleApis\.metadataServer=127\.0\.0\.1:8080 is a loopback address: in a pod it is the pod itself/],
  ];
  for (const [set, want] of refusals) {
    const r = helmTemplate(set);
    assert.notEqual(r.status, 0, `${set.join(' ')} rendered`);
    assert.match(r.stderr, want, set.join(' '));
  }
  const withKey = helmTemplateFile([], ca.key);
  assert.notEqual(withKey.status, 0);
  assert.match(withKey.stderr, /googleApis\.caBundle holds a private key: it is rendered into a ConfigMap/);
  assert.ok(!withKey.stderr.includes(fs.readFileSync(ca.key, 'utf8').split('\n')[1]!), 'the key is not echoed');
});

test('toolkit: GOOGLE_APIS_ADDRESS / GOOGLE_APIS_CA_FILE become the chart values, on every Kubernetes target; unset, no googleApis value at all', async () => {
  assert.equal('googleApis' in valuesFromConfig(testConfig({ DIGDAG_HA_TARGET: 'minikube' })), false, 'defaults: the chart\'s own (manifests/ unchanged)');
  for (const target of ['minikube', 'gke', 'cluster']) {
    const config = testConfig({ DIGDAG_HA_TARGET: target, ...(target === 'gke' ? { IMAGE: 'reg.example.com/p/digdag-ha:1' } : {}), GOOGLE_APIS_ADDRESS: '10.244.0.1', GOOGLE_APIS_CA_FILE: ca.file });
    assert.deepEqual(valuesFromConfig(config).googleApis, { address: '10.244.0.1', caBundle: ca.pem });
    const { objects } = await renderManifests(config, runner);
    assertOverride(objects, '10.244.0.1', ca.pem, LAYOUT_ROLES.worker);
    assert.ok(renderWarnings(config).some((w) => /^GOOGLE_APIS_ADDRESS=10\.244\.0\.1: Google's API host names lead there in every Digdag pod/.test(w)), target);
  }
});

test('toolkit refuses GOOGLE_APIS_* that cannot work, naming the variable and the fix, never echoing a key', () => {
  const refuses = (vars: Record<string, string>, want: RegExp) =>
    assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars }), (err: unknown) => {
      assert.ok(err instanceof UserError, String(err));
      assert.match(`${err.message} — ${err.fix}`, want);
      return true;
    });
  refuses({ GOOGLE_APIS_ADDRESS: 'googleapis.internal' }, /GOOGLE_APIS_ADDRESS="googleapis\.internal".*has the wrong form/);
  refuses({ GOOGLE_APIS_ADDRESS: '127.0.0.77' }, /GOOGLE_APIS_ADDRESS=127\.0\.0\.77 is a loopback address/);
  refuses({ GOOGLE_APIS_CA_FILE: path.join(ca.dir, 'absent.pem') }, /GOOGLE_APIS_CA_FILE=.*absent\.pem does not exist/);
  const junk = path.join(ca.dir, 'junk.pem');
  fs.writeFileSync(junk, 'hello\n');
  refuses({ GOOGLE_APIS_CA_FILE: junk }, /is not a PEM certificate/);
  const both = path.join(ca.dir, 'both.pem');
  fs.writeFileSync(both, ca.pem + fs.readFileSync(ca.key, 'utf8'));
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', GOOGLE_APIS_CA_FILE: both }), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /holds a private key/);
    assert.ok(!`${err.message}${err.fix}${err.detail ?? ''}`.includes('PRIVATE KEY-----\n'), 'the key is not in the message');
    return true;
  });
  refuses({ DIGDAG_HA_TARGET: 'local', GOOGLE_APIS_ADDRESS: '10.1.2.3' }, /GOOGLE_APIS_ADDRESS is for Kubernetes targets/);
  refuses({ DIGDAG_HA_TARGET: 'local', GOOGLE_METADATA_ADDRESS: '10.1.2.3:8080' }, /GOOGLE_METADATA_ADDRESS is for Kubernetes targets/);
  refuses({ GOOGLE_METADATA_ADDRESS: '10.1.2.3' }, /GOOGLE_METADATA_ADDRESS="10\.1\.2\.3".*has the wrong form/);
  refuses({ GOOGLE_METADATA_ADDRESS: '127.0.0.1:8080' }, /GOOGLE_METADATA_ADDRESS=127\.0\.0\.1:8080 is a loopback address/);
  refuses({ GOOGLE_METADATA_ADDRESS: '10.1.2.3:99999' }, /port 99999 is not a TCP port/);
});

test('the pods\' metadata server (googleApis.metadataServer, GOOGLE_METADATA_ADDRESS): GCE_METADATA_HOST/IP/ROOT in every Digdag container and an egress rule to it; nothing of it by default', async () => {
  const envOf = (objs: KubeObject[]) => deployments(objs).map((d) => (d.spec.template.spec.containers.find((c: { name: string }) => c.name === 'digdag').env as { name: string; value?: string }[])
    .filter((e) => e.name.startsWith('GCE_METADATA_')));
  for (const e of envOf(helmTemplate().objects)) assert.deepEqual(e, [], 'the default render sets no metadata server');
  assert.ok(!egress(helmTemplate().objects).some((x) => x.ports?.some((p) => p.port === 8089)));
  assert.doesNotMatch(helmNotes(), /metadataServer/);
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster', GOOGLE_METADATA_ADDRESS: '10.244.0.1:8089' });
  assert.deepEqual(valuesFromConfig(config).googleApis, { address: '', caBundle: '', metadataServer: '10.244.0.1:8089' });
  assert.ok(renderWarnings(config).some((w) => /^GOOGLE_METADATA_ADDRESS=10\.244\.0\.1:8089: every Digdag pod takes its Google identity from that metadata server/.test(w)));
  const { objects } = await renderManifests(config, runner);
  const envs = envOf(objects);
  assert.equal(envs.length, LAYOUT_ROLES.worker.length);
  for (const e of envs) assert.deepEqual(e.map((x) => `${x.name}=${x.value}`), ['GCE_METADATA_HOST', 'GCE_METADATA_IP', 'GCE_METADATA_ROOT'].map((n) => `${n}=10.244.0.1:8089`));
  const rule = egress(objects).find((r) => r.to?.some((t) => t.ipBlock?.cidr === '10.244.0.1/32') && r.ports?.some((p) => p.port === 8089));
  assert.deepEqual(rule?.ports, [{ port: 8089, protocol: 'TCP' }], 'egress to the metadata server\'s address and port only');
  assert.match(helmNotes(['googleApis.metadataServer=10.244.0.1:8089']), /NOTE: googleApis\.metadataServer=10\.244\.0\.1:8089: every Digdag pod takes its Google identity/);
});
