// ingress on Kubernetes: enable the controller on minikube, check what the Ingress needs before
// waiting on it (a controller for its class, its TLS Secret covering the host, the edge's htpasswd
// Secret), then wait for the Ingress address and probe it from this machine. On the own cluster
// the controller is Traefik (CLUSTER_ADDONS=traefik, lib/cluster/traefik.ts), serving the same
// Ingress and annotations as nginx on minikube.
import crypto from 'node:crypto';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { waitFor } from '../processes.ts';
import { probeIngress } from './ingress-probe.ts';
import { diagnostics, kubectl, requireCluster } from './kubectl.ts';
import { changesApplied } from '../runner.ts';
import { SECRET_NAMES } from './values.ts';

/** The IngressClass the rendered Ingress names (the chart's ingress.className default). */
export const INGRESS_CLASS_NAME = 'nginx';

/** How to get a controller for the class, per target. */
export function controllerHint(config: Config): string {
  switch (config.target) {
    case 'minikube':
      return `minikube -p ${config.k8s.minikubeProfile} addons enable ingress`;
    case 'cluster':
      return 'start the own cluster with its Ingress controller: bash .ci/install-traefik; CLUSTER_ADDONS=traefik npx tsx tasks/cluster.ts up';
    default:
      return 'install ingress-nginx (helm install ingress-nginx ingress-nginx/ingress-nginx -n ingress-nginx --create-namespace)';
  }
}

interface SecretJson {
  type?: string;
  data?: Record<string, string>;
}

/**
 * Why a TLS Secret cannot serve `host` (undefined when it can): not kubernetes.io/tls, no
 * certificate or key, a certificate for another name, expired or not yet valid, a key of another
 * certificate.
 */
export function tlsSecretProblem(name: string, secret: SecretJson, host: string, now = new Date()): string | undefined {
  if (secret.type !== 'kubernetes.io/tls') return `Secret ${name} is of type ${secret.type ?? '(none)'}, not kubernetes.io/tls`;
  const pem = Buffer.from(secret.data?.['tls.crt'] ?? '', 'base64').toString('utf8');
  const keyPem = Buffer.from(secret.data?.['tls.key'] ?? '', 'base64').toString('utf8');
  if (!pem.includes('BEGIN CERTIFICATE') || !keyPem.includes('PRIVATE KEY')) return `Secret ${name} lacks tls.crt or tls.key`;
  let cert: crypto.X509Certificate;
  try {
    cert = new crypto.X509Certificate(pem);
  } catch (e) {
    return `Secret ${name}'s tls.crt is not a certificate (${(e as Error).message})`;
  }
  const names = cert.subjectAltName ?? cert.subject;
  if (host && !cert.checkHost(host)) return `Secret ${name}'s certificate is for ${names}, not for INGRESS_HOST=${host}`;
  if (new Date(cert.validTo) < now) return `Secret ${name}'s certificate expired on ${cert.validTo}`;
  if (new Date(cert.validFrom) > now) return `Secret ${name}'s certificate is not valid before ${cert.validFrom}`;
  try {
    if (!cert.checkPrivateKey(crypto.createPrivateKey(keyPem))) return `Secret ${name}'s tls.key is not the key of its certificate`;
  } catch (e) {
    return `Secret ${name}'s tls.key is not a private key (${(e as Error).message})`;
  }
  return undefined;
}

/** The first certificate of a TLS Secret, PEM (what the controller must serve). */
export function secretCertificate(secret: SecretJson): string {
  const pem = Buffer.from(secret.data?.['tls.crt'] ?? '', 'base64').toString('utf8');
  return /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(pem)?.[0] ?? '';
}

/**
 * Why an htpasswd Secret cannot serve basic auth at the edge (undefined when it can): no key
 * `auth`, no line, or a hash only some controllers check ({SSHA} and crypt(3)'s SHA-2 formats:
 * nginx takes them, Traefik refuses every password). $apr1$, bcrypt and {SHA} work on both.
 */
export function edgeAuthSecretProblem(name: string, secret: SecretJson): string | undefined {
  const raw = secret.data?.auth;
  if (!raw) return `Secret ${name} has no key "auth" (an htpasswd file)`;
  const lines = Buffer.from(raw, 'base64').toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (!lines.length) return `Secret ${name}'s htpasswd file has no user`;
  for (const l of lines) {
    const [user, hash = ''] = l.split(/:(.*)/s);
    if (!/^(\$apr1\$|\$2[abxy]\$|\{SHA\})/.test(hash)) return `Secret ${name}: the hash of ${user} is not $apr1$, bcrypt or {SHA} (the formats every nginx-annotation controller checks; ${hash.slice(0, 6)}… is not)`;
  }
  return undefined;
}

