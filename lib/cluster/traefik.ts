// The own cluster's Ingress controller: Traefik, built by .ci/install-traefik into the cache, run
// as a host process next to the cluster's other components (KEDA and metrics-server run as pods). Its kubernetesIngressNGINX
// provider serves the IngressClass `nginx` (controller k8s.io/ingress-nginx, as minikube's addon
// and ingress-nginx's chart install it) with the nginx.ingress.kubernetes.io/* annotations the
// project renders: what a user deploys is the same for nginx and for this controller. It
// listens on the machine's loopback only (HTTP and HTTPS on their standard ports, so the HTTPS
// redirect it answers with leads somewhere) and writes that address into the Ingresses' status.
// It reaches the pods from the node, as a kubelet probe does: the NetworkPolicies' "only the
// controller's pods" rule is proved with probe pods in kube-e2e, not by this process.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { isAlive, listProcesses, waitFor } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { TRAEFIK_VERSION } from '../versions.ts';
import { kubectl } from './addons.ts';
import { signCertificate } from './aggregation.ts';
import { httpStatus, type Component } from './components.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { apiServerUrl, kubeconfigFor } from './pki.ts';

/** The user Traefik authenticates as (its client certificate's CN). */
export const TRAEFIK_USER = 'digdag-ha:traefik';
export const TRAEFIK_PROCESS = 'traefik';
/** The IngressClass it serves and the controller name that class names (ingress-nginx's). */
export const INGRESS_CLASS = 'nginx';
export const INGRESS_CONTROLLER_NAME = 'k8s.io/ingress-nginx';
/** Where it listens: loopback only. The Ingresses' status carries the address. */
export const TRAEFIK_ADDRESS = '127.0.0.1';
export const TRAEFIK_PORTS = { http: 80, https: 443, ping: 18443 } as const;

export const traefikDir = (cc: ClusterConfig) => path.join(cc.cacheDir, `traefik-${TRAEFIK_VERSION}`);

/** What is missing to run Traefik here; empty when it can. */
export function traefikMissing(cc: ClusterConfig): string[] {
  const bin = path.join(traefikDir(cc), 'traefik');
  return fs.existsSync(bin) ? [] : [`Traefik ${TRAEFIK_VERSION} in ${traefikDir(cc)}: traefik (bash .ci/install-traefik)`];
}

const kubeconfigPath = (cc: ClusterConfig) => path.join(clusterPaths(cc).pki, 'traefik.kubeconfig');

async function ensureTraefikPki(runner: Runner, cc: ClusterConfig): Promise<void> {
  const pki = clusterPaths(cc).pki;
  await signCertificate(runner, { dir: pki, name: 'traefik', subject: `/CN=${TRAEFIK_USER}`, ca: 'ca', usage: ['clientAuth'] });
  fs.writeFileSync(kubeconfigPath(cc), kubeconfigFor(cc, 'traefik'), { mode: 0o600 });
}

/** The host process: its own kubeconfig, loopback entry points, no call home. */
export function traefikComponent(cc: ClusterConfig): Component {
  const a = TRAEFIK_ADDRESS;
  const p = TRAEFIK_PORTS;
  return {
    name: TRAEFIK_PROCESS,
    argv: [
      'env', `KUBECONFIG=${kubeconfigPath(cc)}`,
      path.join(traefikDir(cc), 'traefik'),
      `--entryPoints.web.address=${a}:${p.http}`,
      '--entryPoints.web.asDefault=true',
      `--entryPoints.websecure.address=${a}:${p.https}`,
      '--entryPoints.websecure.asDefault=true',
      '--entryPoints.websecure.http.tls=true',
      // Its health check on an entry point of its own; TLS there keeps it out of the provider's
      // non-TLS entry points (where the Ingress's HTTP router would otherwise also answer).
      `--entryPoints.ping.address=${a}:${p.ping}`,
      '--entryPoints.ping.http.tls=true',
      '--ping=true',
      '--ping.entryPoint=ping',
      '--providers.kubernetesIngressNGINX=true',
      // The client certificate comes from KUBECONFIG (the provider reads no certificate flags);
      // the API server and its CA are named on the command line too, which also carries the
      // cluster dir there — what the lifecycle recognises its processes by (isAlive, strays).
      `--providers.kubernetesIngressNGINX.endpoint=${apiServerUrl(cc)}`,
      `--providers.kubernetesIngressNGINX.certAuthFilePath=${path.join(clusterPaths(cc).pki, 'ca.crt')}`,
      `--providers.kubernetesIngressNGINX.ingressClass=${INGRESS_CLASS}`,
      `--providers.kubernetesIngressNGINX.controllerClass=${INGRESS_CONTROLLER_NAME}`,
      `--providers.kubernetesIngressNGINX.publishStatusAddress=${a}`,
      '--global.checkNewVersion=false',
      '--global.sendAnonymousUsage=false',
      '--log.level=INFO',
    ],
    ready: () => httpStatus(`https://${a}:${p.ping}/ping`).then((s) => s === 200),
    readyTimeoutMs: 30_000,
  };
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> } } & Record<string, unknown>;

