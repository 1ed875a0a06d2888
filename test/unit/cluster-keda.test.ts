// The own cluster's aggregation layer and KEDA add-on, as configuration: the API server's flags,
// KEDA's images built from the cached binaries, KEDA's own config/default re-tagged to them, and
// the bring-up's steps (the real thing runs in test/integration/suites/keda.ts, registered by
// kube-e2e.test.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { aggregationLayerFlags, FRONT_PROXY_CLIENT } from '../../lib/cluster/aggregation.ts';
import { components } from '../../lib/cluster/components.ts';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { EXTERNAL_METRICS_API, KEDA_DEPLOYMENTS, kedaDir, kedaDockerfile, kedaImages, kedaMissing, kedaObjects, kedaStatusLine, removeKedaWorkloads, startKeda } from '../../lib/cluster/keda.ts';
import { missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { UserError } from '../../lib/errors.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { KEDA_VERSION } from '../../lib/versions.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';
import { addonUpRunner } from '../helpers/image-builds.ts';

const mk = (vars: Record<string, string> = {}) => {
  const state = tempDir('dh-keda-');
  return loadClusterConfig(testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: path.join(state, 'cache'), ...vars }));
};

/** config/default as `kubectl kustomize` renders it, abridged: a CRD, the namespace, two of the
 * Deployments (tag `main`, pull policy Always, as upstream's kustomization leaves them), the APIService. */
