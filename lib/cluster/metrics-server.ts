// metrics-server on the own cluster: the resource-metrics API (metrics.k8s.io) that `kubectl top`
// and a CPU HorizontalPodAutoscaler (AGENT_AUTOSCALING=hpa) read — as a pod, as it runs on any
// other cluster. .ci/install-metrics-server builds the binary and copies metrics-server's own
// manifests/ from the same Go module into the cache; here the binary becomes an image (upstream's
// recipe: the binary alone, a numeric non-root user; FROM scratch instead of distroless), built
// once through the cluster's dockerd, kept in the image cache and imported into containerd (there
// is no registry), and manifests/base (ServiceAccount, RBAC incl. system:auth-delegator and the
// extension-apiserver-authentication-reader RoleBinding, Deployment, Service, APIService) is
// applied re-tagged to that image, never pulled. Upstream's pod already passes Pod Security
// "restricted" (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
// seccomp, read-only root). Bent in two places, to keep what the cluster's other API servers have:
//  - the kubelet's serving certificate is verified against the cluster CA (no
//    --kubelet-insecure-tls): the CA is the one every pod gets with its service-account token
//    (kube-root-ca.crt, the controller-manager's --root-ca-file), and the kubelet is scraped on the
//    node's InternalIP — the bridge address, where the kubelet listens and which its certificate
//    names (lib/cluster/components.ts, pki.ts); the host fence lets pods reach it there;
//  - it serves with a certificate from the cluster CA (a Secret), and the APIService trusts that CA
//    instead of upstream's insecureSkipTLSVerify. The API server reaches the pod through the
//    aggregation layer (lib/cluster/aggregation.ts: routing to its Endpoints, the pod's IP).
// Its resolution is 10 s (upstream's manifests: 15 s; the lowest it accepts).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { tail, UserError } from '../errors.ts';
import { waitFor } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { METRICS_SERVER_VERSION } from '../versions.ts';
import { kubectl } from './addons.ts';
import { signCertificate } from './aggregation.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { ensureBinaryImage } from './images.ts';

export const METRICS_API = 'v1beta1.metrics.k8s.io';
export const METRICS_SERVER_NAMESPACE = 'kube-system';
/** Its Deployment (and Service), as upstream's manifests name them. */
export const METRICS_SERVER_DEPLOYMENT = 'metrics-server';
/** The label upstream's kustomization puts on all its objects (commonLabels). */
export const METRICS_SERVER_SELECTOR = 'k8s-app=metrics-server';
/** The Secret holding its serving certificate (ours: upstream's makes a self-signed one in /tmp). */
export const METRICS_SERVER_TLS_SECRET = 'metrics-server-tls';
/** How often it scrapes the kubelet: the lowest it accepts (upstream's manifests: 15 s). */
export const METRIC_RESOLUTION = '10s';
/** The cluster CA as every pod has it (its service-account token's projected volume). */
export const POD_CLUSTER_CA = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
const TLS_DIR = '/etc/metrics-server/tls';
/** Its CPU request on the one small node (upstream's: 100m). */
export const METRICS_SERVER_CPU_REQUEST = '20m';

const VERSION = METRICS_SERVER_VERSION.replace(/^v/, '');

/** Its image: upstream's names (the manifests' staging tag, the release's), the local one. */
export function metricsServerImage(): { upstream: string[]; image: string; binary: string; entrypoint: string[] } {
  return {
    upstream: ['gcr.io/k8s-staging-metrics-server/metrics-server', 'registry.k8s.io/metrics-server/metrics-server'],
    image: `digdag-ha.local/metrics-server:${VERSION}`,
    binary: 'metrics-server',
    entrypoint: ['/metrics-server'],
  };
}

export const metricsServerDir = (cc: ClusterConfig) => path.join(cc.cacheDir, `metrics-server-${METRICS_SERVER_VERSION}`);
const kustomization = (cc: ClusterConfig) => path.join(metricsServerDir(cc), 'manifests', 'base');

