// KEDA on the own cluster as it runs on any other: pods deployed from KEDA's own config/ (its
// kustomization config/default: CRDs, RBAC, the operator, the external-metrics API server — the
// adapter — and the admission webhooks), in namespace keda. .ci/install-keda builds the three
// binaries and copies config/ into the cache; here each binary becomes an image of its own, as
// upstream's are (FROM scratch here instead of distroless: the binary, the CA bundle, a numeric
// non-root user, upstream's entry point), built once and kept in the image cache keyed by the
// KEDA version and the binary, and imported into the cluster's containerd (there is no
// registry); the manifests are re-tagged to those local names. KEDA's operator makes and rotates
// its own certificates (Secret kedaorg-certs, mounted by the three pods) and injects their CA into
// the APIService and the ValidatingWebhookConfiguration; the API server reaches the adapter's pod
// through the aggregation layer (lib/cluster/aggregation.ts, routing to its Endpoints) and the
// webhook pod the same way. Its pods reach the API server through the `kubernetes` Service, and
// the project's database through the chart's NetworkPolicy, which admits namespace keda
// (autoscaling.kedaNamespace); KEDA's own namespace has no policy, as on GKE.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { tail, UserError } from '../errors.ts';
import { waitFor } from '../processes.ts';
import { changesApplied, type Runner } from '../runner.ts';
import { KEDA_VERSION } from '../versions.ts';
import { kubectl } from './addons.ts';
import type { ClusterConfig } from './config.ts';
import { ensureBinaryImage } from './images.ts';

export const KEDA_NAMESPACE = 'keda';
export const EXTERNAL_METRICS_API = 'v1beta1.external.metrics.k8s.io';
/** The Secret KEDA's operator keeps its certificates in (its --cert-secret-name default). */
export const KEDA_CERTS_SECRET = 'kedaorg-certs';
/** KEDA's Deployments, as its config/ names them: operator, metrics API server, webhooks. */
export const KEDA_DEPLOYMENTS = ['keda-operator', 'keda-metrics-apiserver', 'keda-admission'] as const;

const VERSION = KEDA_VERSION.replace(/^v/, '');

/** KEDA's three images: upstream's name, the local one the manifests are re-tagged to, the
 * binary from the cache and upstream's entry point (its Dockerfiles'). */
export function kedaImages(): { upstream: string; image: string; binary: string; entrypoint: string[] }[] {
  return [
    { upstream: 'ghcr.io/kedacore/keda', image: `digdag-ha.local/keda:${VERSION}`, binary: 'keda', entrypoint: ['/keda', '--zap-log-level=info', '--zap-encoder=console'] },
    { upstream: 'ghcr.io/kedacore/keda-metrics-apiserver', image: `digdag-ha.local/keda-metrics-apiserver:${VERSION}`, binary: 'keda-adapter', entrypoint: ['/keda-adapter', '--secure-port=6443', '--logtostderr=true', '--v=0'] },
    { upstream: 'ghcr.io/kedacore/keda-admission-webhooks', image: `digdag-ha.local/keda-admission-webhooks:${VERSION}`, binary: 'keda-webhooks', entrypoint: ['/keda-admission-webhooks', '--zap-log-level=info', '--zap-encoder=console'] },
  ];
}

export const kedaDir = (cc: ClusterConfig) => path.join(cc.cacheDir, `keda-${KEDA_VERSION}`);
const kustomization = (cc: ClusterConfig) => path.join(kedaDir(cc), 'config', 'default');

/** What is missing to run KEDA here; empty when it can. */
export function kedaMissing(cc: ClusterConfig): string[] {
  const d = kedaDir(cc);
  const need = [...kedaImages().map((i) => i.binary), 'config/default'].filter((n) => !fs.existsSync(path.join(d, n)));
  return need.length ? [`KEDA ${KEDA_VERSION} in ${d}: ${need.join(', ')} (bash .ci/install-keda)`] : [];
}

/** The CA bundle the distroless base would carry (scalers dialling TLS endpoints verify with it). */
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** An image's recipe: upstream's, on scratch instead of distroless. */
export function kedaDockerfile(i: ReturnType<typeof kedaImages>[number], withCaBundle: boolean): string {
  return [
    'FROM scratch',
    `COPY ${i.binary} ${i.entrypoint[0]}`,
    ...(withCaBundle ? [`COPY ca-certificates.crt ${CA_BUNDLE}`] : []),
    // runAsNonRoot: only a numeric user can be verified (upstream's: distroless "nonroot").
    'USER 65532:65532',
    `ENTRYPOINT ${JSON.stringify(i.entrypoint)}`,
    '',
  ].join('\n');
}