/** The controller's installation in the API: the IngressClass it serves, and its read access. */
export function traefikObjects(): Obj[] {
  const labels = { 'app.kubernetes.io/name': 'traefik', 'app.kubernetes.io/managed-by': 'digdag-ha-test-cluster' };
  const watch = ['get', 'list', 'watch'];
  return [
    { apiVersion: 'networking.k8s.io/v1', kind: 'IngressClass', metadata: { name: INGRESS_CLASS, labels }, spec: { controller: INGRESS_CONTROLLER_NAME } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: TRAEFIK_USER, labels },
      rules: [
        { apiGroups: [''], resources: ['services', 'secrets', 'namespaces'], verbs: watch },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: watch },
        { apiGroups: ['networking.k8s.io'], resources: ['ingresses', 'ingressclasses'], verbs: watch },
        { apiGroups: ['networking.k8s.io'], resources: ['ingresses/status'], verbs: ['update'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: TRAEFIK_USER, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: TRAEFIK_USER },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: TRAEFIK_USER }],
    },
  ];
}

const registry = (cc: ClusterConfig) => ({ stateDir: cc.dir }) as Parameters<typeof listProcesses>[0];

/** True when the process runs and answers its health check. */
export async function traefikUp(cc: ClusterConfig): Promise<boolean> {
  const e = listProcesses(registry(cc)).find((x) => x.name === TRAEFIK_PROCESS);
  return !!e && isAlive(e) && (await traefikComponent(cc).ready({} as Runner));
}

/**
 * Starts Traefik on the running cluster (its IngressClass and RBAC, the process) and waits until
 * it answers. `start` is the lifecycle's own startComponent, so the process is registered and
 * stopped by `down` like the others.
 */
export async function startTraefik(runner: Runner, cc: ClusterConfig, start: (c: Component) => Promise<void>, log: (l: string) => void = () => {}): Promise<string> {
  if (await traefikUp(cc)) return `Traefik ${TRAEFIK_VERSION}: already up`;
  const missing = traefikMissing(cc);
  if (missing.length) throw new UserError(`Traefik cannot start: missing ${missing.join('; ')}`, 'bash .ci/install-traefik');
  const t0 = Date.now();
  ensureDir(path.join(cc.dir, 'traefik'));
  await ensureTraefikPki(runner, cc);
  await runner.run({
    argv: kubectl(cc, 'apply', '--server-side', '--force-conflicts', '--field-manager=digdag-ha-cluster', '-f', '-'),
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: traefikObjects() }),
    mutates: true,
    quiet: true,
  });
  await start(traefikComponent(cc));
  if (!changesApplied(runner)) return `Traefik ${TRAEFIK_VERSION}: would start`;
  if (!(await waitFor(() => traefikUp(cc), 10_000, 250))) throw new UserError('Traefik started but does not answer its health check', `see ${path.join(clusterPaths(cc).logs, 'traefik.log')}`);
  const line = `Traefik ${TRAEFIK_VERSION} up in ${((Date.now() - t0) / 1000).toFixed(1)} s (IngressClass ${INGRESS_CLASS} on ${TRAEFIK_ADDRESS}:${TRAEFIK_PORTS.http}/${TRAEFIK_PORTS.https})`;
  log(line);
  return line;
}
