// metrics-server on the own cluster: the resource-metrics API (metrics.k8s.io) that `kubectl top`
// and a CPU HorizontalPodAutoscaler (AGENT_AUTOSCALING=hpa) read. Built by
// .ci/install-metrics-server into the cache, run as a host process next to the cluster's other
// components (as Traefik is; KEDA runs as pods). It scrapes the kubelet (node "localhost", 127.0.0.1)
// verifying the kubelet's serving certificate against the cluster CA — no --kubelet-insecure-tls —
// and authenticates as a user of its own, allowed to read nodes/metrics. The API server reaches it
// through the aggregation layer (lib/cluster/aggregation.ts): a selector-less Service whose
// Endpoints are the bridge address, where it serves with a certificate from the cluster CA.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { isAlive, listProcesses, waitFor } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { METRICS_SERVER_VERSION } from '../versions.ts';
import { kubectl } from './addons.ts';
import { signCertificate } from './aggregation.ts';
import { httpStatus, type Component } from './components.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { kubeconfigFor } from './pki.ts';

export const METRICS_SERVER_PROCESS = 'metrics-server';
/** The user it authenticates as (its client certificate's CN), to the API server and the kubelet. */
export const METRICS_SERVER_USER = 'digdag-ha:metrics-server';
export const METRICS_API = 'v1beta1.metrics.k8s.io';
/** Its API on the bridge address (Endpoints reject 127.0.0.0/8). */
export const METRICS_SERVER_PORT = 6445;
/** How often it scrapes the kubelet: the lowest it accepts (its default is 60 s). */
export const METRIC_RESOLUTION = '10s';
const NAMESPACE = 'kube-system';
const SERVICE = 'metrics-server';

export const metricsServerDir = (cc: ClusterConfig) => path.join(cc.cacheDir, `metrics-server-${METRICS_SERVER_VERSION}`);

/** What is missing to run metrics-server here; empty when it can. */
export function metricsServerMissing(cc: ClusterConfig): string[] {
  const bin = path.join(metricsServerDir(cc), 'metrics-server');
  return fs.existsSync(bin) ? [] : [`metrics-server ${METRICS_SERVER_VERSION} in ${metricsServerDir(cc)}: metrics-server (bash .ci/install-metrics-server)`];
}

const pki = (cc: ClusterConfig, f: string) => path.join(clusterPaths(cc).pki, f);
const kubeconfigPath = (cc: ClusterConfig) => pki(cc, 'metrics-server.kubeconfig');

async function ensureMetricsServerPki(runner: Runner, cc: ClusterConfig): Promise<void> {
  const dir = clusterPaths(cc).pki;
  await signCertificate(runner, { dir, name: 'metrics-server', subject: `/CN=${METRICS_SERVER_USER}`, ca: 'ca', usage: ['clientAuth'] });
  // The aggregator dials it as <service>.<namespace>.svc.
  await signCertificate(runner, {
    dir,
    name: 'metrics-server-serving',
    subject: '/CN=metrics-server',
    ca: 'ca',
    usage: ['serverAuth'],
    sans: [`DNS:${SERVICE}.${NAMESPACE}.svc`, 'DNS:localhost', 'IP:127.0.0.1', `IP:${cc.net.bridgeIp}`],
  });
  if (changesApplied(runner)) fs.writeFileSync(kubeconfigPath(cc), kubeconfigFor(cc, 'metrics-server'), { mode: 0o600 });
}

