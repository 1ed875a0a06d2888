// The front door without a cluster: the own cluster's controller add-on as configuration
// (Traefik on loopback, the IngressClass it serves), the ingress task's checks before it waits
// (class, TLS Secret, edge Secret, a controller that never answers) each refused with the fix,
// the htpasswd format every nginx-annotation controller checks, and the Ingress a user deploys
// being the same for minikube's nginx and the own cluster's Traefik. The real thing runs in
// test/integration/kube-e2e.test.ts (test/helpers/front-door.ts).
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { apr1, htpasswdLine } from '../../lib/auth.ts';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { INGRESS_CLASS, INGRESS_CONTROLLER_NAME, TRAEFIK_ADDRESS, TRAEFIK_PORTS, traefikComponent, traefikDir, traefikMissing, traefikObjects } from '../../lib/cluster/traefik.ts';
import { UserError } from '../../lib/errors.ts';
import { edgeAuthSecretProblem, ingress, INGRESS_CLASS_NAME, ingressPreflight, tlsSecretProblem, waitIngressAddress } from '../../lib/kube/ingress.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { TRAEFIK_VERSION } from '../../lib/versions.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';

const mk = (vars: Record<string, string> = {}) => {
  const state = tempDir('dh-front-door-');
  return testConfig({ DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: path.join(state, 'cache'), ...vars });
};

test('CLUSTER_ADDONS takes a list (keda,traefik); anything else is refused with an example', () => {
  assert.deepEqual(loadClusterConfig(mk({ CLUSTER_ADDONS: 'keda,traefik' })).addons, ['keda', 'traefik']);
  assert.deepEqual(loadClusterConfig(mk({ CLUSTER_ADDONS: 'traefik' })).addons, ['traefik']);
  assert.throws(() => mk({ CLUSTER_ADDONS: 'ingress-nginx' }), (e: UserError) => /CLUSTER_ADDONS="ingress-nginx".*wrong form/.test(e.message) && /CLUSTER_ADDONS=keda,traefik/.test(e.fix ?? ''));
});

test('CLUSTER_ADDONS=traefik: refused until .ci/install-traefik has built it into the cache, naming the fix', () => {
  const cc = loadClusterConfig(mk({ CLUSTER_ADDONS: 'traefik' }));
  assert.equal(traefikDir(cc), path.join(cc.cacheDir, `traefik-${TRAEFIK_VERSION}`));
  assert.match(traefikMissing(cc).join(), /traefik \(bash \.ci\/install-traefik\)/);
  assert.ok(missingPrerequisites(cc).some((m) => m.includes('install-traefik')));
  assert.ok(!missingPrerequisites(loadClusterConfig(mk())).some((m) => m.includes('install-traefik')), 'not asked for: not needed');
  fs.mkdirSync(traefikDir(cc), { recursive: true });
  fs.writeFileSync(path.join(traefikDir(cc), 'traefik'), '');
  assert.deepEqual(traefikMissing(cc), []);
});

test('Traefik as a host process: loopback only, HTTP and HTTPS on their standard ports, its own kubeconfig, the nginx provider for class nginx, no call home', () => {
  const cc = loadClusterConfig(mk({ CLUSTER_ADDONS: 'traefik' }));
  const c = traefikComponent(cc);
  assert.equal(c.name, 'traefik');
  assert.ok(c.argv.some((a) => /^KUBECONFIG=.*\/pki\/traefik\.kubeconfig$/.test(a)));
  const addresses = c.argv.filter((a) => /\.address=/.test(a)).map((a) => a.split('=')[1]!);
  assert.deepEqual(addresses, [`127.0.0.1:${TRAEFIK_PORTS.http}`, `127.0.0.1:${TRAEFIK_PORTS.https}`, `127.0.0.1:${TRAEFIK_PORTS.ping}`]);
  assert.equal(TRAEFIK_PORTS.http, 80, 'the HTTPS redirect drops the port: HTTPS must be on 443 for it to lead somewhere');
  assert.equal(TRAEFIK_PORTS.https, 443);
  for (const f of ['--providers.kubernetesIngressNGINX=true', `--providers.kubernetesIngressNGINX.ingressClass=${INGRESS_CLASS}`, `--providers.kubernetesIngressNGINX.controllerClass=${INGRESS_CONTROLLER_NAME}`, `--providers.kubernetesIngressNGINX.publishStatusAddress=${TRAEFIK_ADDRESS}`, '--global.checkNewVersion=false', '--global.sendAnonymousUsage=false']) {
    assert.ok(c.argv.includes(f), f);
  }
  assert.ok(c.argv.slice(2).some((a) => a.includes(`${cc.dir}/`)), 'the process itself (after env execs it) names the cluster dir: down and status recognise it by that');
  assert.ok(c.argv.includes('--entryPoints.ping.http.tls=true'), 'the health entry point is not a plain-HTTP one the Ingress would also answer on');
  const [cls, role] = traefikObjects();
  assert.deepEqual([cls!.kind, cls!.metadata.name, (cls as unknown as { spec: { controller: string } }).spec.controller], ['IngressClass', INGRESS_CLASS_NAME, 'k8s.io/ingress-nginx'], 'the class minikube\'s addon and ingress-nginx install');
  const rules = JSON.stringify((role as unknown as { rules: unknown }).rules);
  assert.match(rules, /"ingresses\/status"\],"verbs":\["update"\]/);
  assert.doesNotMatch(rules, /"(create|delete|patch)"/, 'it reads, and writes only the Ingress status');
});

