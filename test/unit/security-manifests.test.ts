// The toolkit's rendering (the chart through `helm template`) under several security configs:
// built-in kinds validated strictly, GKE/cert-manager CRDs structurally, the NetworkPolicies
// checked for what they let through to and from every Digdag pod, and refusals naming the fix.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { renderManifests, type KubeObject } from '../../lib/kube/render.ts';
import { renderWarnings } from '../../lib/kube/values.ts';
import { UserError } from '../../lib/errors.ts';
import { holdsApiPassword, layoutRoles, servesUsers } from '../../lib/roles.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { testConfig } from '../helpers/fixtures.ts';
import { validateAll } from '../helpers/edge-crds.ts';

const runner = new ShellRunner(false, () => {});

/** The real rendering (lib/kube/render.ts) for a config, and the warnings apply prints with it. */
async function render(vars: Record<string, string>): Promise<{ config: Config; objects: KubeObject[]; warnings: string[] }> {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars });
  const { objects } = await renderManifests(config, runner);
  return { config, objects, warnings: renderWarnings(config) };
}

type Labels = Record<string, string>;
const matches = (sel: { matchLabels?: Labels } | undefined, labels: Labels) => Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
const pods = (objects: KubeObject[]) =>
  objects.filter((o) => ['Deployment', 'StatefulSet', 'Job'].includes(o.kind)).map((o) => {
    const spec = o.spec as { template: { metadata: { labels: Labels } } };
    return { name: `${o.kind}/${o.metadata.name}`, labels: spec.template.metadata.labels };
  });
interface Policy { spec: { podSelector: { matchLabels?: Labels }; policyTypes: string[]; ingress?: { from?: unknown[]; ports?: { port: number }[] }[]; egress?: { to?: unknown[]; ports?: { port: number }[] }[] } }
const policiesFor = (objects: KubeObject[], labels: Labels) =>
  objects.filter((o) => o.kind === 'NetworkPolicy').map((o) => o as unknown as Policy & KubeObject).filter((p) => matches(p.spec.podSelector, labels));

const CONFIGS: Record<string, Record<string, string>> = {
  'minikube defaults (cert-manager, no host)': {},
  'nginx, host, edge basic auth, own issuer and controller': { INGRESS_HOST: 'digdag.example.com', TLS_ISSUER: 'corp-ca', EDGE_AUTH: 'nginx-basic', INGRESS_CONTROLLER_NAMESPACE: 'edge', INGRESS_CONTROLLER_LABELS: 'app=nginx,tier=edge' },
  'gke managed certificate with IAP': {
    DIGDAG_HA_TARGET: 'gke', IMAGE: 'r.example/p/digdag-ha:0.10.5.1', INGRESS_HOST: 'digdag.example.com', INGRESS_TLS: 'gke-managed', EDGE_AUTH: 'iap', AUTH: 'none', IAP_OAUTH_SECRET: 'my-oauth',
  },
  'split layout': { DIGDAG_HA_LAYOUT: 'split' },
  'external DB by address, narrow egress': { DATABASE_URL: 'postgresql://digdag:pw-secret-123@10.1.2.3:5432/digdag_db', EGRESS_CIDRS: '199.36.153.8/30,0.0.0.0/0' },
};

