// The cluster's own certificate authority and one client certificate per component (openssl),
// plus the kubeconfig files that present them. Made once per state dir; keys are 0600.
import fs from 'node:fs';
import path from 'node:path';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';

export interface Identity {
  /** File stem under pki/. */
  name: string;
  subject: string;
  /** Server certificates only. */
  sans?: string[];
}

/** Who is who: the API server authorises by CN (user) and O (groups). */
export function identities(cc: ClusterConfig): Identity[] {
  const firstServiceIp = cc.net.serviceCidr.replace(/0\/\d+$/, '1');
  return [
    {
      name: 'apiserver',
      subject: '/CN=kube-apiserver',
      // Pods reach it as kubernetes.default.svc (the Service IP), kube-proxy leads that to the
      // bridge address where it listens; host processes use the bridge address too.
      sans: ['DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', 'IP:127.0.0.1', `IP:${firstServiceIp}`, `IP:${cc.net.bridgeIp}`],
    },
    { name: 'apiserver-kubelet-client', subject: '/O=system:masters/CN=kube-apiserver-kubelet-client' },
    { name: 'admin', subject: '/O=system:masters/CN=digdag-ha-admin' },
    { name: 'controller-manager', subject: '/CN=system:kube-controller-manager' },
    { name: 'scheduler', subject: '/CN=system:kube-scheduler' },
    { name: 'kubelet', subject: '/O=system:nodes/CN=system:node:localhost' },
    // It listens on the bridge address (the node's InternalIP), where metrics-server's pod verifies it.
    { name: 'kubelet-serving', subject: '/CN=localhost', sans: ['DNS:localhost', 'IP:127.0.0.1', `IP:${cc.net.bridgeIp}`] },
    { name: 'kube-proxy', subject: '/CN=system:kube-proxy' },
    // Bound to narrow ClusterRoles by lib/cluster/addons.ts.
    { name: 'coredns', subject: '/CN=digdag-ha:coredns' },
    { name: 'kube-router', subject: '/CN=digdag-ha:kube-router' },
  ];
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function ensurePki(runner: Runner, cc: ClusterConfig): Promise<void> {
  const p = clusterPaths(cc);
  const f = (n: string) => path.join(p.pki, n);
  if (!changesApplied(runner)) return;
  ensureDir(p.pki);
  if (!fs.existsSync(f('ca.crt'))) {
    await runner.run({ argv: ['openssl', 'req', '-x509', '-new', ...EC, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '3650', '-subj', '/CN=digdag-ha-test-cluster-ca'], mutates: true, quiet: true });
  }
  if (!fs.existsSync(f('sa.pub'))) {
    await runner.run({ argv: ['openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', f('sa.key')], mutates: true, quiet: true });
    await runner.run({ argv: ['openssl', 'pkey', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub')], mutates: true, quiet: true });
  }
  for (const id of identities(cc)) {
    // A server certificate is made again when its names changed (a state dir from an older version).
    const names = f(`${id.name}.sans`);
    const current = id.sans ? `${id.sans.join(',')}\n` : undefined;
    if (fs.existsSync(f(`${id.name}.crt`)) && (!current || (fs.existsSync(names) && fs.readFileSync(names, 'utf8') === current))) continue;
    const ext = [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${id.sans ? 'serverAuth' : 'clientAuth'}`,
      ...(id.sans ? [`subjectAltName=${id.sans.join(',')}`] : []),
    ];
    fs.writeFileSync(f(`${id.name}.ext`), `${ext.join('\n')}\n`);
    await runner.run({ argv: ['openssl', 'req', '-new', ...EC, '-keyout', f(`${id.name}.key`), '-out', f(`${id.name}.csr`), '-subj', id.subject], mutates: true, quiet: true });
    await runner.run({
      argv: ['openssl', 'x509', '-req', '-in', f(`${id.name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '3650', '-extfile', f(`${id.name}.ext`), '-out', f(`${id.name}.crt`)],
      mutates: true,
      quiet: true,
    });
    fs.rmSync(f(`${id.name}.csr`));
    fs.rmSync(f(`${id.name}.ext`));
    if (current) fs.writeFileSync(names, current);
  }
  for (const n of fs.readdirSync(p.pki)) if (n.endsWith('.key')) fs.chmodSync(f(n), 0o600);
}

/** Where the API server listens: the bridge address (the node's), so that pods reach it through
 * the `kubernetes` Service too; never an interface beyond the machine. */
export const apiServerUrl = (cc: ClusterConfig) => `https://${cc.net.bridgeIp}:${cc.ports.apiserver}`;

/** A kubeconfig presenting one identity's certificate (files referenced, not embedded). */
export function kubeconfigFor(cc: ClusterConfig, identity: string): string {
  const p = clusterPaths(cc);
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: digdag-ha-test',
    '  cluster:',
    `    server: ${apiServerUrl(cc)}`,
    `    certificate-authority: ${path.join(p.pki, 'ca.crt')}`,
    'users:',
    `- name: ${identity}`,
    '  user:',
    `    client-certificate: ${path.join(p.pki, `${identity}.crt`)}`,
    `    client-key: ${path.join(p.pki, `${identity}.key`)}`,
    'contexts:',
    '- name: digdag-ha-test',
    '  context:',
    '    cluster: digdag-ha-test',
    `    user: ${identity}`,
    'current-context: digdag-ha-test',
    '',
  ].join('\n');
}

/** Writes pki/<identity>.kubeconfig for every component and the admin kubeconfig in the state dir. */
export function writeKubeconfigs(cc: ClusterConfig): void {
  const p = clusterPaths(cc);
  for (const id of identities(cc)) {
    if (id.sans || id.name === 'apiserver-kubelet-client') continue;
    fs.writeFileSync(path.join(p.pki, `${id.name}.kubeconfig`), kubeconfigFor(cc, id.name), { mode: 0o600 });
  }
  fs.writeFileSync(p.kubeconfig, kubeconfigFor(cc, 'admin'), { mode: 0o600 });
}