test('$apr1$ htpasswd: the same hash openssl makes; what the toolkit writes passes the edge check, {SSHA} does not (Traefik refuses it)', () => {
  for (const [pw, salt] of [['password', 'abcdefgh'], ['a-much-longer-password-than-sixteen-bytes', 'Zz./0189']] as const) {
    assert.equal(apr1(pw, salt), execFileSync('openssl', ['passwd', '-apr1', '-salt', salt, pw], { encoding: 'utf8' }).trim());
  }
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  assert.equal(edgeAuthSecretProblem('e', { data: { auth: b64(htpasswdLine({ user: 'digdag', password: 'x'.repeat(32) })) } }), undefined);
  assert.equal(edgeAuthSecretProblem('e', { data: { auth: b64('digdag:$2y$05$abcdefghijklmnopqrstuv\n') } }), undefined, 'bcrypt, as the chart hashes');
  assert.match(edgeAuthSecretProblem('e', { data: { auth: b64('digdag:{SSHA}abcd\n') } }) ?? '', /the hash of digdag is not \$apr1\$, bcrypt or \{SHA\}/);
  assert.match(edgeAuthSecretProblem('e', { data: {} }) ?? '', /no key "auth"/);
});

// A CA and certificates for the TLS Secret checks.
const pkiDir = tempDir('dh-front-door-pki-');
const ossl = (args: string[]) => {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
};
const f = (n: string) => path.join(pkiDir, n);
ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=test CA']);
for (const [name, host] of [['good', 'digdag.example.com'], ['other', 'other.example.com']] as const) {
  ossl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${host}`]);
  fs.writeFileSync(f(`${name}.ext`), `subjectAltName=DNS:${host}\n`);
  ossl(['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.crt`), '-days', '2', '-extfile', f(`${name}.ext`)]);
}
const tlsSecret = (crt: string, key: string, type = 'kubernetes.io/tls') => ({ type, data: { 'tls.crt': fs.readFileSync(f(crt)).toString('base64'), 'tls.key': fs.readFileSync(f(key)).toString('base64') } });

test('a TLS Secret is checked against the host: another name, an expired certificate, a key of another certificate, the wrong type', () => {
  assert.equal(tlsSecretProblem('digdag-tls', tlsSecret('good.crt', 'good.key'), 'digdag.example.com'), undefined);
  assert.match(tlsSecretProblem('digdag-tls', tlsSecret('other.crt', 'other.key'), 'digdag.example.com') ?? '', /certificate is for DNS:other\.example\.com, not for INGRESS_HOST=digdag\.example\.com/);
  assert.match(tlsSecretProblem('digdag-tls', tlsSecret('good.crt', 'good.key'), 'digdag.example.com', new Date(Date.now() + 5 * 86400_000)) ?? '', /expired/);
  assert.match(tlsSecretProblem('digdag-tls', tlsSecret('good.crt', 'other.key'), 'digdag.example.com') ?? '', /tls\.key is not the key of its certificate/);
  assert.match(tlsSecretProblem('digdag-tls', tlsSecret('good.crt', 'good.key', 'Opaque'), 'digdag.example.com') ?? '', /type Opaque, not kubernetes\.io\/tls/);
});

/** kubectl answers from a table of objects by "kind/name" (absent → NotFound). */
const cluster = (objects: Record<string, unknown>) =>
  new RecordingRunner((argv) => {
    const i = argv.indexOf('get');
    if (i < 0) return undefined;
    const obj = objects[`${argv[i + 1]}/${argv[i + 2]}`];
    return obj ? { stdout: JSON.stringify(obj) } : { code: 1, stderr: 'Error from server (NotFound)' };
  });

const rejects = async (p: Promise<unknown>, message: RegExp, fix: RegExp) =>
  assert.rejects(p, (e: UserError) => {
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, message);
    assert.match(e.fix ?? '', fix);
    return true;
  });