/** The host process: its own identity, the kubelet verified against the cluster CA, a 10 s resolution. */
export function metricsServerComponent(cc: ClusterConfig): Component {
  const kc = kubeconfigPath(cc);
  return {
    name: METRICS_SERVER_PROCESS,
    argv: [
      path.join(metricsServerDir(cc), 'metrics-server'),
      `--kubeconfig=${kc}`,
      `--authentication-kubeconfig=${kc}`,
      `--authorization-kubeconfig=${kc}`,
      `--bind-address=${cc.net.bridgeIp}`,
      `--secure-port=${METRICS_SERVER_PORT}`,
      `--tls-cert-file=${pki(cc, 'metrics-server-serving.crt')}`,
      `--tls-private-key-file=${pki(cc, 'metrics-server-serving.key')}`,
      // The node is "localhost" (the kubelet listens on 127.0.0.1); its serving certificate names
      // it and comes from the cluster CA.
      '--kubelet-preferred-address-types=Hostname',
      `--kubelet-port=${cc.ports.kubelet}`,
      `--kubelet-certificate-authority=${pki(cc, 'ca.crt')}`,
      `--metric-resolution=${METRIC_RESOLUTION}`,
      // Must be below the resolution (it refuses to start otherwise; the default is 10 s).
      '--kubelet-request-timeout=5s',
      '--v=0',
    ],
    // Ready once it has scraped the node: its readyz waits for stored metrics.
    ready: () => httpStatus(`https://${cc.net.bridgeIp}:${METRICS_SERVER_PORT}/readyz`, { ca: pki(cc, 'ca.crt') }).then((s) => s === 200),
    readyTimeoutMs: 60_000,
  };
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;

/** Its installation in the API (metrics-server's own manifests, bent to a host process): RBAC for
 * its user, the aggregated readers' role, the selector-less Service, its Endpoints and the APIService. */
export function metricsServerObjects(cc: ClusterConfig): Obj[] {
  const labels = { 'app.kubernetes.io/name': 'metrics-server', 'app.kubernetes.io/managed-by': 'digdag-ha-test-cluster' };
  const user = [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: METRICS_SERVER_USER }];
  const rbac = 'rbac.authorization.k8s.io/v1';
  const ca = fs.readFileSync(pki(cc, 'ca.crt')).toString('base64');
  return [
    {
      apiVersion: rbac,
      kind: 'ClusterRole',
      metadata: { name: METRICS_SERVER_USER, labels },
      rules: [
        { apiGroups: [''], resources: ['nodes/metrics'], verbs: ['get'] },
        { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    { apiVersion: rbac, kind: 'ClusterRoleBinding', metadata: { name: METRICS_SERVER_USER, labels }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: METRICS_SERVER_USER }, subjects: user },
    // Delegated authentication and authorisation of the requests the aggregator forwards.
    { apiVersion: rbac, kind: 'ClusterRoleBinding', metadata: { name: `${METRICS_SERVER_USER}:auth-delegator`, labels }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' }, subjects: user },
    { apiVersion: rbac, kind: 'RoleBinding', metadata: { name: `${METRICS_SERVER_USER}:auth-reader`, namespace: NAMESPACE, labels }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'extension-apiserver-authentication-reader' }, subjects: user },
    // As upstream: whoever may view a namespace may read its pods' metrics.
    {
      apiVersion: rbac,
      kind: 'ClusterRole',
      metadata: { name: 'system:aggregated-metrics-reader', labels: { ...labels, 'rbac.authorization.k8s.io/aggregate-to-admin': 'true', 'rbac.authorization.k8s.io/aggregate-to-edit': 'true', 'rbac.authorization.k8s.io/aggregate-to-view': 'true' } },
      rules: [{ apiGroups: ['metrics.k8s.io'], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] }],
    },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: SERVICE, namespace: NAMESPACE, labels }, spec: { ports: [{ name: 'https', port: 443, targetPort: METRICS_SERVER_PORT, protocol: 'TCP' }] } },
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: SERVICE, namespace: NAMESPACE, labels },
      subsets: [{ addresses: [{ ip: cc.net.bridgeIp }], ports: [{ name: 'https', port: METRICS_SERVER_PORT, protocol: 'TCP' }] }],
    },
    {
      apiVersion: 'apiregistration.k8s.io/v1',
      kind: 'APIService',
      metadata: { name: METRICS_API, labels },
      spec: { service: { name: SERVICE, namespace: NAMESPACE, port: 443 }, group: 'metrics.k8s.io', version: 'v1beta1', caBundle: ca, groupPriorityMinimum: 100, versionPriority: 100 },
    },
  ];
}

const registry = (cc: ClusterConfig) => ({ stateDir: cc.dir }) as Parameters<typeof listProcesses>[0];

async function apiServiceAvailable(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

/** True when the process runs and the API server serves metrics.k8s.io through it. */
export async function metricsServerUp(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const e = listProcesses(registry(cc)).find((x) => x.name === METRICS_SERVER_PROCESS);
  return !!e && isAlive(e) && (await apiServiceAvailable(runner, cc));
}

/**
 * Starts metrics-server on the running cluster (its RBAC, Service and APIService, the process) and
 * waits until the API server serves metrics.k8s.io through it. `start` is the lifecycle's own
 * startComponent, so the process is registered and stopped by `down` like the others.
 */
export async function startMetricsServer(runner: Runner, cc: ClusterConfig, start: (c: Component) => Promise<void>, log: (l: string) => void = () => {}): Promise<string> {
  if (await metricsServerUp(runner, cc)) return `metrics-server ${METRICS_SERVER_VERSION}: already up`;
  const missing = metricsServerMissing(cc);
  if (missing.length) throw new UserError(`metrics-server cannot start: missing ${missing.join('; ')}`, 'bash .ci/install-metrics-server');
  const t0 = Date.now();
  ensureDir(clusterPaths(cc).pki);
  await ensureMetricsServerPki(runner, cc);
  if (!changesApplied(runner)) return `metrics-server ${METRICS_SERVER_VERSION}: would start`;
  await runner.run({
    argv: kubectl(cc, 'apply', '--server-side', '--force-conflicts', '--field-manager=digdag-ha-cluster', '-f', '-'),
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: metricsServerObjects(cc) }),
    mutates: true,
    quiet: true,
  });
  const e = listProcesses(registry(cc)).find((x) => x.name === METRICS_SERVER_PROCESS);
  if (!e || !isAlive(e)) await start(metricsServerComponent(cc));
  if (!(await waitFor(() => apiServiceAvailable(runner, cc), 60_000, 500))) {
    const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', METRICS_API, '-o', 'jsonpath={.status.conditions}'), nothrow: true, quiet: true });
    throw new UserError(`APIService ${METRICS_API} did not become Available within 60 s: ${r.stdout}`, `see ${path.join(clusterPaths(cc).logs, 'metrics-server.log')}`);
  }
  const line = `metrics-server ${METRICS_SERVER_VERSION} up in ${((Date.now() - t0) / 1000).toFixed(1)} s (${METRICS_API} Available; kubelet scraped every ${METRIC_RESOLUTION}, its certificate verified)`;
  log(line);
  return line;
}