/** Builds (or restores from the image cache) and imports KEDA's images; one line each. */
export async function ensureKedaImages(runner: Runner, cc: ClusterConfig): Promise<string[]> {
  const withCaBundle = fs.existsSync(CA_BUNDLE);
  const lines: string[] = [];
  for (const i of kedaImages()) {
    lines.push(
      await ensureBinaryImage(runner, cc, {
        image: i.image,
        binary: path.join(kedaDir(cc), i.binary),
        version: KEDA_VERSION,
        dockerfile: kedaDockerfile(i, withCaBundle),
        context: `keda-${i.binary}`,
        files: withCaBundle ? { 'ca-certificates.crt': CA_BUNDLE } : {},
      }),
    );
  }
  return lines;
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;
type PodSpec = { containers: { image: string; imagePullPolicy?: string }[] };

/** KEDA's config/default as kustomize renders it, its images re-tagged to the local ones (never
 * pulled: there is no registry). The CRDs apart: they must be Established first. */
export function kedaObjects(rendered: string): { crds: Obj[]; rest: Obj[] } {
  const images = kedaImages();
  const objects = YAML.parseAllDocuments(rendered)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => !!o && typeof o === 'object' && 'kind' in o)
    .map((o) => {
      if (o.kind !== 'Deployment') return o;
      const spec = (o as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
      for (const c of spec.containers) {
        const local = images.find((i) => c.image.split(':')[0] === i.upstream);
        if (!local) throw new UserError(`KEDA's Deployment ${o.metadata.name} names image ${c.image}, which is not built here`, `update kedaImages() in lib/cluster/keda.ts for KEDA ${KEDA_VERSION}`);
        c.image = local.image;
        c.imagePullPolicy = 'Never';
      }
      return o;
    });
  return { crds: objects.filter((o) => o.kind === 'CustomResourceDefinition'), rest: objects.filter((o) => o.kind !== 'CustomResourceDefinition') };
}

type Deployment = { metadata: { name: string }; status?: { conditions?: { type: string; status: string }[] } };

async function availableDeployments(runner: Runner, cc: ClusterConfig): Promise<string[]> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'deployments', '-n', KEDA_NAMESPACE, '-o', 'json'), nothrow: true, quiet: true });
  if (r.code !== 0 || !r.stdout) return [];
  return (JSON.parse(r.stdout) as { items: Deployment[] }).items
    .filter((d) => d.status?.conditions?.some((c) => c.type === 'Available' && c.status === 'True'))
    .map((d) => d.metadata.name);
}

async function apiServiceAvailable(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  return r.code === 0 && r.stdout.trim() === 'True';
}

/** True when KEDA's three Deployments and the external-metrics APIService are Available. */
export async function kedaUp(runner: Runner, cc: ClusterConfig): Promise<boolean> {
  const up = await availableDeployments(runner, cc);
  return KEDA_DEPLOYMENTS.every((n) => up.includes(n)) && (await apiServiceAvailable(runner, cc));
}

/** `status`'s line: the Deployments Available, the APIService. */
export async function kedaStatusLine(runner: Runner, cc: ClusterConfig): Promise<string> {
  const up = await availableDeployments(runner, cc);
  const api = await apiServiceAvailable(runner, cc);
  return `${'keda (pods)'.padEnd(24)} ${KEDA_DEPLOYMENTS.filter((n) => up.includes(n)).length}/${KEDA_DEPLOYMENTS.length} Deployments Available in namespace ${KEDA_NAMESPACE}; ${EXTERNAL_METRICS_API} ${api ? 'Available' : 'not Available'}`;
}