async function getJson<T>(ctx: Ctx, args: string[]): Promise<T | undefined> {
  const r = await ctx.runner.run({ argv: kubectl(ctx.config, ...args, '-o', 'json'), nothrow: true, quiet: true });
  if (r.code !== 0 || !r.stdout.trim()) return undefined;
  return JSON.parse(r.stdout) as T;
}

/** What the Ingress needs from the cluster, checked before waiting on it; returns the certificate to expect. */
export async function ingressPreflight(ctx: Ctx): Promise<{ certificate?: string }> {
  const c = ctx.config;
  const s = c.security;
  if (s.ingressTls === 'gke-managed') return {};
  const cls = await getJson<{ spec?: { controller?: string } }>(ctx, ['get', 'ingressclass', INGRESS_CLASS_NAME]);
  if (!cls) throw new UserError(`no IngressClass "${INGRESS_CLASS_NAME}" in the cluster: no controller serves the Ingress`, controllerHint(c));
  const ns = c.k8s.namespace;
  const out: { certificate?: string } = {};
  if (s.ingressTls === 'existingSecret') {
    const secret = await getJson<SecretJson>(ctx, ['get', 'secret', s.tlsSecret]);
    if (!secret) throw new UserError(`INGRESS_TLS=existingSecret: no Secret ${s.tlsSecret} in namespace ${ns}`, `kubectl -n ${ns} create secret tls ${s.tlsSecret} --cert=<certificate for ${c.k8s.ingressHost || 'INGRESS_HOST'}> --key=<its key>`);
    if (!c.k8s.ingressHost) throw new UserError('INGRESS_TLS=existingSecret needs INGRESS_HOST: the controller picks the certificate by the name a client asks for', 'set INGRESS_HOST to the name on the certificate');
    const problem = tlsSecretProblem(s.tlsSecret, secret, c.k8s.ingressHost);
    if (problem) throw new UserError(problem, `replace it: kubectl -n ${ns} create secret tls ${s.tlsSecret} --cert=<certificate for ${c.k8s.ingressHost}> --key=<its key> --dry-run=client -o yaml | kubectl apply -f -`);
    out.certificate = secretCertificate(secret);
  }
  if (s.edgeAuth === 'nginx-basic') {
    const name = SECRET_NAMES.edge;
    const secret = await getJson<SecretJson>(ctx, ['get', 'secret', name]);
    if (!secret) throw new UserError(`EDGE_AUTH=nginx-basic: no htpasswd Secret ${name} in namespace ${ns}, so the controller would refuse everyone`, 'npx tsx tasks/create-secret.ts (it writes the Secret from the API user and password)');
    const problem = edgeAuthSecretProblem(name, secret);
    if (problem) throw new UserError(problem, 'npx tsx tasks/create-secret.ts writes it again ($apr1$)');
  }
  return out;
}

/** Waits for the controller to give the Ingress an address; says which controller to look at when none does. */
export async function waitIngressAddress(ctx: Ctx, timeoutMs = 300_000, intervalMs = 3000): Promise<string> {
  let address = '';
  await waitFor(async () => {
    const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'ingress', 'digdag', '-o', 'jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}'), nothrow: true, quiet: true });
    address = res.stdout.trim();
    // Under --dry-run nothing was applied: one look, then no wait.
    return !!address || !changesApplied(ctx.runner);
  }, timeoutMs, intervalMs);
  if (!address && changesApplied(ctx.runner)) {
    throw new UserError(
      `the Ingress got no address within ${Math.round(timeoutMs / 1000)} s: the controller serving IngressClass "${INGRESS_CLASS_NAME}" is not running or not ready`,
      `check it (${controllerHint(ctx.config)})`,
      await diagnostics(ctx, 'app.kubernetes.io/component=ui'),
    );
  }
  return address;
}

export const ingress: Impl = {
  // The own cluster serves the Ingress only with its controller add-on.
  notApplicable: (ctx) =>
    ctx.config.target === 'cluster' && !ctx.config.cluster.addons.includes('traefik')
      ? 'the test cluster runs no Ingress controller (CLUSTER_ADDONS has no traefik): the Ingress is applied but not served; the UI is reached through port-forward'
      : undefined,
  run: async (ctx) => {
    await requireCluster(ctx);
    if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', ctx.config.k8s.minikubeProfile, 'addons', 'enable', 'ingress'], mutates: true });
    const { certificate } = changesApplied(ctx.runner) ? await ingressPreflight(ctx) : {};
    const address = await waitIngressAddress(ctx);
    ctx.facts.ingressAddress = address;
    ctx.facts.ingressCertificate = certificate;
    if (!changesApplied(ctx.runner)) return;
    const report = await probeIngress(ctx.config, { address, certificate });
    ctx.facts.ingressEndpoint = report.url;
    // Not fatal here (a certificate may still be being issued); verify-ha counts it.
    ctx.runner.log(`UI through the Ingress: ${report.url} (${report.ok ? '' : 'NOT OK: '}${report.detail})`);
  },
};