test('the ingress task refuses, naming the fix: no controller for class nginx, the TLS Secret missing or for another host, the edge without its htpasswd Secret', async () => {
  const config = mk({ INGRESS_TLS: 'existingSecret', INGRESS_HOST: 'digdag.example.com', EDGE_AUTH: 'nginx-basic' });
  const cls = { 'ingressclass/nginx': { spec: { controller: 'k8s.io/ingress-nginx' } } };
  const edge = { 'secret/digdag-edge-auth': { data: { auth: Buffer.from(htpasswdLine({ user: 'digdag', password: 'p' })).toString('base64') } } };
  await rejects(ingressPreflight(testCtx(config, cluster({}))), /no IngressClass "nginx" in the cluster: no controller serves the Ingress/, /CLUSTER_ADDONS=traefik .*install-traefik|install-traefik.*CLUSTER_ADDONS=traefik/);
  await rejects(ingressPreflight(testCtx(mk({ DIGDAG_HA_TARGET: 'minikube' }), cluster({}))), /no IngressClass/, /minikube -p \S+ addons enable ingress/);
  await rejects(ingressPreflight(testCtx(config, cluster(cls))), /INGRESS_TLS=existingSecret: no Secret digdag-tls in namespace/, /kubectl -n \S+ create secret tls digdag-tls --cert=<certificate for digdag\.example\.com>/);
  await rejects(ingressPreflight(testCtx(config, cluster({ ...cls, 'secret/digdag-tls': tlsSecret('other.crt', 'other.key') }))), /certificate is for DNS:other\.example\.com, not for INGRESS_HOST=digdag\.example\.com/, /create secret tls digdag-tls/);
  await rejects(ingressPreflight(testCtx(config, cluster({ ...cls, 'secret/digdag-tls': tlsSecret('good.crt', 'good.key') }))), /EDGE_AUTH=nginx-basic: no htpasswd Secret digdag-edge-auth/, /create-secret/);
  const ok = await ingressPreflight(testCtx(config, cluster({ ...cls, ...edge, 'secret/digdag-tls': tlsSecret('good.crt', 'good.key') })));
  assert.equal(ok.certificate, fs.readFileSync(f('good.crt'), 'utf8').trim(), 'the certificate the probe then expects');
});

test('a controller that never gives the Ingress an address: the wait ends with which controller to check', async () => {
  const config = mk({ CLUSTER_ADDONS: 'traefik' });
  const runner = new RecordingRunner((argv) => (argv.includes('ingress') ? { stdout: '' } : { stdout: '' }));
  await rejects(waitIngressAddress(testCtx(config, runner), 50, 10), /got no address within 0 s: the controller serving IngressClass "nginx" is not running or not ready/, /CLUSTER_ADDONS=traefik/);
});

test('the ingress step on the own cluster: not applicable without the controller add-on, applicable with it', () => {
  assert.match(ingress.notApplicable!(testCtx(mk(), new RecordingRunner())) ?? '', /CLUSTER_ADDONS has no traefik/);
  assert.equal(ingress.notApplicable!(testCtx(mk({ CLUSTER_ADDONS: 'traefik' }), new RecordingRunner())), undefined);
});

test('what a user deploys is the same Ingress for nginx on minikube and for the own cluster\'s controller: class, annotations, TLS', async () => {
  const runner = new ShellRunner(false, () => {});
  const edge = { INGRESS_TLS: 'existingSecret', INGRESS_HOST: 'digdag.example.com', EDGE_AUTH: 'nginx-basic' };
  const ingressOf = async (vars: Record<string, string>) => (await renderManifests(mk({ ...edge, ...vars }), runner)).objects.find((o) => o.kind === 'Ingress') as unknown as { metadata: { annotations: Record<string, string> }; spec: Record<string, unknown> };
  const mini = await ingressOf({ DIGDAG_HA_TARGET: 'minikube' });
  const own = await ingressOf({ CLUSTER_ADDONS: 'traefik' });
  assert.deepEqual(own.metadata.annotations, mini.metadata.annotations);
  assert.deepEqual(own.spec, mini.spec);
  assert.equal(own.spec.ingressClassName, 'nginx');
  assert.deepEqual(own.spec.tls, [{ secretName: 'digdag-tls', hosts: ['digdag.example.com'] }]);
  assert.ok(Object.keys(own.metadata.annotations).every((a) => a.startsWith('nginx.ingress.kubernetes.io/')), `only nginx's annotations: ${Object.keys(own.metadata.annotations).join(', ')}`);
  assert.equal(own.metadata.annotations['nginx.ingress.kubernetes.io/auth-type'], 'basic');
});
