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
import { EXTERNAL_METRICS_API, KEDA_PORTS, KEDA_PROCESSES, KEDA_USER, KEDA_WEBHOOKS_SERVICE, kedaComponents, kedaDir, kedaMissing, kedaObjects } from '../../lib/cluster/keda.ts';
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
  assert.match(kedaMissing(cc).join(), /keda, keda-adapter, keda-webhooks, crd, rbac, metrics-server, webhooks \(bash \.ci\/install-keda\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-keda')));
  assert.ok(!missingPrerequisites(mk()).some((m) => m.includes('install-keda')), 'not asked for: not needed');
});

test('KEDA as host processes: its own kubeconfig, the cluster DNS in a private mount namespace, loopback except the adapter and the webhooks on the bridge', () => {
  const cc = mk();
  const [op, ad, wh] = kedaComponents(cc);
  assert.deepEqual(kedaComponents(cc).map((c) => c.name), [...KEDA_PROCESSES]);
  for (const c of [op!, ad!, wh!]) {
    assert.deepEqual(c.argv.slice(0, 4), ['unshare', '--mount', '--propagation', 'private']);
    assert.ok(c.argv.includes('WATCH_NAMESPACE='));
    assert.ok(c.argv.includes('POD_NAMESPACE=keda'));
    assert.ok(c.argv.some((a) => /^KUBECONFIG=.*\/pki\/keda\.kubeconfig$/.test(a)));
  }
  assert.ok(op!.argv.includes(`--metrics-service-bind-address=127.0.0.1:${KEDA_PORTS.grpc}`));
  assert.ok(op!.argv.includes('--enable-cert-rotation=false'));
  assert.ok(ad!.argv.includes(`--bind-address=${cc.net.bridgeIp}`), 'Endpoints reject loopback addresses');
  assert.ok(ad!.argv.includes(`--metrics-service-address=127.0.0.1:${KEDA_PORTS.grpc}`));
  // The webhook server takes a port only (every interface; the fence keeps it to the machine and its pods).
  assert.ok(wh!.argv.includes(`--port=${KEDA_PORTS.webhooks}`));
  assert.ok(wh!.argv.includes(`--metrics-bind-address=127.0.0.1:${KEDA_PORTS.webhooksMetrics}`));
  assert.ok(wh!.argv.includes(`--health-probe-bind-address=127.0.0.1:${KEDA_PORTS.webhooksHealth}`));
  assert.ok(wh!.argv.some((a) => /^--cert-dir=.*\/keda\/certs$/.test(a)));
});

test('KEDA\'s own config/: bindings name KEDA\'s user, the APIService trusts the cluster CA and leads to the bridge', () => {
  const cc = mk();
  const d = kedaDir(cc);
  // A minimal stand-in for the module zip's config/ (.ci/install-keda copies the real one).
  fs.mkdirSync(path.join(d, 'crd'), { recursive: true });
  fs.mkdirSync(path.join(d, 'rbac'));
  fs.mkdirSync(path.join(d, 'metrics-server'));
  fs.mkdirSync(path.join(d, 'webhooks'));
  fs.writeFileSync(
    path.join(d, 'webhooks', 'validation_webhooks.yaml'),
    'apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: keda-admission}\nwebhooks:\n- name: vscaledobject.kb.io\n  clientConfig: {service: {name: keda-admission-webhooks, namespace: keda, path: /validate-keda-sh-v1alpha1-scaledobject}}\n  failurePolicy: Ignore\n',
  );
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
  const ep = rest.find((o) => o.kind === 'Endpoints' && o.metadata.name === 'keda-metrics-apiserver') as unknown as { subsets: { addresses: { ip: string }[]; ports: { port: number }[] }[] };
  assert.deepEqual(ep.subsets[0], { addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: KEDA_PORTS.adapter, protocol: 'TCP' }] });
  // The webhooks: KEDA's own configuration, trusting the cluster CA, through a Service whose Endpoints are the bridge.
  const vwc = rest.find((o) => o.kind === 'ValidatingWebhookConfiguration') as unknown as { webhooks: { name: string; failurePolicy: string; clientConfig: { caBundle: string; service: { name: string; namespace: string; port: number; path: string } } }[] };
  assert.deepEqual(vwc.webhooks.map((w) => [w.name, w.failurePolicy, w.clientConfig.caBundle, w.clientConfig.service]), [
    ['vscaledobject.kb.io', 'Ignore', Buffer.from('CA').toString('base64'), { name: KEDA_WEBHOOKS_SERVICE, namespace: 'keda', path: '/validate-keda-sh-v1alpha1-scaledobject', port: 443 }],
  ]);
  const whEp = rest.find((o) => o.kind === 'Endpoints' && o.metadata.name === KEDA_WEBHOOKS_SERVICE) as unknown as { subsets: unknown[] };
  assert.deepEqual(whEp.subsets[0], { addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: KEDA_PORTS.webhooks, protocol: 'TCP' }] });
  const whSvc = rest.find((o) => o.kind === 'Service' && o.metadata.name === KEDA_WEBHOOKS_SERVICE) as unknown as { spec: { selector?: unknown; ports: { port: number; targetPort: number }[] } };
  assert.equal(whSvc.spec.selector, undefined, 'no selector: its Endpoints are ours');
  assert.deepEqual([whSvc.spec.ports[0]!.port, whSvc.spec.ports[0]!.targetPort], [443, KEDA_PORTS.webhooks]);
});