for (const [name, vars] of Object.entries(CONFIGS)) {
  test(`security rendering, ${name}: every object validates`, async () => {
    const { objects } = await render(vars);
    assert.deepEqual(await validateAll(objects), []);
  });

  test(`security rendering, ${name}: default deny, UI only from the edge, other roles from nobody`, async () => {
    const { config, objects } = await render(vars);
    const deny = objects.find((o) => o.metadata.name === 'digdag-default-deny') as unknown as Policy | undefined;
    assert.ok(deny, 'default-deny policy missing');
    assert.deepEqual([...deny.spec.policyTypes].sort(), ['Egress', 'Ingress']);
    assert.equal((objects.find((o) => o.metadata.name === 'digdag-default-deny') as KubeObject).metadata.namespace, config.k8s.namespace);
    const all = pods(objects);
    for (const p of all) assert.ok(matches(deny.spec.podSelector, p.labels), `${p.name}: under the default deny`);
    // Every role of the layout, the migration Job, and PostgreSQL unless it is external.
    assert.equal(all.length, layoutRoles(config).length + 1 + (config.db.externalUrl ? 0 : 1), 'expected the role Deployments, the migration Job and PostgreSQL');
    for (const p of all) {
      const ingress: NonNullable<Policy['spec']['ingress']> = policiesFor(objects, p.labels).flatMap((x) => x.spec.ingress ?? []);
      const component = p.labels['app.kubernetes.io/component'];
      if (component === 'ui') {
        assert.equal(ingress.length, 1, `${p.name}: exactly one ingress rule`);
        assert.deepEqual(ingress[0]!.ports!.map((x: { port: number }) => x.port), [65432]);
        const from = JSON.stringify(ingress[0]!.from);
        if (config.security.ingressTls === 'gke-managed') assert.match(from, /130\.211\.0\.0\/22.*35\.191\.0\.0\/16/);
        else {
          assert.ok(from.includes(config.security.ingressControllerNamespace), from);
          for (const [k, v] of Object.entries(config.security.ingressControllerLabels)) assert.ok(from.includes(`"${k}":"${v}"`), from);
        }
      } else if (component === 'postgres') {
        assert.equal(ingress.length, 1);
        assert.match(JSON.stringify(ingress[0]!.from), /db-client/);
        assert.deepEqual(policiesFor(objects, p.labels).flatMap((x) => x.spec.egress ?? []), []);
      } else {
        assert.deepEqual(ingress, [], `${p.name} (${component}) must be reachable by nobody`);
      }
      if (component !== 'postgres') {
        const egress = JSON.stringify(policiesFor(objects, p.labels).flatMap((x) => x.spec.egress ?? []));
        assert.match(egress, /"port":5432/, `${p.name}: PostgreSQL`);
        assert.match(egress, /"port":53/, `${p.name}: DNS`);
        assert.match(egress, /"port":443/, `${p.name}: HTTPS`);
        assert.match(egress, /169\.254\.169\.254/, `${p.name}: metadata server`);
        if (config.db.externalUrl) assert.match(egress, /10\.1\.2\.3\/32/);
      }
    }
  });

  test(`security rendering, ${name}: TLS and redirect at the edge`, async () => {
    const { config, objects, warnings } = await render(vars);
    const ing = objects.find((o) => o.kind === 'Ingress')!;
    const ann = ing.metadata.annotations ?? {};
    const spec = ing.spec as { tls?: { hosts?: string[]; secretName: string }[]; ingressClassName?: string };
    if (config.security.ingressTls === 'cert-manager') {
      assert.equal(ann['cert-manager.io/cluster-issuer'], config.security.tlsIssuer);
      assert.equal(ann['nginx.ingress.kubernetes.io/force-ssl-redirect'], 'true');
      assert.equal(spec.tls?.[0]?.secretName, 'digdag-tls');
      assert.deepEqual(spec.tls?.[0]?.hosts, config.k8s.ingressHost ? [config.k8s.ingressHost] : undefined);
      if (!config.k8s.ingressHost) assert.ok(warnings.some((w) => /INGRESS_HOST/.test(w)));
    } else {
      assert.equal(spec.tls, undefined);
      assert.equal(spec.ingressClassName, undefined);
      assert.equal(ann['networking.gke.io/v1beta1.FrontendConfig'], 'digdag');
      const fc = objects.find((o) => o.kind === 'FrontendConfig')!;
      assert.equal((fc.spec as { redirectToHttps: { enabled: boolean } }).redirectToHttps.enabled, true);
      assert.deepEqual((objects.find((o) => o.kind === 'ManagedCertificate')!.spec as { domains: string[] }).domains, [config.k8s.ingressHost]);
      const svc = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'digdag-ui')!;
      assert.match(svc.metadata.annotations?.['cloud.google.com/backend-config'] ?? '', /digdag-ui/);
    }
    if (config.security.edgeAuth === 'nginx-basic') {
      assert.equal(ann['nginx.ingress.kubernetes.io/auth-type'], 'basic');
      assert.equal(ann['nginx.ingress.kubernetes.io/auth-secret'], 'digdag-edge-auth');
    }
    if (config.security.edgeAuth === 'iap') {
      const bc = objects.find((o) => o.kind === 'BackendConfig')!;
      assert.deepEqual((bc.spec as { iap: unknown }).iap, { enabled: true, oauthclientCredentials: { secretName: config.security.iapOauthSecret } });
    }
  });
}

