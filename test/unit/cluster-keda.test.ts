// The own cluster's aggregation layer and KEDA add-on, as configuration: the API server's
// flags, KEDA's host processes and the objects made from KEDA's own config/ (the real thing
// runs in test/integration/suites/keda.ts, registered by kube-e2e.test.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { aggregationLayerFlags, FRONT_PROXY_CLIENT } from '../../lib/cluster/aggregation.ts';
import { components } from '../../lib/cluster/components.ts';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { EXTERNAL_METRICS_API, KEDA_PORTS, KEDA_USER, kedaComponents, kedaDir, kedaMissing, kedaObjects } from '../../lib/cluster/keda.ts';
import { missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { KEDA_VERSION } from '../../lib/versions.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const mk = (vars: Record<string, string> = {}) => {
  const state = tempDir('dh-keda-');
  return loadClusterConfig(testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: path.join(state, 'cache'), ...vars }));
};

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

test('CLUSTER_ADDONS=keda: refused until .ci/install-keda has built KEDA into the cache, naming the fix', () => {
  assert.deepEqual(mk().addons, []);
  const cc = mk({ CLUSTER_ADDONS: 'keda' });
  assert.deepEqual(cc.addons, ['keda']);
  assert.equal(kedaDir(cc), path.join(cc.cacheDir, `keda-${KEDA_VERSION}`));
  assert.match(kedaMissing(cc).join(), /keda, keda-adapter, crd, rbac, metrics-server \(bash \.ci\/install-keda\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-keda')));
  assert.ok(!missingPrerequisites(mk()).some((m) => m.includes('install-keda')), 'not asked for: not needed');
});

test('KEDA as host processes: its own kubeconfig, the cluster DNS in a private mount namespace, loopback except the adapter on the bridge', () => {
  const cc = mk();
  const [op, ad] = kedaComponents(cc);
  for (const c of [op!, ad!]) {
    assert.deepEqual(c.argv.slice(0, 4), ['unshare', '--mount', '--propagation', 'private']);
    assert.ok(c.argv.includes('WATCH_NAMESPACE='));
    assert.ok(c.argv.includes('POD_NAMESPACE=keda'));
    assert.ok(c.argv.some((a) => /^KUBECONFIG=.*\/pki\/keda\.kubeconfig$/.test(a)));
  }
  assert.ok(op!.argv.includes(`--metrics-service-bind-address=127.0.0.1:${KEDA_PORTS.grpc}`));
  assert.ok(op!.argv.includes('--enable-cert-rotation=false'));
  assert.ok(ad!.argv.includes(`--bind-address=${cc.net.bridgeIp}`), 'Endpoints reject loopback addresses');
  assert.ok(ad!.argv.includes(`--metrics-service-address=127.0.0.1:${KEDA_PORTS.grpc}`));
});

test('KEDA\'s own config/: bindings name KEDA\'s user, the APIService trusts the cluster CA and leads to the bridge', () => {
  const cc = mk();
  const d = kedaDir(cc);
  // A minimal stand-in for the module zip's config/ (.ci/install-keda copies the real one).
  fs.mkdirSync(path.join(d, 'crd'), { recursive: true });
  fs.mkdirSync(path.join(d, 'rbac'));
  fs.mkdirSync(path.join(d, 'metrics-server'));
  fs.writeFileSync(path.join(d, 'crd', 'keda.sh_scaledobjects.yaml'), 'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: scaledobjects.keda.sh}\n');
  fs.writeFileSync(path.join(d, 'rbac', 'role_binding.yaml'), 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: keda-operator}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: keda-operator}\nsubjects:\n- {kind: ServiceAccount, name: keda-operator, namespace: keda}\n');
  fs.writeFileSync(path.join(d, 'rbac', 'kustomization.yaml'), 'resources: [role_binding.yaml]\n');
  fs.writeFileSync(path.join(d, 'metrics-server', 'role.yaml'), 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: keda-external-metrics-reader}\nrules: []\n');
  fs.writeFileSync(
    path.join(d, 'metrics-server', 'role_binding.yaml'),
    'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: keda-hpa-controller-external-metrics}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: keda-external-metrics-reader}\nsubjects:\n- {kind: ServiceAccount, name: horizontal-pod-autoscaler, namespace: kube-system}\n',
  );
  fs.mkdirSync(path.join(cc.dir, 'keda', 'certs'), { recursive: true });
  fs.writeFileSync(path.join(cc.dir, 'keda', 'certs', 'ca.crt'), 'CA');
  const { crds, rest } = kedaObjects(cc);
  assert.deepEqual(crds.map((c) => c.metadata.name), ['scaledobjects.keda.sh']);
  const binding = rest.find((o) => o.metadata.name === 'keda-operator')!;
  assert.deepEqual(binding.subjects, [{ kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: KEDA_USER }]);
  const hpa = rest.find((o) => o.metadata.name === 'keda-hpa-controller-external-metrics')!;
  assert.equal(hpa.subjects![0]!.name, 'horizontal-pod-autoscaler', 'the HPA controller keeps its own binding');
  const api = rest.find((o) => o.kind === 'APIService') as unknown as { metadata: { name: string }; spec: { caBundle: string; insecureSkipTLSVerify?: boolean } };
  assert.equal(api.metadata.name, EXTERNAL_METRICS_API);
  assert.equal(api.spec.caBundle, Buffer.from('CA').toString('base64'));
  assert.equal(api.spec.insecureSkipTLSVerify, undefined);
  const ep = rest.find((o) => o.kind === 'Endpoints') as unknown as { subsets: { addresses: { ip: string }[]; ports: { port: number }[] }[] };
  assert.deepEqual(ep.subsets[0], { addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: KEDA_PORTS.adapter, protocol: 'TCP' }] });
});