/** What is missing to run metrics-server here; empty when it can. */
export function metricsServerMissing(cc: ClusterConfig): string[] {
  const d = metricsServerDir(cc);
  const need = ['metrics-server', 'manifests/base/kustomization.yaml'].filter((n) => !fs.existsSync(path.join(d, n)));
  return need.length ? [`metrics-server ${METRICS_SERVER_VERSION} in ${d}: ${need.join(', ')} (bash .ci/install-metrics-server)`] : [];
}

/** Upstream's recipe (its Dockerfile's last stage), on scratch instead of distroless. */
export function metricsServerDockerfile(): string {
  const i = metricsServerImage();
  return ['FROM scratch', `COPY ${i.binary} ${i.entrypoint[0]}`, 'USER 65534:65534', `ENTRYPOINT ${JSON.stringify(i.entrypoint)}`, ''].join('\n');
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;
type Container = { name: string; image: string; imagePullPolicy?: string; args?: string[]; resources?: { requests?: Record<string, string> }; volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[]; readinessProbe?: Record<string, unknown> };
type PodSpec = { containers: Container[]; volumes?: Record<string, unknown>[] };

/** Sets `--flag=value` in an argv, replacing what upstream has for it. */
function setFlag(args: string[], flag: string, value: string): string[] {
  return [...args.filter((a) => a !== flag && !a.startsWith(`${flag}=`)), `${flag}=${value}`];
}

/**
 * manifests/base as `kubectl kustomize` renders it, re-tagged to the local image (never pulled),
 * plus the two bends: the kubelet verified against the cluster CA on the node's InternalIP, a 10 s
 * resolution, and a serving certificate from the cluster CA (`tls`, PEM) that the APIService trusts.
 */
export function metricsServerObjects(rendered: string, tls: { cert: string; key: string; ca: string }): Obj[] {
  const img = metricsServerImage();
  const objects = YAML.parseAllDocuments(rendered)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => !!o && typeof o === 'object' && 'kind' in o);
  for (const o of objects) {
    if (o.kind === 'Deployment') {
      const spec = (o as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
      for (const c of spec.containers) {
        if (!img.upstream.includes(c.image.split(':')[0]!)) throw new UserError(`metrics-server's Deployment names image ${c.image}, which is not built here`, `update metricsServerImage() in lib/cluster/metrics-server.ts for metrics-server ${METRICS_SERVER_VERSION}`);
        c.image = img.image;
        c.imagePullPolicy = 'Never';
        let args = (c.args ?? []).filter((a) => a !== '--kubelet-insecure-tls' && !a.startsWith('--kubelet-insecure-tls='));
        // The node's InternalIP is the bridge address (the kubelet's --node-ip), where the kubelet
        // listens; its Hostname ("localhost") would be the pod itself.
        args = setFlag(args, '--kubelet-preferred-address-types', 'InternalIP');
        args = setFlag(args, '--kubelet-certificate-authority', POD_CLUSTER_CA);
        args = setFlag(args, '--metric-resolution', METRIC_RESOLUTION);
        // Must be below the resolution (it refuses to start otherwise; the default is 10 s).
        args = setFlag(args, '--kubelet-request-timeout', '5s');
        args = setFlag(args, '--tls-cert-file', `${TLS_DIR}/tls.crt`);
        args = setFlag(args, '--tls-private-key-file', `${TLS_DIR}/tls.key`);
        c.args = args;
        c.volumeMounts = [...(c.volumeMounts ?? []).filter((m) => m.name !== 'tls'), { name: 'tls', mountPath: TLS_DIR, readOnly: true }];
        // The one node has 2 vCPUs, and the project's pods (RESOURCE_PROFILE=small), KEDA's and up to
        // four workers request most of them: upstream's 100m would leave a scaled-out worker
        // Pending. It scrapes one kubelet every 10 s (a few millicores); memory as upstream's.
        if (c.resources?.requests?.cpu) c.resources.requests.cpu = METRICS_SERVER_CPU_REQUEST;
        // Ready once it has scraped the kubelet (its /readyz says so): looked at every 2 s from the
        // start, not first after upstream's 20 s — cluster up waits for it.
        if (c.readinessProbe) Object.assign(c.readinessProbe, { initialDelaySeconds: 0, periodSeconds: 2 });
      }
      spec.volumes = [...(spec.volumes ?? []).filter((v) => v.name !== 'tls'), { name: 'tls', secret: { secretName: METRICS_SERVER_TLS_SECRET } }];
    }
    if (o.kind === 'APIService') {
      const spec = o.spec as Record<string, unknown>;
      delete spec.insecureSkipTLSVerify;
      spec.caBundle = Buffer.from(tls.ca).toString('base64');
    }
  }
  const labels = (objects.find((o) => o.kind === 'Deployment')?.metadata.labels ?? {}) as Record<string, string>;
  const secret: Obj = {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: METRICS_SERVER_TLS_SECRET, namespace: METRICS_SERVER_NAMESPACE, labels },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': Buffer.from(tls.cert).toString('base64'), 'tls.key': Buffer.from(tls.key).toString('base64') },
  };
  return [secret, ...objects];
}

