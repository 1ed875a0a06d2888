// KEDA on the own cluster: its operator, its external-metrics API server (the adapter) and its
// admission webhooks, built by .ci/install-keda into the cache, run as host processes next to the cluster's other
// components (as CoreDNS and kube-router are) — pods cannot reach this cluster's API server yet.
// Outside a pod KEDA lacks what a pod would mount, so this gives it: a kubeconfig of its own
// identity (bound to KEDA's own ClusterRoles from its config/), the certificates its operator
// and adapter use for their gRPC link and the adapter serves with (from the cluster CA, no
// rotation), and a resolv.conf pointing at the cluster's DNS in a private mount namespace (its
// scalers dial Services by name). The API server reaches the adapter through a selector-less
// Service whose Endpoints are the bridge address (aggregator routing, lib/cluster/aggregation.ts);
// the webhooks the same way (the API server resolves a webhook's Service by its Endpoints too).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { UserError } from '../errors.ts';
import { isAlive, listProcesses, waitFor } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { KEDA_VERSION } from '../versions.ts';
import { kubectl } from './addons.ts';
import { signCertificate } from './aggregation.ts';
import { httpStatus, type Component } from './components.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { kubeconfigFor } from './pki.ts';

export const KEDA_NAMESPACE = 'keda';
/** The user KEDA's processes authenticate as (its client certificate's CN). */
export const KEDA_USER = 'digdag-ha:keda';
export const EXTERNAL_METRICS_API = 'v1beta1.external.metrics.k8s.io';
export const KEDA_PROCESSES = ['keda-operator', 'keda-adapter', 'keda-webhooks'] as const;

/** KEDA's ports: loopback, except the adapter's API and the webhooks on the bridge (Endpoints
 * reject 127.0.0.0/8; the webhook server binds every interface, the fence in lib/cluster/host.ts
 * keeps it to the machine and its pods). */
export const KEDA_PORTS = { grpc: 9666, operatorMetrics: 18080, operatorHealth: 18081, adapterMetrics: 18082, adapter: 6444, webhooks: 9443, webhooksMetrics: 18083, webhooksHealth: 18084 } as const;
/** The Service KEDA's ValidatingWebhookConfiguration names. */
export const KEDA_WEBHOOKS_SERVICE = 'keda-admission-webhooks';

export const kedaDir = (cc: ClusterConfig) => path.join(cc.cacheDir, `keda-${KEDA_VERSION}`);

/** What is missing to run KEDA here; empty when it can. */
export function kedaMissing(cc: ClusterConfig): string[] {
  const d = kedaDir(cc);
  const need = ['keda', 'keda-adapter', 'keda-webhooks', 'crd', 'rbac', 'metrics-server', 'webhooks'].filter((n) => !fs.existsSync(path.join(d, n)));
  return need.length ? [`KEDA ${KEDA_VERSION} in ${d}: ${need.join(', ')} (bash .ci/install-keda)`] : [];
}

const certDir = (cc: ClusterConfig) => path.join(cc.dir, 'keda', 'certs');

