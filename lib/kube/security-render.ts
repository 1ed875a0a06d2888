// The security pieces of the Kubernetes rendering: which kustomize components to add and the
// patches that carry the config (issuer, host, ingress controller selector, egress CIDRs).
// lib/kube/render.ts kustomization() appends these before its namespace rename.
import { loadClusterConfig } from '../cluster/config.ts';
import type { Config } from '../config.ts';
import { parseDatabaseUrl } from '../postgres.ts';

export interface SecurityRendering {
  /** Component names under manifests/components (the caller makes the paths). */
  components: string[];
  patches: Record<string, unknown>[];
  /** What the user should know about this rendering (printed by the apply task). */
  warnings: string[];
}

const PRIVATE = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'];

function json(kind: string, name: string, ops: unknown[]): Record<string, unknown> {
  return { target: { kind, name }, patch: JSON.stringify(ops) };
}

export function securityRendering(config: Config): SecurityRendering {
  const s = config.security;
  const host = config.k8s.ingressHost;
  const comp = (name: string) => name;
  const components = [comp('security')];
  const warnings: string[] = [];
  const patches: Record<string, unknown>[] = [];

  if (s.ingressTls !== 'gke-managed') {
    // Behind the GKE Ingress the gke-edge component admits the Google front ends instead.
    patches.push(json('NetworkPolicy', 'digdag-api-from-ingress', [
      { op: 'replace', path: '/spec/ingress/0/from/0/namespaceSelector/matchLabels', value: { 'kubernetes.io/metadata.name': s.ingressControllerNamespace } },
      { op: 'replace', path: '/spec/ingress/0/from/0/podSelector/matchLabels', value: s.ingressControllerLabels },
    ]));
  }
  if (s.egressCidrs.length) {
    patches.push(json('NetworkPolicy', 'digdag-egress', [
      { op: 'replace', path: '/spec/egress/2/to', value: s.egressCidrs.map((cidr) => ({ ipBlock: exceptPrivate(cidr) })) },
    ]));
  } else {
    // EGRESS_CIDRS=none: no HTTPS rule at all (an empty peer list would allow everywhere).
    patches.push(json('NetworkPolicy', 'digdag-egress', [{ op: 'remove', path: '/spec/egress/2' }]));
    warnings.push('EGRESS_CIDRS=none: Digdag pods cannot reach HTTPS outside the cluster, so bq>, gcs and Google APIs fail (the metadata server stays reachable).');
  }

  if (config.target === 'cluster') {
    // The test cluster's CoreDNS is a node process (kube-dns Service → the bridge address), not
    // a kube-dns pod the DNS rule selects: allow the node's address on port 53 too.
    patches.push(json('NetworkPolicy', 'digdag-egress', [{ op: 'add', path: '/spec/egress/1/to/-', value: { ipBlock: { cidr: `${loadClusterConfig(config).net.bridgeIp}/32` } } }]));
  }

  if (config.db.externalUrl) {
    // An external PostgreSQL (Cloud SQL private IP): allowed by address; a DNS name cannot be.
    const db = parseDatabaseUrl(config.db.externalUrl);
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(db.host)) {
      patches.push(json('NetworkPolicy', 'digdag-egress', [{ op: 'add', path: '/spec/egress/-', value: { to: [{ ipBlock: { cidr: `${db.host}/32` } }], ports: [{ port: db.port, protocol: 'TCP' }] } }]));
    } else {
      warnings.push(`DATABASE_URL names ${db.host}, not an address: NetworkPolicy cannot allow a DNS name, so add its address range to the digdag-egress policy (port ${db.port}) or Digdag cannot reach it.`);
    }
  }
  if (s.ingressTls === 'gke-managed') {
    components.push(comp('gke-edge'));
    patches.push(json('ManagedCertificate', 'digdag', [{ op: 'replace', path: '/spec/domains', value: [host] }]));
    // The nginx TLS patch came with the security component; GKE terminates TLS itself.
    patches.push(json('Ingress', 'digdag', [
      { op: 'remove', path: '/spec/tls' },
      { op: 'remove', path: '/metadata/annotations/cert-manager.io~1cluster-issuer' },
    ]));
    if (s.edgeAuth === 'iap') {
      components.push(comp('gke-iap'));
      patches.push(json('BackendConfig', 'digdag-ui', [{ op: 'replace', path: '/spec/iap/oauthclientCredentials/secretName', value: s.iapOauthSecret }]));
    }
  } else if (s.ingressTls === 'cert-manager') {
    const tls: Record<string, unknown> = { secretName: 'digdag-tls', ...(host ? { hosts: [host] } : {}) };
    patches.push(json('Ingress', 'digdag', [
      { op: 'replace', path: '/metadata/annotations/cert-manager.io~1cluster-issuer', value: s.tlsIssuer },
      { op: 'replace', path: '/spec/tls/0', value: tls },
    ]));
    if (!host) warnings.push('INGRESS_HOST is empty: cert-manager cannot issue a certificate without a host name, so nginx serves its self-signed default certificate (HTTP still redirects to HTTPS). Set INGRESS_HOST for a real certificate.');
  } else {
    patches.push(json('Ingress', 'digdag', [
      { op: 'remove', path: '/spec/tls' },
      { op: 'remove', path: '/metadata/annotations/cert-manager.io~1cluster-issuer' },
      { op: 'replace', path: '/metadata/annotations/nginx.ingress.kubernetes.io~1ssl-redirect', value: 'false' },
      { op: 'replace', path: '/metadata/annotations/nginx.ingress.kubernetes.io~1force-ssl-redirect', value: 'false' },
    ]));
    warnings.push('INGRESS_TLS=none: the Ingress serves plain HTTP; passwords cross the network in clear text.');
  }
  if (s.edgeAuth === 'nginx-basic') {
    if (s.ingressTls === 'gke-managed') throw new Error('EDGE_AUTH=nginx-basic needs the nginx Ingress, not INGRESS_TLS=gke-managed');
    components.push(comp('nginx-basic-auth'));
  }
  if (s.auth === 'none' && s.edgeAuth !== 'iap') warnings.push('AUTH=none: Digdag accepts every request; only the NetworkPolicies and the edge stand between the network and sh> tasks.');
  return { components, patches, warnings };
}

/** The CIDR with the private ranges it contains carved out (omitted when there are none). */
function exceptPrivate(cidr: string): { cidr: string; except?: string[] } {
  const except = cidr.includes(':') ? [] : PRIVATE.filter((p) => contains(cidr, p));
  return except.length ? { cidr, except } : { cidr };
}

/** Whether IPv4 range `outer` strictly contains `inner` (NetworkPolicy wants except ⊂ cidr). */
function contains(outer: string, inner: string): boolean {
  const parse = (c: string) => {
    const [ip, bits] = c.split('/');
    return { n: ip!.split('.').reduce((acc, o) => acc * 256 + Number(o), 0), bits: Number(bits) };
  };
  const o = parse(outer);
  const i = parse(inner);
  const unit = 2 ** (32 - o.bits);
  return o.bits < i.bits && Math.floor(o.n / unit) === Math.floor(i.n / unit);
}
