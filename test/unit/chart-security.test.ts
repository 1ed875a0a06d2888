// The chart's security: NetworkPolicies around every pod of the release (checked for what they let
// through), TLS and edge auth per mode, refused combinations, Pod Security "restricted" for every
// pod, and NOTES' warnings.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KubeObject } from '../../lib/kube/render.ts';
import { LAYOUT_ROLES, LAYOUTS, servesUsers } from '../../lib/roles.ts';
import { helmNotes, helmTemplate } from '../helpers/chart.ts';
import { validateAll } from '../helpers/edge-crds.ts';

type Labels = Record<string, string>;
interface Selector { matchLabels?: Labels }
interface Peer { podSelector?: Selector; namespaceSelector?: Selector; ipBlock?: { cidr: string; except?: string[] } }
interface PolicyPort { port: number | string; protocol?: string }
interface Rule { from?: Peer[]; to?: Peer[]; ports?: PolicyPort[] }
interface Policy extends KubeObject { spec: { podSelector: Selector; policyTypes: string[]; ingress?: Rule[]; egress?: Rule[] } }
interface Pod { name: string; component: string; labels: Labels; spec: any } // eslint-disable-line @typescript-eslint/no-explicit-any

const render = (set: string[] = []) => {
  const r = helmTemplate(set);
  assert.equal(r.status, 0, r.stderr);
  return r.objects;
};
const failure = (set: string[]) => {
  const r = helmTemplate(set);
  assert.notEqual(r.status, 0, `${set.join(' ')} must be refused`);
  return r.stderr;
};
const find = (objs: KubeObject[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} missing`);
  return o;
};
/** `helm test` hooks exist only while `helm test` runs. */
const isTestHook = (o: KubeObject) => o.metadata.annotations?.['helm.sh/hook'] === 'test';
const matches = (sel: Selector | undefined, labels: Labels) => Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
const pods = (objects: KubeObject[]): Pod[] => objects.flatMap((o) => {
  if (['Deployment', 'StatefulSet', 'Job'].includes(o.kind)) {
    const t = o.spec.template;
    return [{ name: `${o.kind}/${o.metadata.name}`, component: t.metadata.labels['app.kubernetes.io/component'], labels: t.metadata.labels, spec: t.spec }];
  }
  if (o.kind === 'Pod') return [{ name: `Pod/${o.metadata.name}`, component: o.metadata.labels!['app.kubernetes.io/component']!, labels: o.metadata.labels!, spec: o.spec }];
  return [];
});
const policies = (objects: KubeObject[]) => objects.filter((o): o is Policy => o.kind === 'NetworkPolicy');
const policiesFor = (objects: KubeObject[], labels: Labels) => policies(objects).filter((p) => matches(p.spec.podSelector, labels));
const ingressOf = (objects: KubeObject[], labels: Labels) => policiesFor(objects, labels).flatMap((p) => p.spec.ingress ?? []);
const egressOf = (objects: KubeObject[], labels: Labels) => policiesFor(objects, labels).flatMap((p) => p.spec.egress ?? []);
const ports = (r: Rule) => (r.ports ?? []).map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).sort();

const CONTROLLER_PEER = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'ingress-nginx' } } };
const GFE = [{ ipBlock: { cidr: '130.211.0.0/22' } }, { ipBlock: { cidr: '35.191.0.0/16' } }];
const GKE = ['ingress.tls.mode=gke-managed', 'ingress.host=digdag.example.com'];
const IAP = [...GKE, 'edgeAuth.mode=iap', 'auth.mode=none', 'edgeAuth.iapOauthSecret=my-oauth'];
const METRICS = ['metrics.podMonitor.enabled=true', 'metrics.queueExporter.enabled=true'];

for (const layout of LAYOUTS) for (const [label, extra] of [['defaults', []], ['monitoring on', METRICS]] as const) {
  test(`chart policies, layout ${layout}, ${label}: default deny for every pod; UI/API only from the ingress controller; other roles from nobody; PostgreSQL only from db clients`, () => {
    const objects = render([`layout=${layout}`, ...extra]);
    const deny = find(objects, 'NetworkPolicy', 'digdag-default-deny') as Policy;
    assert.deepEqual([...deny.spec.policyTypes].sort(), ['Egress', 'Ingress']);
    // The release's pods, not the namespace: another release's (or anyone's) pods are left alone.
    assert.deepEqual(deny.spec.podSelector, { matchLabels: { 'app.kubernetes.io/name': 'digdag', 'app.kubernetes.io/instance': 'dd' } });
    const all = pods(objects);
    const components = all.map((p) => p.component).sort();
    const expected = [...LAYOUT_ROLES[layout], 'migrate', 'postgres', 'test', ...(extra.length ? ['queue-exporter'] : [])].sort();
    assert.deepEqual(components, expected);
    for (const p of all) {
      assert.ok(matches(deny.spec.podSelector, p.labels), `${p.name} is outside the default deny`);
      // What the pod admits while the release runs (the helm test's own policies aside).
      const ingress = ingressOf(objects.filter((o) => !isTestHook(o)), p.labels);
      const metricsRule = (r: Rule) => JSON.stringify(r) === JSON.stringify({ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ port: 'metrics', protocol: 'TCP' }] });
      const hasMetricsPort = (p.spec.containers as { ports?: { name: string }[] }[]).some((c) => c.ports?.some((x) => x.name === 'metrics'));
      const rules = ingress.filter((r) => !(extra.length && metricsRule(r)));
      if (extra.length && hasMetricsPort) assert.ok(ingress.some(metricsRule), `${p.name}: Prometheus scrapes it`);
      if (p.labels['digdag-ha/api'] === 'true') {
        assert.ok(servesUsers(p.component as never), p.name);
        assert.equal(rules.length, 1, `${p.name}: one ingress rule`);
        assert.deepEqual(rules[0]!.from, [CONTROLLER_PEER]);
        assert.deepEqual(ports(rules[0]!), ['65432/TCP']);
      } else if (p.component === 'postgres') {
        assert.equal(rules.length, 1);
        assert.deepEqual(rules[0]!.from, [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'digdag', 'app.kubernetes.io/instance': 'dd', 'digdag-ha/db-client': 'true' } } }]);
        assert.deepEqual(ports(rules[0]!), ['5432/TCP']);
        assert.deepEqual(egressOf(objects, p.labels), [], 'PostgreSQL talks to nobody');
      } else {
        assert.deepEqual(rules, [], `${p.name} must be reachable by nobody (kubelet probes are not subject to policy)`);
      }
      if (p.labels['digdag-ha/db-client'] === 'true') {
        const egress = egressOf(objects, p.labels);
        const pg = egress.find((r) => r.to?.some((t) => t.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'postgres'));
        assert.ok(pg && matches(pg.to![0]!.podSelector, find(objects, 'StatefulSet', 'digdag-postgres').spec.template.metadata.labels), `${p.name}: PostgreSQL`);
        assert.deepEqual(ports(pg), ['5432/TCP']);
        assert.ok(egress.some((r) => ports(r).join() === '53/TCP,53/UDP' && r.to?.some((t) => t.podSelector?.matchLabels?.['k8s-app'] === 'kube-dns')), `${p.name}: DNS`);
        assert.ok(egress.some((r) => ports(r).join() === '443/TCP' && JSON.stringify(r.to) === JSON.stringify([{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] } }])), `${p.name}: HTTPS outside the private ranges`);
        assert.ok(egress.some((r) => ports(r).join() === '80/TCP,988/TCP' && r.to?.[0]?.ipBlock?.cidr === '169.254.169.254/32'), `${p.name}: metadata server`);
        assert.ok(egress.every((r) => r.to?.length), `${p.name}: no egress rule without a destination (that would allow all)`);
      }
    }
    assert.ok(['ui', 'migrate', ...LAYOUT_ROLES[layout]].every((c) => all.find((p) => p.component === c)!.labels['digdag-ha/db-client'] === 'true'), 'roles and the migration Job are db clients');
  });
}

test('chart policies: the helm test pod reaches the UI pods (and DNS) through hooks that exist only during helm test', () => {
  const objects = render();
  const pod = pods(objects).find((p) => p.component === 'test')!;
  const ui = pods(objects).find((p) => p.component === 'ui')!;
  const egress = egressOf(objects, pod.labels);
  assert.ok(egress.some((r) => ports(r).join() === '65432/TCP' && r.to!.some((t) => matches(t.podSelector, ui.labels))));
  assert.ok(egress.some((r) => ports(r).join() === '53/TCP,53/UDP'));
  const fromTest = ingressOf(objects, ui.labels).filter((r) => r.from!.some((f) => matches(f.podSelector, pod.labels)));
  assert.equal(fromTest.length, 1);
  for (const p of policiesFor(objects, pod.labels).concat(policies(objects).filter((x) => x.spec.ingress?.some((r) => r.from?.some((f) => matches(f.podSelector, pod.labels)))))) {
    if (p.metadata.name === 'digdag-default-deny') continue;
    assert.ok(isTestHook(p), `${p.metadata.name} must be a test hook`);
    assert.ok(Number(p.metadata.annotations!['helm.sh/hook-weight']) < 0, 'created before the test pod');
  }
  assert.ok(!render(['networkPolicy.enabled=false']).some((o) => o.kind === 'NetworkPolicy'));
});

test('chart defaults: TLS at the nginx Ingress from cert-manager, HTTP redirected; no secret value in any ConfigMap', () => {
  const objects = render(['auth.password=ui-pw-0123456789', 'secrets.dbPassword=db-pw-0123456789', 'secrets.postgresPassword=pg-pw-0123456789', 'edgeAuth.mode=nginx-basic']);
  const ing = find(objects, 'Ingress', 'digdag');
  assert.equal(ing.spec.ingressClassName, 'nginx');
  assert.deepEqual(ing.spec.tls, [{ secretName: 'digdag-tls' }]);
  const ann = ing.metadata.annotations!;
  assert.equal(ann['cert-manager.io/cluster-issuer'], 'letsencrypt');
  assert.equal(ann['nginx.ingress.kubernetes.io/ssl-redirect'], 'true');
  assert.equal(ann['nginx.ingress.kubernetes.io/force-ssl-redirect'], 'true');
  const secretValues = objects.filter((o) => o.kind === 'Secret').flatMap((s) => Object.entries(s.data ?? {}).filter(([k]) => k !== 'username').map(([, v]) => Buffer.from(v, 'base64').toString().trim()));
  assert.ok(secretValues.length >= 6);
  for (const cm of objects.filter((o) => o.kind === 'ConfigMap')) {
    for (const [key, text] of Object.entries(cm.data ?? {})) {
      for (const v of secretValues) assert.ok(!text.includes(v), `ConfigMap ${cm.metadata.name} ${key} holds a secret value`);
      assert.ok(!/pw-0123456789/.test(text), `ConfigMap ${cm.metadata.name} ${key}`);
    }
  }
  const host = find(render(['ingress.host=digdag.example.com', 'ingress.tls.issuer=corp-ca', 'ingress.tls.secretName=my-tls']), 'Ingress', 'digdag');
  assert.deepEqual(host.spec.tls, [{ secretName: 'my-tls', hosts: ['digdag.example.com'] }]);
  assert.equal(host.metadata.annotations!['cert-manager.io/cluster-issuer'], 'corp-ca');
});

test('ingress.tls.mode existingSecret and none: your certificate without cert-manager; plain HTTP only when asked, with a warning', () => {
  const own = find(render(['ingress.tls.mode=existingSecret', 'ingress.tls.secretName=corp-cert', 'ingress.host=digdag.example.com']), 'Ingress', 'digdag');
  assert.deepEqual(own.spec.tls, [{ secretName: 'corp-cert', hosts: ['digdag.example.com'] }]);
  assert.equal(own.metadata.annotations!['cert-manager.io/cluster-issuer'], undefined);
  assert.equal(own.metadata.annotations!['nginx.ingress.kubernetes.io/force-ssl-redirect'], 'true');
  const plain = find(render(['ingress.tls.mode=none']), 'Ingress', 'digdag');
  assert.equal(plain.spec.tls, undefined);
  assert.equal(plain.metadata.annotations!['cert-manager.io/cluster-issuer'], undefined);
  assert.equal(plain.metadata.annotations!['nginx.ingress.kubernetes.io/ssl-redirect'], 'false');
  assert.match(helmNotes(['ingress.tls.mode=none']), /WARNING: ingress\.tls\.mode=none: the Ingress serves plain HTTP/);
  assert.doesNotMatch(helmNotes(), /tls\.mode=none/);
  assert.match(helmNotes(), /WARNING: ingress\.host is empty: cert-manager cannot issue/);
  assert.doesNotMatch(helmNotes(['ingress.host=digdag.example.com']), /ingress\.host is empty/);
  assert.match(failure(['ingress.tls.mode=letsencrypt']), /mode/);
});

test('ingress.tls.mode=gke-managed: GKE Ingress with a managed certificate, redirect, BackendConfig, NEG Service, Google front ends in the API policy', async () => {
  const objects = render(GKE);
  assert.deepEqual(await validateAll(objects.filter((o) => !isTestHook(o))), []);
  const ing = find(objects, 'Ingress', 'digdag');
  const ann = ing.metadata.annotations!;
  assert.equal(ing.spec.ingressClassName, undefined);
  assert.equal(ing.spec.tls, undefined);
  assert.equal(ann['kubernetes.io/ingress.class'], 'gce');
  assert.equal(ann['networking.gke.io/managed-certificates'], 'digdag');
  assert.equal(ann['networking.gke.io/v1beta1.FrontendConfig'], 'digdag');
  assert.equal(ann['cert-manager.io/cluster-issuer'], undefined);
  assert.ok(!Object.keys(ann).some((k) => k.startsWith('nginx.ingress.kubernetes.io/')));
  assert.deepEqual(find(objects, 'ManagedCertificate', 'digdag').spec.domains, ['digdag.example.com']);
  assert.deepEqual(find(objects, 'FrontendConfig', 'digdag').spec.redirectToHttps, { enabled: true, responseCodeName: 'MOVED_PERMANENTLY_DEFAULT' });
  const bc = find(objects, 'BackendConfig', 'digdag-ui').spec;
  assert.deepEqual(bc.healthCheck, { type: 'HTTP', requestPath: '/api/version', port: 65432 });
  assert.equal(bc.sessionAffinity.affinityType, 'GENERATED_COOKIE');
  assert.equal(bc.iap, undefined);
  const svc = find(objects, 'Service', 'digdag-ui').metadata.annotations!;
  assert.equal(svc['cloud.google.com/neg'], '{"ingress": true}');
  assert.equal(svc['cloud.google.com/backend-config'], '{"default": "digdag-ui"}');
  const ui = pods(objects).find((p) => p.component === 'ui')!;
  const rules = ingressOf(objects.filter((o) => !isTestHook(o)), ui.labels);
  assert.deepEqual(rules.map((r) => r.from), [GFE]);
  assert.deepEqual(ports(rules[0]!), ['65432/TCP']);
  assert.ok(!render().some((o) => ['ManagedCertificate', 'FrontendConfig', 'BackendConfig'].includes(o.kind)), 'none of it on nginx');
});

test('edgeAuth.mode=nginx-basic: basic auth annotations and an htpasswd Secret of Digdag\'s own user and password, or edgeAuth.existingSecret', () => {
  const objects = render(['edgeAuth.mode=nginx-basic', 'auth.user=ops', 'auth.password=correct-horse-battery']);
  const ann = find(objects, 'Ingress', 'digdag').metadata.annotations!;
  assert.equal(ann['nginx.ingress.kubernetes.io/auth-type'], 'basic');
  assert.equal(ann['nginx.ingress.kubernetes.io/auth-secret'], 'digdag-edge-auth');
  assert.equal(ann['nginx.ingress.kubernetes.io/auth-secret-type'], 'auth-file');
  assert.equal(ann['nginx.ingress.kubernetes.io/auth-realm'], 'Digdag');
  const line = Buffer.from(find(objects, 'Secret', 'digdag-edge-auth').data!.auth!, 'base64').toString();
  // No bcrypt implementation is in node_modules and apache2-utils' htpasswd is not installed, so
  // the hash is checked for its form (bcrypt, cost 10) and the user; sprig's htpasswd computes it.
  assert.match(line, /^ops:\$2[aby]\$10\$[./A-Za-z0-9]{53}\n$/);
  assert.ok(!line.includes('correct-horse-battery'));
  const own = render(['edgeAuth.mode=nginx-basic', 'edgeAuth.existingSecret=corp-htpasswd']);
  assert.equal(find(own, 'Ingress', 'digdag').metadata.annotations!['nginx.ingress.kubernetes.io/auth-secret'], 'corp-htpasswd');
  assert.ok(!own.some((o) => o.metadata.name === 'digdag-edge-auth'));
  assert.ok(!render().some((o) => o.metadata.name === 'digdag-edge-auth' || Object.keys(o.metadata.annotations ?? {}).some((k) => k.includes('/auth-'))), 'none by default');
});

test('edgeAuth.mode=iap: the BackendConfig\'s IAP block with the OAuth client Secret; Digdag\'s own auth off', async () => {
  const objects = render(IAP);
  assert.deepEqual(await validateAll(objects.filter((o) => !isTestHook(o))), []);
  assert.deepEqual(find(objects, 'BackendConfig', 'digdag-ui').spec.iap, { enabled: true, oauthclientCredentials: { secretName: 'my-oauth' } });
  assert.equal(find(objects, 'ConfigMap', 'digdag-env').data!.DIGDAG_AUTH, 'none');
  assert.match(helmNotes(IAP), /auth\.mode=none behind IAP/);
  assert.doesNotMatch(helmNotes(IAP), /WARNING: auth\.mode=none/);
});

test('combinations that cannot work are refused, naming the fix', () => {
  const cases: [string[], RegExp][] = [
    [['ingress.tls.mode=gke-managed'], /ingress\.tls\.mode=gke-managed needs ingress\.host.*Set ingress\.host=/],
    [[...GKE, 'edgeAuth.mode=nginx-basic'], /edgeAuth\.mode=nginx-basic needs the nginx Ingress, not ingress\.tls\.mode=gke-managed/],
    [['edgeAuth.mode=iap', 'auth.mode=none'], /edgeAuth\.mode=iap works only behind the GKE Ingress: set ingress\.tls\.mode=gke-managed/],
    [['ingress.tls.mode=none', 'edgeAuth.mode=iap', 'auth.mode=none'], /edgeAuth\.mode=iap works only behind the GKE Ingress/],
    // lib/config.ts refuses the same: Digdag's 401 has no WWW-Authenticate, the browser behind IAP never prompts.
    [[...GKE, 'edgeAuth.mode=iap'], /edgeAuth\.mode=iap with auth\.mode=basic leaves the web UI without a way to send Digdag's password: with IAP set auth\.mode=none/],
    [['edgeAuth.mode=nginx-basic', 'auth.mode=none'], /set auth\.mode=basic, or give an htpasswd Secret \(key auth\) as edgeAuth\.existingSecret/],
    [['edgeAuth.mode=nginx-basic', 'auth.existingSecret=my-api'], /cannot hash the password of auth\.existingSecret.*set edgeAuth\.existingSecret/],
    [['edgeAuth.mode=nginx-basic', 'ingress.enabled=false'], /edgeAuth\.mode=nginx-basic works at the chart's Ingress: set ingress\.enabled=true/],
    [['edgeAuth.mode=basic'], /edgeAuth\.mode/],
    [['networkPolicy.egressCidrs={0.0.0.0}'], /egressCidrs/],
  ];
  for (const [set, message] of cases) assert.match(failure(set), message, set.join(' '));
  // And what does work: nginx basic auth as the only auth, from your own htpasswd Secret.
  render(['edgeAuth.mode=nginx-basic', 'auth.mode=none', 'edgeAuth.existingSecret=corp-htpasswd']);
  render(['ingress.enabled=false', 'ingress.tls.mode=gke-managed']);
});

test('egress: private ranges carved out only where they fall inside an allowed CIDR; none at all when egressCidrs is empty; extra DNS servers', () => {
  const objects = render(['networkPolicy.egressCidrs={0.0.0.0/0,199.36.153.8/30,10.0.0.0/8,172.0.0.0/8}', 'networkPolicy.dnsCidrs={10.244.0.1/32}']);
  const eg = find(objects, 'NetworkPolicy', 'digdag-egress').spec.egress as Rule[];
  assert.deepEqual(eg.find((r) => ports(r).join() === '443/TCP')!.to!.map((t) => t.ipBlock), [
    { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] },
    { cidr: '199.36.153.8/30' },
    { cidr: '10.0.0.0/8' },
    { cidr: '172.0.0.0/8', except: ['172.16.0.0/12'] },
  ]);
  assert.ok(eg.find((r) => ports(r).join() === '53/TCP,53/UDP')!.to!.some((t) => t.ipBlock?.cidr === '10.244.0.1/32'));
  const none = find(render(['networkPolicy.egressCidrs=null']), 'NetworkPolicy', 'digdag-egress').spec.egress as Rule[];
  assert.ok(!none.some((r) => ports(r).includes('443/TCP')));
  assert.ok(none.every((r) => r.to?.length));
});

test('external database: allowed by address when it is one (no in-cluster PostgreSQL rule), a warning when it is a DNS name; KEDA reaches the in-cluster one', () => {
  const ip = render(['database.external.enabled=true', 'database.external.host=10.1.2.3', 'database.external.port=6432']);
  const eg = find(ip, 'NetworkPolicy', 'digdag-egress').spec.egress as Rule[];
  assert.deepEqual(eg[0], { to: [{ ipBlock: { cidr: '10.1.2.3/32' } }], ports: [{ port: 6432, protocol: 'TCP' }] });
  assert.ok(!eg.some((r) => r.to?.some((t) => t.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'postgres')), 'no in-cluster PostgreSQL');
  assert.ok(!ip.some((o) => o.metadata.name === 'digdag-postgres'));
  const dns = ['database.external.enabled=true', 'database.external.host=db.internal.example'];
  assert.ok(!(find(render(dns), 'NetworkPolicy', 'digdag-egress').spec.egress as Rule[]).some((r) => ports(r).join() === '5432/TCP'));
  assert.match(helmNotes(dns), /database\.external\.host is db\.internal\.example, not an address/);
  const keda = find(render(['autoscaling.mode=keda']), 'NetworkPolicy', 'digdag-postgres').spec.ingress[0].from as Peer[];
  assert.deepEqual(keda[1], { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'keda' } } });
});

// Pod Security "restricted" (v1.30 rules the chart's pods touch) plus no service-account token.
function restrictedViolations(p: Pod): string[] {
  const out: string[] = [];
  const s = p.spec;
  const psc = s.securityContext ?? {};
  if (s.hostNetwork || s.hostPID || s.hostIPC) out.push('host namespaces');
  if (s.automountServiceAccountToken !== false) out.push('automountServiceAccountToken is not false');
  const volumeKinds = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret'];
  for (const v of s.volumes ?? []) if (!Object.keys(v).filter((k) => k !== 'name').every((k) => volumeKinds.includes(k))) out.push(`volume ${v.name}`);
  if (psc.runAsUser === 0) out.push('pod runAsUser 0');
  for (const c of [...(s.initContainers ?? []), ...s.containers]) {
    const sc = c.securityContext ?? {};
    if (sc.privileged) out.push(`${c.name}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${c.name}: allowPrivilegeEscalation`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`${c.name}: capabilities not dropped`);
    if ((sc.capabilities?.add ?? []).some((x: string) => x !== 'NET_BIND_SERVICE')) out.push(`${c.name}: capabilities added`);
    if (!(sc.runAsNonRoot ?? psc.runAsNonRoot)) out.push(`${c.name}: runAsNonRoot`);
    if (sc.runAsUser === 0) out.push(`${c.name}: runAsUser 0`);
    if (!['RuntimeDefault', 'Localhost'].includes((sc.seccompProfile ?? psc.seccompProfile)?.type)) out.push(`${c.name}: seccompProfile`);
    if ((c.ports ?? []).some((x: { hostPort?: number }) => x.hostPort)) out.push(`${c.name}: hostPort`);
  }
  return out.map((m) => `${p.name}: ${m}`);
}

test('Pod Security: every pod, Job and test pod the chart renders passes "restricted" and mounts no service-account token', () => {
  for (const set of [[], ['layout=split'], METRICS, ['database.external.enabled=true', 'database.external.host=10.1.2.3', 'autoscaling.mode=keda'], IAP]) {
    const all = pods(render(set));
    assert.ok(all.length >= 5);
    assert.deepEqual(all.flatMap(restrictedViolations), [], set.join(' '));
  }
});

test('namespace.create renders the release Namespace enforcing "restricted" (kept on uninstall); otherwise NOTES gives the label command', () => {
  const ns = find(render(['namespace.create=true']), 'Namespace', 'digdag');
  const labels = ns.metadata.labels!;
  for (const k of ['enforce', 'warn', 'audit']) assert.equal(labels[`pod-security.kubernetes.io/${k}`], 'restricted');
  assert.equal(ns.metadata.annotations!['helm.sh/resource-policy'], 'keep');
  assert.ok(!render().some((o) => o.kind === 'Namespace'), 'not by default: Helm does not own the namespace');
  // Under helm template lookup finds nothing: the command is printed in any case.
  const notes = helmNotes();
  const cmd = notes.split('\n').find((l) => l.includes('kubectl label'))!;
  assert.ok(cmd, notes);
  for (const k of ['enforce', 'warn', 'audit']) assert.ok(cmd.includes(`pod-security.kubernetes.io/${k}=restricted`), cmd);
  assert.match(cmd, /kubectl label --overwrite namespace digdag /);
  assert.doesNotMatch(helmNotes(['namespace.create=true']), /kubectl label/);
});