const pki = (cc: ClusterConfig, f: string) => path.join(clusterPaths(cc).pki, f);

/** Its serving certificate from the cluster CA: the aggregator dials it as <service>.<namespace>.svc. */
async function ensureServingCertificate(runner: Runner, cc: ClusterConfig): Promise<{ cert: string; key: string; ca: string }> {
  const dir = ensureDir(clusterPaths(cc).pki);
  await signCertificate(runner, {
    dir,
    name: 'metrics-server-pod-serving',
    subject: '/CN=metrics-server',
    ca: 'ca',
    usage: ['serverAuth'],
    sans: [`DNS:${METRICS_SERVER_DEPLOYMENT}.${METRICS_SERVER_NAMESPACE}.svc`],
  });
  const read = (f: string) => fs.readFileSync(pki(cc, f), 'utf8');
  return { cert: read('metrics-server-pod-serving.crt'), key: read('metrics-server-pod-serving.key'), ca: read('ca.crt') };
}

async function deploymentAvailable(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'deployment', METRICS_SERVER_DEPLOYMENT, '-n', METRICS_SERVER_NAMESPACE, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

async function apiServiceAvailable(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

/** True when its Deployment is Available and the API server serves metrics.k8s.io through it. */
export async function metricsServerUp(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  return (await deploymentAvailable(runner, cc)) && (await apiServiceAvailable(runner, cc));
}

/** `status`'s line: the Deployment, the APIService. */
export async function metricsServerStatusLine(runner: Runner, cc: ClusterConfig): Promise<string> {
  const d = await deploymentAvailable(runner, cc);
  const api = await apiServiceAvailable(runner, cc);
  return `${'metrics-server (pod)'.padEnd(24)} Deployment ${METRICS_SERVER_DEPLOYMENT} ${d ? 'Available' : 'not Available'} in namespace ${METRICS_SERVER_NAMESPACE}; ${METRICS_API} ${api ? 'Available' : 'not Available'}`;
}

/** What its pod is doing, and its last log lines: for an error. */
async function podReport(runner: Runner, cc: ClusterConfig): Promise<string> {
  const ns = ['-n', METRICS_SERVER_NAMESPACE];
  const pods = await runner.run({ argv: kubectl(cc, 'get', 'pods', ...ns, '-l', METRICS_SERVER_SELECTOR, '-o', 'wide'), nothrow: true, quiet: true });
  const events = await runner.run({ argv: kubectl(cc, 'get', 'events', ...ns, '--field-selector', 'type=Warning', '-o', 'custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message'), nothrow: true, quiet: true });
  const logs = await runner.run({ argv: kubectl(cc, 'logs', ...ns, `deployment/${METRICS_SERVER_DEPLOYMENT}`, '--tail=12'), nothrow: true, quiet: true });
  return [pods.stdout.trim(), tail(events.stdout.trim(), 10), logs.stdout.trim() ? `--- ${METRICS_SERVER_DEPLOYMENT}\n${logs.stdout.trim()}` : ''].filter(Boolean).join('\n');
}

/**
 * Deploys metrics-server on the running cluster — its image, then manifests/base bent as above —
 * and waits until its Deployment is Available and the API server serves metrics.k8s.io through
 * the pod. Its pod goes with the cluster's (`down`; {@link removeMetricsServerWorkloads}).
 */
export async function startMetricsServer(runner: Runner, cc: ClusterConfig, log: (l: string) => void = () => {}): Promise<string> {
  if (await metricsServerUp(runner, cc)) return `metrics-server ${METRICS_SERVER_VERSION}: already up`;
  const missing = metricsServerMissing(cc);
  if (missing.length) throw new UserError(`metrics-server cannot start: missing ${missing.join('; ')}`, 'bash .ci/install-metrics-server');
  if (!changesApplied(runner)) return `metrics-server ${METRICS_SERVER_VERSION}: would build its image and deploy its manifests/base`;
  const t0 = Date.now();
  const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
  const img = metricsServerImage();
  const line0 = await ensureBinaryImage(runner, cc, { image: img.image, binary: path.join(metricsServerDir(cc), img.binary), version: METRICS_SERVER_VERSION, dockerfile: metricsServerDockerfile(), context: 'metrics-server' });
  log(`metrics-server image ${line0}`);
  const tls = await ensureServingCertificate(runner, cc);
  const rendered = await runner.run({ argv: ['kubectl', 'kustomize', kustomization(cc)], quiet: true });
  const objects = metricsServerObjects(rendered.stdout, tls);
  await runner.run({
    argv: kubectl(cc, 'apply', '--server-side', '--force-conflicts', '--field-manager=digdag-ha-cluster', '-f', '-'),
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
    mutates: true,
    quiet: true,
  });
  log(`metrics-server ${METRICS_SERVER_VERSION}: manifests/base applied (${objects.length} objects) after ${secs()} s; waiting for its Deployment`);
  const timeoutMs = 180_000;
  if (!(await waitFor(() => deploymentAvailable(runner, cc), timeoutMs, 1000))) {
    throw new UserError(
      `metrics-server's Deployment did not become Available within ${timeoutMs / 1000} s`,
      `kubectl -n ${METRICS_SERVER_NAMESPACE} describe pods -l ${METRICS_SERVER_SELECTOR}; kubectl -n ${METRICS_SERVER_NAMESPACE} logs deployment/${METRICS_SERVER_DEPLOYMENT}`,
      await podReport(runner, cc),
    );
  }
  log(`metrics-server ${METRICS_SERVER_VERSION}: Deployment Available after ${secs()} s`);
  if (!(await waitFor(() => apiServiceAvailable(runner, cc), 60_000, 500))) {
    const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', METRICS_API, '-o', 'jsonpath={.status.conditions}'), nothrow: true, quiet: true });
    throw new UserError(`APIService ${METRICS_API} did not become Available within 60 s: ${r.stdout}`, `kubectl -n ${METRICS_SERVER_NAMESPACE} logs deployment/${METRICS_SERVER_DEPLOYMENT}`, await podReport(runner, cc));
  }
  const line = `metrics-server ${METRICS_SERVER_VERSION} up in ${secs()} s (a pod from its own manifests/base; ${METRICS_API} Available; kubelet scraped every ${METRIC_RESOLUTION}, its certificate verified against the cluster CA)`;
  log(line);
  return line;
}

/** Before the cluster's pods are deleted on `down`: its Deployment and ReplicaSets, so that an `up`
 * without the add-on does not start its pod again from the state dir's etcd (its RBAC, Service and
 * APIService stay, as other API objects do; an `up` with it applies them again). */
export async function removeMetricsServerWorkloads(runner: Runner, cc: ClusterConfig): Promise<void> {
  await runner.run({ argv: kubectl(cc, 'delete', 'deployments,replicasets', '-n', METRICS_SERVER_NAMESPACE, '-l', METRICS_SERVER_SELECTOR, '--ignore-not-found', '--wait=false'), mutates: true, nothrow: true, quiet: true, timeoutMs: 30_000 });
}