test('egress excludes private ranges only where they fall inside the allowed CIDR', async () => {
  const { objects } = await render({ EGRESS_CIDRS: '0.0.0.0/0,199.36.153.8/30,10.0.0.0/8' });
  const eg = objects.find((o) => o.metadata.name === 'digdag-egress')!.spec as { egress: { to: { ipBlock: { cidr: string; except?: string[] } }[] }[] };
  assert.deepEqual(eg.egress[2]!.to.map((t) => t.ipBlock), [
    { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] },
    { cidr: '199.36.153.8/30' },
    { cidr: '10.0.0.0/8' },
  ]);
});

test('configurations that cannot work are refused: env-level ones by the config, Kubernetes combinations by the chart (naming the variables)', async () => {
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', EGRESS_CIDRS: '0.0.0.0' }), /EGRESS_CIDRS/);
  // A list with no CIDR would render `to: []`, which allows 443 to everywhere.
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', EGRESS_CIDRS: ',' }), /names no CIDR/);
  // nginx's htpasswd comes from Digdag's credentials, which AUTH=none does not make (create-secret's rule).
  assert.throws(() => testConfig({ DIGDAG_HA_TARGET: 'minikube', EDGE_AUTH: 'nginx-basic', AUTH: 'none' }), /AUTH=none turns off/);
  const refused = async (vars: Record<string, string>, message: RegExp, variables: RegExp) =>
    assert.rejects(render(vars), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, /^the chart refuses this configuration: /);
      assert.doesNotMatch(e.message, /execution error|template:|_helpers\.tpl/, 'helm\'s prefixes are stripped');
      assert.match(e.message, message);
      assert.match(e.fix!, variables);
      return true;
    });
  await refused({ INGRESS_TLS: 'gke-managed' }, /ingress.tls.mode=gke-managed needs ingress.host/, /ingress.host = INGRESS_HOST/);
  await refused({ EDGE_AUTH: 'iap', AUTH: 'none' }, /edgeAuth.mode=iap works only behind the GKE Ingress/, /edgeAuth.mode = EDGE_AUTH/);
  // IAP exists only behind the GKE Ingress, whatever the TLS setting.
  await refused({ EDGE_AUTH: 'iap', INGRESS_TLS: 'none', AUTH: 'none' }, /only behind the GKE Ingress/, /ingress.tls.mode = INGRESS_TLS/);
  await refused({ EDGE_AUTH: 'iap', INGRESS_TLS: 'gke-managed', INGRESS_HOST: 'd.example.com' }, /edgeAuth.mode=iap with auth.mode=basic/, /auth.mode = AUTH/);
  await refused({ UI_REPLICAS: '0' }, /roles.ui.replicas must be at least 1/, /UI_REPLICAS/);
  await refused({ AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '5', AGENT_MAX_REPLICAS: '3' }, /autoscaling.maxReplicas=3 is below roles.worker.replicas=5/, /autoscaling.maxReplicas = AGENT_MAX_REPLICAS.*roles.worker.replicas = WORKER_REPLICAS/);
  await refused({ DIGDAG_HA_LAYOUT: 'split', AGENT_AUTOSCALING: 'hpa', AGENT_REPLICAS: '5', AGENT_MAX_REPLICAS: '3' }, /below roles.agent.replicas=5/, /AGENT_REPLICAS/);
  // Autoscaling off: no bound to check; UI_REPLICAS=0 stays fine on the local target (every role serves the API).
  await render({ WORKER_REPLICAS: '12', AGENT_MAX_REPLICAS: '3' });
  assert.equal(testConfig({ UI_REPLICAS: '0' }).replicas.ui, 0);
});

test('EGRESS_CIDRS=none: no HTTPS rule at all (not an empty one), and a warning', async () => {
  const { objects, warnings } = await render({ EGRESS_CIDRS: 'none' });
  const eg = objects.find((o) => o.metadata.name === 'digdag-egress')!.spec as { egress: { to: unknown[]; ports: { port: number }[] }[] };
  assert.ok(eg.egress.every((r) => r.to.length > 0), 'a rule with an empty peer list allows everywhere');
  assert.ok(!eg.egress.some((r) => r.ports.some((p) => p.port === 443)));
  assert.ok(eg.egress.some((r) => r.ports.some((p) => p.port === 5432)), 'PostgreSQL still allowed');
  assert.ok(warnings.some((w) => /EGRESS_CIDRS=none/.test(w)));
});

