// The API server's aggregation layer, so that add-on API servers (KEDA's external-metrics
// adapter, metrics-server) serve through it: a front-proxy CA of its own (kept apart from the
// cluster CA, so its client certificates cannot act as users), the proxy client certificate the
// API server presents to them, and the requestheader flags that tell them whom to trust.
import fs from 'node:fs';
import path from 'node:path';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';

/** The name add-on API servers accept in --requestheader-allowed-names. */
export const FRONT_PROXY_CLIENT = 'front-proxy-client';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Made once per state dir, like the rest of the cluster's PKI (lib/cluster/pki.ts). */
export async function ensureFrontProxyPki(runner: Runner, cc: ClusterConfig): Promise<void> {
  if (!changesApplied(runner)) return;
  const dir = clusterPaths(cc).pki;
  ensureDir(dir);
  const f = (n: string) => path.join(dir, n);
  if (!fs.existsSync(f('front-proxy-ca.crt'))) {
    await runner.run({ argv: ['openssl', 'req', '-x509', '-new', ...EC, '-keyout', f('front-proxy-ca.key'), '-out', f('front-proxy-ca.crt'), '-days', '3650', '-subj', '/CN=digdag-ha-front-proxy-ca'], mutates: true, quiet: true });
  }
  await signCertificate(runner, { dir, name: FRONT_PROXY_CLIENT, subject: `/CN=${FRONT_PROXY_CLIENT}`, ca: 'front-proxy-ca', usage: ['clientAuth'] });
}

/** Signs <dir>/<name>.crt (key <name>.key, 0600) with <dir>/<ca>.crt unless it exists. */
export async function signCertificate(
  runner: Runner,
  o: { dir: string; name: string; subject: string; ca: string; usage: ('serverAuth' | 'clientAuth')[]; sans?: string[] },
): Promise<void> {
  const f = (n: string) => path.join(o.dir, n);
  if (fs.existsSync(f(`${o.name}.crt`))) return;
  const ext = [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${o.usage.join(',')}`,
    ...(o.sans?.length ? [`subjectAltName=${o.sans.join(',')}`] : []),
  ];
  fs.writeFileSync(f(`${o.name}.ext`), `${ext.join('\n')}\n`);
  try {
    await runner.run({ argv: ['openssl', 'req', '-new', ...EC, '-keyout', f(`${o.name}.key`), '-out', f(`${o.name}.csr`), '-subj', o.subject], mutates: true, quiet: true });
    fs.chmodSync(f(`${o.name}.key`), 0o600);
    await runner.run({
      argv: ['openssl', 'x509', '-req', '-in', f(`${o.name}.csr`), '-CA', f(`${o.ca}.crt`), '-CAkey', f(`${o.ca}.key`), '-CAcreateserial', '-days', '3650', '-extfile', f(`${o.name}.ext`), '-out', f(`${o.name}.crt`)],
      mutates: true,
      quiet: true,
    });
  } finally {
    fs.rmSync(f(`${o.name}.csr`), { force: true });
    fs.rmSync(f(`${o.name}.ext`), { force: true });
  }
  fs.chmodSync(f(`${o.ca}.key`), 0o600);
}

/** kube-apiserver flags of the aggregation layer. Routing to endpoints: the API server dials the
 * add-on's Endpoints — the pods of KEDA's adapter and of metrics-server — not a ClusterIP, which
 * only kube-proxy's rules on the node's forwarded traffic would lead anywhere. */
export function aggregationLayerFlags(cc: ClusterConfig): string[] {
  const pki = (f: string) => path.join(clusterPaths(cc).pki, f);
  return [
    `--requestheader-client-ca-file=${pki('front-proxy-ca.crt')}`,
    `--requestheader-allowed-names=${FRONT_PROXY_CLIENT}`,
    '--requestheader-username-headers=X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    `--proxy-client-cert-file=${pki(`${FRONT_PROXY_CLIENT}.crt`)}`,
    `--proxy-client-key-file=${pki(`${FRONT_PROXY_CLIENT}.key`)}`,
    '--enable-aggregator-routing=true',
  ];
}
