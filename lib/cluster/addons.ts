// Objects the cluster needs in the API before it is usable: RBAC for CoreDNS and the policy
// enforcer, the kube-dns Service (backed by CoreDNS on the bridge address), and storage —
// pre-made hostPath PersistentVolumes under the state dir (no provisioner process), which
// `up` returns to Available once their claim is gone.
import fs from 'node:fs';
import path from 'node:path';
import { changesApplied, type Runner } from '../runner.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';

export const STORAGE_CLASS = 'digdag-ha-local';
const VOLUMES = 8;

export function kubectl(cc: ClusterConfig, ...args: string[]): string[] {
  return ['kubectl', '--kubeconfig', clusterPaths(cc).kubeconfig, ...args];
}

function addonObjects(cc: ClusterConfig): unknown[] {
  const p = clusterPaths(cc);
  const reader = (name: string, rules: unknown[]) => [
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name }, rules },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name }],
    },
  ];
  const watch = ['get', 'list', 'watch'];
  return [
    ...reader('digdag-ha:coredns', [
      { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
    ]),
    ...reader('digdag-ha:kube-router', [
      { apiGroups: [''], resources: ['namespaces', 'pods', 'services', 'nodes', 'endpoints'], verbs: watch },
      { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: watch },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: watch },
    ]),
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns', 'app.kubernetes.io/name': 'coredns' } },
      spec: {
        clusterIP: cc.net.dnsIp,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
        ],
      },
    },
    // No selector: CoreDNS runs on the node, on the bridge address; kube-proxy routes to it.
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
      subsets: [{ addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }] }],
    },
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: STORAGE_CLASS, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
      provisioner: 'kubernetes.io/no-provisioner',
      reclaimPolicy: 'Retain',
      volumeBindingMode: 'Immediate',
    },
    ...Array.from({ length: VOLUMES }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name: `${STORAGE_CLASS}-${i}`, labels: { 'app.kubernetes.io/managed-by': 'digdag-ha-test-cluster' } },
      spec: {
        capacity: { storage: '10Gi' },
        accessModes: ['ReadWriteOnce'],
        storageClassName: STORAGE_CLASS,
        persistentVolumeReclaimPolicy: 'Retain',
        hostPath: { path: path.join(p.volumes, `pv-${i}`), type: 'DirectoryOrCreate' },
      },
    })),
  ];
}

export async function applyAddons(runner: Runner, cc: ClusterConfig): Promise<void> {
  const p = clusterPaths(cc);
  for (let i = 0; i < VOLUMES; i++) {
    const dir = path.join(p.volumes, `pv-${i}`);
    fs.mkdirSync(dir, { recursive: true });
    // Pods run as arbitrary non-root users (Pod Security "restricted").
    fs.chmodSync(dir, 0o1777);
  }
  fs.chmodSync(p.volumes, 0o755);
  const items = addonObjects(cc);
  await runner.run({
    argv: kubectl(cc, 'apply', '--server-side', '--force-conflicts', '--field-manager=digdag-ha-cluster', '-f', '-'),
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
    mutates: true,
    quiet: true,
  });
  await recycleReleasedVolumes(runner, cc);
}

/** Volumes whose claim was deleted: emptied and made Available again. */
export async function recycleReleasedVolumes(runner: Runner, cc: ClusterConfig): Promise<string[]> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'pv', '-l', 'app.kubernetes.io/managed-by=digdag-ha-test-cluster', '-o', 'json'), quiet: true });
  if (!changesApplied(runner) || !r.stdout) return [];
  const pvs = (JSON.parse(r.stdout) as { items: { metadata: { name: string }; spec: { hostPath?: { path: string } }; status?: { phase?: string } }[] }).items;
  const done: string[] = [];
  for (const pv of pvs.filter((v) => v.status?.phase === 'Released')) {
    const dir = pv.spec.hostPath?.path;
    if (dir && dir.startsWith(`${cc.dir}/`)) {
      for (const e of fs.readdirSync(dir)) fs.rmSync(path.join(dir, e), { recursive: true, force: true });
    }
    await runner.run({ argv: kubectl(cc, 'patch', 'pv', pv.metadata.name, '--type', 'json', '-p', '[{"op":"remove","path":"/spec/claimRef"}]'), mutates: true, quiet: true });
    done.push(pv.metadata.name);
  }
  return done;
}