test('KEDA: the PostgreSQL policy admits KEDA\'s namespace (its operator runs the queue query); not without KEDA', async () => {
  const from = async (vars: Record<string, string>) =>
    ((await render(vars)).objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-postgres')!.spec as { ingress: { from: { namespaceSelector?: { matchLabels: Record<string, string> } }[] }[] }).ingress[0]!.from;
  const keda = await from({ AGENT_AUTOSCALING: 'keda', KEDA_NAMESPACE: 'autoscalers' });
  assert.ok(keda.some((p) => p.namespaceSelector?.matchLabels['kubernetes.io/metadata.name'] === 'autoscalers'));
  assert.ok(!(await from({})).some((p) => p.namespaceSelector));
});

for (const [name, vars] of Object.entries(CONFIGS)) {
  test(`security rendering, ${name}: restricted namespace, no SA token, spread replicas, authenticated readiness, password only on the UI`, async () => {
    const { config, objects } = await render(vars);
    const ns = objects.filter((o) => o.kind === 'Namespace');
    assert.equal(ns.length, 1);
    assert.equal(ns[0]!.metadata.name, config.k8s.namespace);
    assert.equal(ns[0]!.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted');
    for (const o of objects.filter((x) => ['Deployment', 'StatefulSet', 'Job'].includes(x.kind))) {
      assert.equal(o.spec.template.spec.automountServiceAccountToken, false, `${o.kind}/${o.metadata.name} mounts a service-account token`);
    }
    const env = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('digdag-env'))!;
    assert.equal(env.data!.DIGDAG_AUTH, config.security.auth);
    for (const role of layoutRoles(config)) {
      const d = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === `digdag-${role}`)!;
      const spec = d.spec.template.spec;
      const spread = spec.topologySpreadConstraints as { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } }[];
      assert.deepEqual(spread.map((c) => c.topologyKey), ['topology.kubernetes.io/zone', 'kubernetes.io/hostname'], role);
      for (const c of spread) assert.equal(c.labelSelector.matchLabels['app.kubernetes.io/component'], role);
      const main = spec.containers[0];
      assert.deepEqual(main.readinessProbe.exec.command, ['/usr/local/bin/digdag-entrypoint', 'probe'], role);
      assert.equal(main.livenessProbe.httpGet.path, '/api/version', 'liveness stays on the open /api/version');
      assert.ok(main.volumeMounts.some((m: { name: string; mountPath: string }) => m.name === 'api-credentials' && m.mountPath === '/etc/digdag-api'));
      const vol = spec.volumes.find((v: { name: string }) => v.name === 'api-credentials').secret;
      assert.equal(vol.secretName, 'digdag-api-credentials');
      if (holdsApiPassword(role)) assert.equal(vol.items, undefined, 'the UI gets username and password');
      else assert.deepEqual(vol.items, [{ key: 'username', path: 'username' }], `${role} must not get the password`);
      assert.equal(d.spec.template.metadata.labels['digdag-ha/api'] === 'true', servesUsers(role), 'the Service selects exactly the roles that serve users');
    }
  });
}

test('cluster target: the egress policy also allows DNS to the node (the test cluster\'s CoreDNS is a node process)', async () => {
  const { renderManifests } = await import('../../lib/kube/render.ts');
  const { ShellRunner } = await import('../../lib/runner.ts');
  const { testConfig } = await import('../helpers/fixtures.ts');
  const { objects } = await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'cluster' }), new ShellRunner(false, () => {}));
  const dns = objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-egress')!.spec.egress[1];
  assert.deepEqual(dns.ports.map((p: { port: number }) => p.port), [53, 53]);
  assert.ok(dns.to.some((t: { ipBlock?: { cidr: string } }) => t.ipBlock?.cidr === '10.244.0.1/32'));
  const { objects: mini } = await renderManifests(testConfig({ DIGDAG_HA_TARGET: 'minikube' }), new ShellRunner(false, () => {}));
  assert.ok(!mini.find((o) => o.metadata.name === 'digdag-egress')!.spec.egress[1].to.some((t: { ipBlock?: { cidr: string } }) => t.ipBlock?.cidr === '10.244.0.1/32'));
});