const RENDERED = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: scaledobjects.keda.sh}
---
apiVersion: v1
kind: Namespace
metadata: {name: keda}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: keda-operator, namespace: keda}
spec:
  template:
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
      - {name: keda-operator, image: 'ghcr.io/kedacore/keda:main', imagePullPolicy: Always, command: [/keda], args: [--leader-elect, --enable-cert-rotation=true]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec:
  template:
    spec:
      containers:
      - {name: keda-metrics-apiserver, image: 'ghcr.io/kedacore/keda-metrics-apiserver:main', imagePullPolicy: Always}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec: {service: {name: keda-metrics-apiserver, namespace: keda}, group: external.metrics.k8s.io, version: v1beta1}
`;

test('the API server runs with the aggregation layer: a front-proxy CA of its own, routing to endpoints', () => {
  const cc = mk();
  const argv = components(cc).find((c) => c.name === 'kube-apiserver')!.argv;
  for (const f of aggregationLayerFlags(cc)) assert.ok(argv.includes(f), f);
  const flags = aggregationLayerFlags(cc).join(' ');
  assert.match(flags, /--requestheader-client-ca-file=\S+\/pki\/front-proxy-ca\.crt/);
  assert.match(flags, new RegExp(`--requestheader-allowed-names=${FRONT_PROXY_CLIENT}`));
  assert.match(flags, /--proxy-client-cert-file=\S+\/pki\/front-proxy-client\.crt/);
  assert.match(flags, /--enable-aggregator-routing=true/);
  assert.doesNotMatch(flags, /pki\/ca\.crt/, 'not the cluster CA: its client certificates must not pass as the proxy');
});

test('CLUSTER_ADDONS=keda: refused until .ci/install-keda has built KEDA and copied its config/ into the cache, naming the fix', async () => {
  assert.deepEqual(mk().addons, []);
  const cc = mk({ CLUSTER_ADDONS: 'keda' });
  assert.deepEqual(cc.addons, ['keda']);
  assert.equal(kedaDir(cc), path.join(cc.cacheDir, `keda-${KEDA_VERSION}`));
  assert.match(kedaMissing(cc).join(), /keda, keda-adapter, keda-webhooks, config\/default \(bash \.ci\/install-keda\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-keda')));
  assert.ok(!missingPrerequisites(mk()).some((m) => m.includes('install-keda')), 'not asked for: not needed');
  await assert.rejects(startKeda(new RecordingRunner(), cc), (e: unknown) => e instanceof UserError && /KEDA cannot start: missing/.test(e.message) && e.fix === 'bash .ci/install-keda');
  // A cache from before KEDA ran as pods (binaries, no config/): still refused, same fix.
  for (const b of ['keda', 'keda-adapter', 'keda-webhooks', 'crd', 'rbac']) fs.mkdirSync(kedaDir(cc), { recursive: true }), fs.writeFileSync(path.join(kedaDir(cc), b), '');
  assert.match(kedaMissing(cc).join(), /: config\/default \(bash \.ci\/install-keda\)/);
  fs.mkdirSync(path.join(kedaDir(cc), 'config', 'default'), { recursive: true });
  assert.deepEqual(kedaMissing(cc), []);
});

test('KEDA\'s images: one per binary as upstream\'s, a numeric non-root user, upstream\'s entry points, local names never pulled', () => {
  const imgs = kedaImages();
  assert.deepEqual(imgs.map((i) => [i.upstream, i.image, i.binary]), [
    ['ghcr.io/kedacore/keda', 'digdag-ha.local/keda:2.16.1', 'keda'],
    ['ghcr.io/kedacore/keda-metrics-apiserver', 'digdag-ha.local/keda-metrics-apiserver:2.16.1', 'keda-adapter'],
    ['ghcr.io/kedacore/keda-admission-webhooks', 'digdag-ha.local/keda-admission-webhooks:2.16.1', 'keda-webhooks'],
  ]);
  const df = kedaDockerfile(imgs[1]!, true);
  assert.match(df, /^FROM scratch$/m);
  assert.match(df, /^COPY keda-adapter \/keda-adapter$/m);
  assert.match(df, /^COPY ca-certificates\.crt \/etc\/ssl\/certs\/ca-certificates\.crt$/m);
  assert.match(df, /^USER 65532:65532$/m, 'runAsNonRoot needs a numeric user');
  assert.match(df, /^ENTRYPOINT \["\/keda-adapter","--secure-port=6443","--logtostderr=true","--v=0"\]$/m);
  assert.doesNotMatch(kedaDockerfile(imgs[0]!, false), /ca-certificates/);
});

test('KEDA\'s own config/default: CRDs apart, the Deployments re-tagged to the local images and never pulled, the rest as upstream has it; an unknown image refused', () => {
  const { crds, rest } = kedaObjects(RENDERED);
  assert.deepEqual(crds.map((c) => c.metadata.name), ['scaledobjects.keda.sh']);
  assert.deepEqual(rest.map((o) => `${o.kind}/${o.metadata.name}`), ['Namespace/keda', 'Deployment/keda-operator', 'Deployment/keda-metrics-apiserver', `APIService/${EXTERNAL_METRICS_API}`]);
  const containers = rest.filter((o) => o.kind === 'Deployment').map((o) => (o as unknown as { spec: { template: { spec: { containers: { image: string; imagePullPolicy: string; args?: string[] }[] } } } }).spec.template.spec.containers[0]!);
  assert.deepEqual(containers.map((c) => [c.image, c.imagePullPolicy]), [['digdag-ha.local/keda:2.16.1', 'Never'], ['digdag-ha.local/keda-metrics-apiserver:2.16.1', 'Never']]);
  assert.ok(containers[0]!.args!.includes('--enable-cert-rotation=true'), 'the operator rotates its own certificates');
  const api = rest.find((o) => o.kind === 'APIService') as unknown as { spec: Record<string, unknown> };
  assert.equal(api.spec.caBundle, undefined, 'the operator injects its CA');
  assert.throws(() => kedaObjects(RENDERED.replace('ghcr.io/kedacore/keda:main', 'ghcr.io/kedacore/keda-new:main')), (e: unknown) => e instanceof UserError && /names image ghcr\.io\/kedacore\/keda-new:main/.test(e.message));
});

test('KEDA up: its images built once into the image cache and imported, config/default applied server-side (CRDs Established first), then its Deployments and the APIService waited for', async () => {
  const cc = mk({ CLUSTER_ADDONS: 'keda' });
  for (const b of ['keda', 'keda-adapter', 'keda-webhooks']) fs.mkdirSync(kedaDir(cc), { recursive: true }), fs.writeFileSync(path.join(kedaDir(cc), b), `#!${b}`);
  fs.mkdirSync(path.join(kedaDir(cc), 'config', 'default'), { recursive: true });
  let applied = false;
  const { dockerfiles, runner: r } = addonUpRunner((argv, a) => {
    if (argv[1] === 'kustomize') return { stdout: RENDERED };
    if (a.includes(' apply ')) applied = true;
    if (a.includes('get deployments')) return { stdout: JSON.stringify({ items: applied ? KEDA_DEPLOYMENTS.map((name) => ({ metadata: { name }, status: { conditions: [{ type: 'Available', status: 'True' }] } })) : [] }) };
    if (a.includes('get apiservice')) return { stdout: applied ? 'True' : '' };
    return undefined;
  });
  const lines: string[] = [];
  const line = await startKeda(r, cc, (l) => lines.push(l));
  assert.match(line, /^KEDA v2\.16\.1 up in \d+\.\d s \(pods: .*v1beta1\.external\.metrics\.k8s\.io Available\)$/);
  assert.equal(dockerfiles.length, 3);
  assert.ok(dockerfiles.every((d) => /^USER 65532:65532$/m.test(d)));
  const cmds = r.commands();
  assert.deepEqual(fs.readdirSync(path.join(cc.cacheDir, 'images')).map((f) => f.replace(/-[0-9a-f]{24}\.tar$/, '')).sort(), ['digdag-ha.local_keda-admission-webhooks_2.16.1', 'digdag-ha.local_keda-metrics-apiserver_2.16.1', 'digdag-ha.local_keda_2.16.1'], 'kept in the image cache');
  assert.equal(cmds.filter((c) => / images import /.test(c)).length, 3, 'imported into containerd');
  assert.ok(cmds.includes(`kubectl kustomize ${path.join(kedaDir(cc), 'config', 'default')}`));
  const applies = r.calls.filter((c) => c.argv.includes('apply'));
  assert.equal(applies.length, 2);
  assert.ok(applies.every((c) => c.argv.includes('--server-side')), 'the ScaledJob CRD is too large for client-side apply');
  assert.match(applies[0]!.input!, /CustomResourceDefinition/);
  assert.doesNotMatch(applies[1]!.input!, /CustomResourceDefinition/);
  const order = (re: RegExp) => cmds.findIndex((c) => re.test(c));
  assert.ok(order(/ build /) < order(/kubectl kustomize/) && order(/wait --for=condition=Established/) < r.calls.indexOf(applies[1]!));
  assert.ok(lines.some((l) => /config\/default applied \(1 CRDs, 4 other objects\)/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /keda-operator, keda-metrics-apiserver, keda-admission Available after/.test(l)), lines.join('\n'));
  // Up again: nothing built or applied.
  const again = new RecordingRunner((argv) => (argv.includes('deployments') ? { stdout: JSON.stringify({ items: KEDA_DEPLOYMENTS.map((name) => ({ metadata: { name }, status: { conditions: [{ type: 'Available', status: 'True' }] } })) }) } : argv.includes('apiservice') ? { stdout: 'True' } : undefined));
  assert.equal(await startKeda(again, cc), 'KEDA v2.16.1: already up');
  assert.ok(again.calls.every((c) => !c.mutates));
});

test('KEDA in status and down: its Deployments and APIService in one line; down deletes its Deployments and ReplicaSets (not its CRDs) so that an up without it starts no KEDA pod', async () => {
  const cc = mk({ CLUSTER_ADDONS: 'keda' });
  const two = new RecordingRunner((argv) => (argv.includes('deployments') ? { stdout: JSON.stringify({ items: [{ metadata: { name: 'keda-operator' }, status: { conditions: [{ type: 'Available', status: 'True' }] } }, { metadata: { name: 'keda-admission' }, status: { conditions: [{ type: 'Available', status: 'False' }] } }] }) } : argv.includes('apiservice') ? { stdout: 'False' } : undefined));
  assert.match(await kedaStatusLine(two, cc), /^keda \(pods\) +1\/3 Deployments Available in namespace keda; v1beta1\.external\.metrics\.k8s\.io not Available$/);
  const r = new RecordingRunner();
  await removeKedaWorkloads(r, cc);
  assert.deepEqual(r.calls.map((c) => c.argv.slice(3).join(' ')), ['delete deployments,replicasets --all -n keda --ignore-not-found --wait=false']);
});