async function ensureKedaPki(runner: Runner, cc: ClusterConfig): Promise<void> {
  const pki = clusterPaths(cc).pki;
  await signCertificate(runner, { dir: pki, name: 'keda', subject: `/CN=${KEDA_USER}`, ca: 'ca', usage: ['clientAuth'] });
  // One certificate for both ends of the operator–adapter gRPC link (mutual TLS) and the
  // adapter's API, which the aggregator dials as <service>.<namespace>.svc.
  await signCertificate(runner, {
    dir: pki,
    name: 'keda-serving',
    subject: '/CN=keda-metrics-apiserver',
    ca: 'ca',
    usage: ['serverAuth', 'clientAuth'],
    sans: [
      `DNS:keda-metrics-apiserver.${KEDA_NAMESPACE}.svc`,
      `DNS:${KEDA_WEBHOOKS_SERVICE}.${KEDA_NAMESPACE}.svc`,
      `DNS:keda-operator.${KEDA_NAMESPACE}.svc.cluster.local`,
      'DNS:localhost',
      'IP:127.0.0.1',
      `IP:${cc.net.bridgeIp}`,
    ],
  });
  const certs = ensureDir(certDir(cc));
  for (const [from, to] of [['ca.crt', 'ca.crt'], ['keda-serving.crt', 'tls.crt'], ['keda-serving.key', 'tls.key']] as const) {
    fs.copyFileSync(path.join(pki, from), path.join(certs, to));
  }
  fs.chmodSync(path.join(certs, 'tls.key'), 0o600);
  fs.writeFileSync(path.join(pki, 'keda.kubeconfig'), kubeconfigFor(cc, 'keda'), { mode: 0o600 });
  fs.writeFileSync(path.join(cc.dir, 'keda', 'resolv.conf'), `nameserver ${cc.net.bridgeIp}\noptions ndots:1\n`);
}

/** The three host processes, with what a pod would have given them. */
export function kedaComponents(cc: ClusterConfig): Component[] {
  const loop = '127.0.0.1';
  const certs = certDir(cc);
  const env = [
    `KUBECONFIG=${path.join(clusterPaths(cc).pki, 'keda.kubeconfig')}`,
    'WATCH_NAMESPACE=',
    `POD_NAMESPACE=${KEDA_NAMESPACE}`,
    `KEDA_CLUSTER_OBJECT_NAMESPACE=${KEDA_NAMESPACE}`,
  ];
  // A private mount namespace with the cluster's resolv.conf bound over /etc/resolv.conf; every
  // step execs, so the registered pid is KEDA's own.
  const wrap = (bin: string, args: string[]) => [
    'unshare', '--mount', '--propagation', 'private',
    'sh', '-c', 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', 'sh', path.join(cc.dir, 'keda', 'resolv.conf'),
    'env', ...env, path.join(kedaDir(cc), bin), ...args,
  ];
  return [
    {
      name: 'keda-operator',
      argv: wrap('keda', [
        `--metrics-bind-address=${loop}:${KEDA_PORTS.operatorMetrics}`,
        `--health-probe-bind-address=${loop}:${KEDA_PORTS.operatorHealth}`,
        `--metrics-service-bind-address=${loop}:${KEDA_PORTS.grpc}`,
        `--cert-dir=${certs}`,
        `--ca-dir=${certs}`,
        '--enable-cert-rotation=false',
        '--leader-elect=false',
        '--zap-log-level=info',
      ]),
      ready: () => httpStatus(`http://${loop}:${KEDA_PORTS.operatorHealth}/readyz`).then((s) => s === 200),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'keda-adapter',
      argv: wrap('keda-adapter', [
        `--bind-address=${cc.net.bridgeIp}`,
        `--secure-port=${KEDA_PORTS.adapter}`,
        `--tls-cert-file=${path.join(certs, 'tls.crt')}`,
        `--tls-private-key-file=${path.join(certs, 'tls.key')}`,
        `--cert-dir=${certs}`,
        `--authentication-kubeconfig=${path.join(clusterPaths(cc).pki, 'keda.kubeconfig')}`,
        `--authorization-kubeconfig=${path.join(clusterPaths(cc).pki, 'keda.kubeconfig')}`,
        `--lister-kubeconfig=${path.join(clusterPaths(cc).pki, 'keda.kubeconfig')}`,
        `--metrics-service-address=${loop}:${KEDA_PORTS.grpc}`,
        // Its own /metrics listener binds every interface (":<port>"); the port is all it takes.
        // The cluster's input fence (lib/cluster/host.ts) drops what reaches it from off the machine.
        `--port=${KEDA_PORTS.adapterMetrics}`,
        '--v=0',
      ]),
      ready: () => httpStatus(`https://${cc.net.bridgeIp}:${KEDA_PORTS.adapter}/readyz`, { ca: path.join(certs, 'ca.crt') }).then((s) => s === 200),
      readyTimeoutMs: 60_000,
    },
    {
      // Validates ScaledObjects as the API server admits them (one workload, one scaler; no HPA
      // of its own next to KEDA's; resource requests for CPU/memory triggers; min ≤ max).
      name: 'keda-webhooks',
      argv: wrap('keda-webhooks', [
        `--port=${KEDA_PORTS.webhooks}`,
        `--cert-dir=${certs}`,
        `--metrics-bind-address=${loop}:${KEDA_PORTS.webhooksMetrics}`,
        `--health-probe-bind-address=${loop}:${KEDA_PORTS.webhooksHealth}`,
        '--zap-log-level=info',
      ]),
      ready: () => httpStatus(`https://${cc.net.bridgeIp}:${KEDA_PORTS.webhooks}/validate-keda-sh-v1alpha1-scaledobject`, { ca: path.join(certs, 'ca.crt') }).then((s) => s > 0),
      readyTimeoutMs: 60_000,
    },
  ];
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; subjects?: { kind: string; name: string; namespace?: string; apiGroup?: string }[] } & Record<string, unknown>;