/** What KEDA's pods are doing, and the last log lines of those not ready: for an error. */
async function podReport(runner: Runner, cc: ClusterConfig): Promise<string> {
  const pods = await runner.run({ argv: kubectl(cc, 'get', 'pods', '-n', KEDA_NAMESPACE, '-o', 'wide'), nothrow: true, quiet: true });
  const events = await runner.run({ argv: kubectl(cc, 'get', 'events', '-n', KEDA_NAMESPACE, '--field-selector', 'type=Warning', '-o', 'custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message'), nothrow: true, quiet: true });
  const logs: string[] = [];
  for (const d of KEDA_DEPLOYMENTS) {
    const r = await runner.run({ argv: kubectl(cc, 'logs', '-n', KEDA_NAMESPACE, `deployment/${d}`, '--tail=8'), nothrow: true, quiet: true });
    if (r.stdout.trim()) logs.push(`--- ${d}\n${r.stdout.trim()}`);
  }
  return [pods.stdout.trim(), tail(events.stdout.trim(), 10), ...logs].filter(Boolean).join('\n');
}

/**
 * Deploys KEDA on the running cluster — its images, then config/default (CRDs first) — and waits
 * until its Deployments are Available and the API server serves external.metrics.k8s.io through
 * the adapter pod. Its pods go with the cluster's (`down`; {@link removeKedaWorkloads}).
 */
export async function startKeda(runner: Runner, cc: ClusterConfig, log: (l: string) => void = () => {}): Promise<string> {
  if (await kedaUp(runner, cc)) return `KEDA ${KEDA_VERSION}: already up`;
  const missing = kedaMissing(cc);
  if (missing.length) throw new UserError(`KEDA cannot start: missing ${missing.join('; ')}`, 'bash .ci/install-keda');
  if (!changesApplied(runner)) return `KEDA ${KEDA_VERSION}: would build its images and deploy its config/default`;
  const t0 = Date.now();
  const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
  for (const l of await ensureKedaImages(runner, cc)) log(`KEDA image ${l}`);
  const rendered = await runner.run({ argv: ['kubectl', 'kustomize', kustomization(cc)], quiet: true });
  const { crds, rest } = kedaObjects(rendered.stdout);
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
  log(`KEDA ${KEDA_VERSION}: config/default applied (${crds.length} CRDs, ${rest.length} other objects) after ${secs()} s; waiting for its Deployments`);
  const timeoutMs = 240_000;
  let up: string[] = [];
  const done = await waitFor(async () => {
    up = await availableDeployments(runner, cc);
    return KEDA_DEPLOYMENTS.every((n) => up.includes(n));
  }, timeoutMs, 1000);
  if (!done) {
    throw new UserError(
      `KEDA's Deployments did not become Available within ${timeoutMs / 1000} s (Available: ${up.join(', ') || 'none'} of ${KEDA_DEPLOYMENTS.join(', ')})`,
      `kubectl -n ${KEDA_NAMESPACE} describe pods; kubectl -n ${KEDA_NAMESPACE} logs deployment/keda-operator (its images are built from the binaries in ${kedaDir(cc)}: rm them and run bash .ci/install-keda to rebuild)`,
      await podReport(runner, cc),
    );
  }
  log(`KEDA ${KEDA_VERSION}: ${KEDA_DEPLOYMENTS.join(', ')} Available after ${secs()} s`);
  if (!(await waitFor(() => apiServiceAvailable(runner, cc), 120_000, 1000))) {
    const r = await runner.run({ argv: kubectl(cc, 'get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions}'), nothrow: true, quiet: true });
    throw new UserError(`APIService ${EXTERNAL_METRICS_API} did not become Available within 120 s: ${r.stdout}`, `kubectl -n ${KEDA_NAMESPACE} logs deployment/keda-metrics-apiserver; kubectl -n ${KEDA_NAMESPACE} logs deployment/keda-operator (it injects the CA)`, await podReport(runner, cc));
  }
  const line = `KEDA ${KEDA_VERSION} up in ${secs()} s (pods: operator, metrics API server, admission webhooks; certificates rotated by the operator; ${EXTERNAL_METRICS_API} Available)`;
  log(line);
  return line;
}

/** Before the cluster's pods are deleted on `down`: KEDA's Deployments and ReplicaSets, so that an
 * `up` without the add-on does not start its pods again from the state dir's etcd (its CRDs, RBAC
 * and APIService stay, as other API objects do; an `up` with it applies them again). */
export async function removeKedaWorkloads(runner: Runner, cc: ClusterConfig): Promise<void> {
  await runner.run({ argv: kubectl(cc, 'delete', 'deployments,replicasets', '--all', '-n', KEDA_NAMESPACE, '--ignore-not-found', '--wait=false'), mutates: true, nothrow: true, quiet: true, timeoutMs: 30_000 });
}