function readObjects(dir: string, files?: string[]): Obj[] {
  const names = files ?? fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
  return names.flatMap((f) =>
    YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), 'utf8'))
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => !!o && typeof o === 'object' && 'kind' in o),
  );
}

/** KEDA's own objects from its config/ (CRDs, RBAC, the APIService), bent to host processes:
 * bindings name KEDA's user instead of its ServiceAccount; the Service has no selector. */
export function kedaObjects(cc: ClusterConfig): { crds: Obj[]; rest: Obj[] } {
  const d = kedaDir(cc);
  const asUser = (o: Obj): Obj =>
    o.subjects
      ? { ...o, subjects: o.subjects.map((s) => (s.kind === 'ServiceAccount' && s.name === 'keda-operator' ? { kind: 'User', apiGroup: 'rbac.authorization.k8s.io', name: KEDA_USER } : s)) }
      : o;
  const rbac = [...readObjects(path.join(d, 'rbac')), ...readObjects(path.join(d, 'metrics-server'), ['role.yaml', 'role_binding.yaml'])].map(asUser);
  const ca = fs.readFileSync(path.join(certDir(cc), 'ca.crt')).toString('base64');
  const labels = { 'app.kubernetes.io/name': 'keda-metrics-apiserver', 'app.kubernetes.io/part-of': 'keda-operator', 'app.kubernetes.io/managed-by': 'digdag-ha-test-cluster' };
  const webhookLabels = { ...labels, 'app.kubernetes.io/name': KEDA_WEBHOOKS_SERVICE };
  return {
    crds: readObjects(path.join(d, 'crd')),
    rest: [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: KEDA_NAMESPACE } },
      ...rbac,
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'keda-metrics-apiserver', namespace: KEDA_NAMESPACE, labels }, spec: { ports: [{ name: 'https', port: 443, targetPort: KEDA_PORTS.adapter, protocol: 'TCP' }] } },
      {
        apiVersion: 'v1',
        kind: 'Endpoints',
        metadata: { name: 'keda-metrics-apiserver', namespace: KEDA_NAMESPACE, labels },
        subsets: [{ addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: KEDA_PORTS.adapter, protocol: 'TCP' }] }],
      },
      {
        apiVersion: 'apiregistration.k8s.io/v1',
        kind: 'APIService',
        metadata: { name: EXTERNAL_METRICS_API, labels },
        spec: { service: { name: 'keda-metrics-apiserver', namespace: KEDA_NAMESPACE, port: 443 }, group: 'external.metrics.k8s.io', version: 'v1beta1', caBundle: ca, groupPriorityMinimum: 100, versionPriority: 100 },
      },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: KEDA_WEBHOOKS_SERVICE, namespace: KEDA_NAMESPACE, labels: webhookLabels }, spec: { ports: [{ name: 'https', port: 443, targetPort: KEDA_PORTS.webhooks, protocol: 'TCP' }] } },
      {
        apiVersion: 'v1',
        kind: 'Endpoints',
        metadata: { name: KEDA_WEBHOOKS_SERVICE, namespace: KEDA_NAMESPACE, labels: webhookLabels },
        subsets: [{ addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: KEDA_PORTS.webhooks, protocol: 'TCP' }] }],
      },
      // KEDA's own ValidatingWebhookConfiguration as its config/ has it, with the cluster CA (the
      // operator would inject it; cert rotation is off here) and the Service's port.
      ...readObjects(path.join(d, 'webhooks'), ['validation_webhooks.yaml']).map((o) => ({
        ...o,
        webhooks: (o.webhooks as { clientConfig: { service: Record<string, unknown> } }[]).map((w) => ({
          ...w,
          clientConfig: { ...w.clientConfig, service: { ...w.clientConfig.service, port: 443 }, caBundle: ca },
        })),
      })),
    ],
  };
}

const registry = (cc: ClusterConfig) => ({ stateDir: cc.dir }) as Parameters<typeof listProcesses>[0];

/** True when its processes run and the external-metrics API is Available. */
export async function kedaUp(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const entries = listProcesses(registry(cc));
  if (!KEDA_PROCESSES.every((n) => entries.some((e) => e.name === n && isAlive(e)))) return false;
  return apiServiceAvailable(runner, cc);
}

async function apiServiceAvailable(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

/**
 * Starts KEDA on the running cluster (its CRDs, RBAC, webhook configuration, the processes) and waits until the
 * API server serves external.metrics.k8s.io through it. `start` is the lifecycle's own
 * startComponent, so the processes are registered and stopped by `down` like the others.
 */
export async function startKeda(runner: Runner, cc: ClusterConfig, start: (c: Component) => Promise<void>, log: (l: string) => void = () => {}): Promise<string> {
  if (await kedaUp(runner, cc)) return `KEDA ${KEDA_VERSION}: already up`;
  const missing = kedaMissing(cc);
  if (missing.length) throw new UserError(`KEDA cannot start: missing ${missing.join('; ')}`, 'bash .ci/install-keda');
  const t0 = Date.now();
  ensureDir(path.join(cc.dir, 'keda'));
  await ensureKedaPki(runner, cc);
  const { crds, rest } = kedaObjects(cc);
  const apply = (items: Obj[]) =>
    runner.run({
      // Server-side: the ScaledJob CRD is too large for client-side apply's annotation.
      argv: kubectl(cc, 'apply', '--server-side', '--force-conflicts', '--field-manager=digdag-ha-cluster', '-f', '-'),
      input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }),
      mutates: true,
      quiet: true,
    });
  await apply(crds);
  await runner.run({ argv: kubectl(cc, 'wait', '--for=condition=Established', '--timeout=60s', ...crds.map((c) => `crd/${c.metadata.name}`)), mutates: true, quiet: true, timeoutMs: 70_000 });
  await apply(rest);
  const entries = listProcesses(registry(cc));
  for (const c of kedaComponents(cc)) {
    if (entries.some((e) => e.name === c.name && isAlive(e))) continue;
    await start(c);
  }
  if (!changesApplied(runner)) return `KEDA ${KEDA_VERSION}: would start`;
  if (!(await waitFor(() => apiServiceAvailable(runner, cc), 60_000, 500))) {
    const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions}'), nothrow: true, quiet: true });
    throw new UserError(`APIService ${EXTERNAL_METRICS_API} did not become Available within 60 s: ${r.stdout}`, `see ${path.join(clusterPaths(cc).logs, 'keda-adapter.log')}`);
  }
  const line = `KEDA ${KEDA_VERSION} up in ${((Date.now() - t0) / 1000).toFixed(1)} s (operator, metrics API server, admission webhooks; ${EXTERNAL_METRICS_API} Available)`;
  log(line);
  return line;
}
