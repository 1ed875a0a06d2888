// Renders the Kubernetes objects for a Config: a kustomization in the state dir that layers the
// repo's base, the layout's and the target's components with this config's properties (from the shared generator), image, replicas,
// components and patches, then `kubectl kustomize` (client-side, works offline).
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ROOT } from '../paths.ts';
import type { Config } from '../config.ts';
import { parseDatabaseUrl } from '../postgres.ts';
import { POD_METRICS } from '../metrics.ts';
import { POSTGRES_EXPORTER_IMAGE } from '../versions.ts';
import { migrateProperties, serverProperties } from '../properties.ts';
import { layoutRoles, ROLES, runsTasks, taskRole } from '../roles.ts';
import type { Runner } from '../runner.ts';
import { QUEUE_DEPTH_SQL } from '../scaling.ts';
import { ensureDir } from '../state.ts';
import { securityRendering } from './security-render.ts';

export const MANIFESTS = path.join(ROOT, 'manifests');
export const POD_PORT = 65432;
export const IN_CLUSTER_DB = { host: 'digdag-postgres', port: 5432 };

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  data?: Record<string, string>;
  [k: string]: unknown;
}

/** Where the pods reach the database. */
export function dbLocation(config: Config): { host: string; port: number; database: string; user: string } {
  if (config.db.externalUrl) {
    const u = parseDatabaseUrl(config.db.externalUrl);
    return { host: u.host, port: u.port, database: u.database, user: u.user };
  }
  return { ...IN_CLUSTER_DB, database: config.db.name, user: config.db.user };
}

/** The ConfigMap's files: one properties file per role (every layout's) plus the migration's. No secrets. */
export function configFiles(config: Config): Record<string, string> {
  const db = dbLocation(config);
  const files: Record<string, string> = {};
  for (const role of ROLES) {
    files[`${role}.properties`] = serverProperties(config, role, { bind: '0.0.0.0', port: POD_PORT, jmxPort: POD_METRICS.jmxPort, dbHost: db.host, dbPort: db.port, dbName: db.database, dbUser: db.user });
  }
  files['migrate.properties'] = migrateProperties({ dbHost: db.host, dbPort: db.port, dbName: db.database, dbUser: db.user });
  return files;
}

/** The kustomization that turns the repo's base and components into this config's objects. */
export function kustomization(config: Config, from = renderDir(config)): Record<string, unknown> {
  // kustomize takes only relative paths to other kustomizations.
  const rel = (p: string) => path.relative(from, p);
  const db = dbLocation(config);
  const images = [imageEntry('digdag-ha', config.k8s.image), imageEntry('postgres', config.k8s.postgresImage)];
  const scaled = `digdag-${taskRole(config.layout)}`;
  // Order matters: the target's patches apply to the layout's Deployments.
  const components: string[] = [
    rel(path.join(MANIFESTS, 'components', `layout-${config.layout}`)),
    rel(path.join(MANIFESTS, 'components', config.target === 'gke' ? 'gke' : 'minikube')),
  ];
  // The cluster target has no dynamic provisioner: its volumes come from lib/cluster (local-path).
  if (config.db.externalUrl) components.push(rel(path.join(MANIFESTS, 'components', 'external-db')));
  if (config.k8s.autoscaling !== 'none') components.push(rel(path.join(MANIFESTS, 'components', config.k8s.autoscaling)));
  const patches: unknown[] = layoutRoles(config)
    .filter(runsTasks)
    .map((r) => json('Deployment', `digdag-${r}`, [{ op: 'replace', path: '/spec/template/spec/terminationGracePeriodSeconds', value: config.agent.terminationGraceSeconds }]));
  patches.push(...pullPolicyPatches(config.k8s.imagePullPolicy), ...resourcePatches(config));
  if (config.target === 'gke') {
    patches.push(json('ServiceAccount', 'digdag', [{ op: 'replace', path: '/metadata/annotations', value: config.k8s.gcpServiceAccount ? { 'iam.gke.io/gcp-service-account': config.k8s.gcpServiceAccount } : {} }]));
  }
  if (config.k8s.ingressHost) patches.push(json('Ingress', 'digdag', [{ op: 'add', path: '/spec/rules/0/host', value: config.k8s.ingressHost }]));
  if (config.k8s.autoscaling === 'keda') {
    const base = '/spec/triggers/0/metadata';
    patches.push(json('ScaledObject', 'digdag-autoscaler', [
      { op: 'replace', path: '/spec/scaleTargetRef/name', value: scaled },
      { op: 'replace', path: '/spec/minReplicaCount', value: config.replicas[taskRole(config.layout)] },
      { op: 'replace', path: '/spec/maxReplicaCount', value: config.k8s.agentMaxReplicas },
      { op: 'replace', path: `${base}/host`, value: db.host },
      { op: 'replace', path: `${base}/port`, value: String(db.port) },
      { op: 'replace', path: `${base}/userName`, value: db.user },
      { op: 'replace', path: `${base}/dbName`, value: db.database },
      { op: 'replace', path: `${base}/query`, value: QUEUE_DEPTH_SQL },
      { op: 'replace', path: `${base}/targetQueryValue`, value: String(config.agent.maxTaskThreads) },
    ]));
    // KEDA's operator runs that query against the in-cluster PostgreSQL.
    if (!config.db.externalUrl) {
      patches.push(json('NetworkPolicy', 'digdag-postgres', [{ op: 'add', path: '/spec/ingress/0/from/-', value: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': config.k8s.kedaNamespace } } } }]));
    }
  }
  if (config.k8s.autoscaling === 'hpa') {
    patches.push(json('HorizontalPodAutoscaler', 'digdag-autoscaler', [
      { op: 'replace', path: '/spec/scaleTargetRef/name', value: scaled },
      { op: 'replace', path: '/spec/minReplicas', value: config.replicas[taskRole(config.layout)] },
      { op: 'replace', path: '/spec/maxReplicas', value: config.k8s.agentMaxReplicas },
    ]));
  }
  if (config.metrics.monitoring === 'prometheus-operator') {
    components.push(rel(path.join(MANIFESTS, 'components', 'monitoring')));
    images.push(imageEntry(POSTGRES_EXPORTER_IMAGE.slice(0, POSTGRES_EXPORTER_IMAGE.lastIndexOf(':')), config.metrics.queueExporterImage));
    patches.push(json('Deployment', 'digdag-queue-exporter', [
      { op: 'replace', path: '/spec/template/spec/containers/0/env/0', value: { name: 'DATA_SOURCE_URI', value: `${db.host}:${db.port}/${db.database}?sslmode=disable` } },
      { op: 'replace', path: '/spec/template/spec/containers/0/env/1', value: { name: 'DATA_SOURCE_USER', value: db.user } },
    ]));
    patches.push(json('NetworkPolicy', 'digdag-metrics-from-prometheus', [
      { op: 'replace', path: '/spec/ingress/0/from/0/namespaceSelector/matchLabels', value: { 'kubernetes.io/metadata.name': config.metrics.prometheusNamespace } },
    ]));
  }
  // Authentication, TLS, NetworkPolicies: after the target's patches, before the rename.
  const sec = securityRendering(config);
  components.push(...sec.components.map((c) => rel(path.join(MANIFESTS, 'components', c))));
  patches.push(...sec.patches);
  return {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    namespace: config.k8s.namespace,
    resources: [rel(path.join(MANIFESTS, 'base'))],
    components,
    images,
    // With an autoscaler the task-running Deployment's replicas are the autoscaler's to set.
    replicas: layoutRoles(config).filter((r) => !runsTasks(r) || config.k8s.autoscaling === 'none').map((r) => ({ name: `digdag-${r}`, count: config.replicas[r] })),
    configMapGenerator: [
      { name: 'digdag-config', behavior: 'replace', files: Object.keys(configFiles(config)).map((f) => `${f}=config/${f}`) },
      { name: 'digdag-env', behavior: 'replace', literals: [`GCP_PROJECT=${config.gcp.project}`, `DIGDAG_AUTH=${config.security.auth}`] },
    ],
    patches: [...patches, renameNamespace(config.k8s.namespace)],
  };
}

function json(kind: string, name: string, ops: unknown[]): Record<string, unknown> {
  return { target: { kind, name }, patch: JSON.stringify(ops) };
}

/** The base's Namespace object carries the configured name too. */
function renameNamespace(ns: string): Record<string, unknown> {
  return json('Namespace', 'digdag', [{ op: 'replace', path: '/metadata/name', value: ns }]);
}

/** name[:tag][@sha256:…] → its parts; a port in the registry host is not a tag. */
export function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const at = image.indexOf('@');
  const ref = at >= 0 ? image.slice(0, at) : image;
  const digest = at >= 0 ? image.slice(at + 1) : undefined;
  const i = ref.lastIndexOf(':');
  const [name, tag] = i > ref.lastIndexOf('/') ? [ref.slice(0, i), ref.slice(i + 1)] : [ref, digest ? undefined : 'latest'];
  return { name, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** A kustomize `images:` entry: a digest goes into `digest:` (it wins over a tag), never `newTag`. */
export function imageEntry(placeholder: string, image: string): Record<string, string> {
  const { name, tag, digest } = splitImage(image);
  return { name: placeholder, newName: name, ...(digest ? { digest } : { newTag: tag! }) };
}

/** Workloads and their containers, named as in manifests/: a strategic merge patch matches
 * containers by name, so each patch targets only the workloads that have them. */
const WORKLOADS: { kind: string; name: string; containers: string[]; initContainers: string[] }[] = [
  { kind: 'Deployment', name: '^digdag-(ui|scheduler|worker|workflow|agent)$', containers: ['digdag'], initContainers: ['wait-migrated'] },
  { kind: 'Deployment', name: '^digdag-queue-exporter$', containers: ['postgres-exporter'], initContainers: [] },
  { kind: 'StatefulSet', name: '^digdag-postgres$', containers: ['postgres'], initContainers: [] },
  { kind: 'Job', name: '^digdag-migrate$', containers: ['migrate'], initContainers: [] },
];

/** imagePullPolicy on every container of every workload (the targets' components set none). */
export function pullPolicyPatches(policy: string): Record<string, unknown>[] {
  return WORKLOADS.map((w) => {
    const spec: Record<string, unknown> = { containers: w.containers.map((name) => ({ name, imagePullPolicy: policy })) };
    if (w.initContainers.length) spec.initContainers = w.initContainers.map((name) => ({ name, imagePullPolicy: policy }));
    // A jobTemplate-less Job and the pod templates share the path spec.template.spec.
    return { target: { kind: w.kind, name: w.name }, patch: stringify({ apiVersion: w.kind === 'Job' ? 'batch/v1' : 'apps/v1', kind: w.kind, metadata: { name: 'any' }, spec: { template: { spec } } }) };
  });
}

/** RESOURCE_PROFILE=small: CPU requests that fit every role, PostgreSQL and a surge pod on one
 * 2-vCPU node (the default ones, 1850m in all, deadlock a rolling update there). Memory stays:
 * the heaps (-Xmx in the manifests) need it, and memory is not what a small node lacks. */
export const SMALL_CPU: Record<string, string> = { ui: '100m', scheduler: '50m', workflow: '100m', worker: '200m', agent: '200m', postgres: '100m', init: '25m' };

export function resourcePatches(config: Config): Record<string, unknown>[] {
  if (config.k8s.resourceProfile !== 'small') return [];
  const cpu = (c: string, v: string) => ({ op: 'replace', path: `/spec/template/spec/${c}/resources/requests/cpu`, value: v });
  const out = layoutRoles(config).map((role) => json('Deployment', `digdag-${role}`, [cpu('containers/0', SMALL_CPU[role]!), cpu('initContainers/0', SMALL_CPU.init!)]));
  if (!config.db.externalUrl) out.push(json('StatefulSet', 'digdag-postgres', [cpu('containers/0', SMALL_CPU.postgres!)]));
  out.push(json('Job', 'digdag-migrate', [cpu('containers/0', SMALL_CPU.init!)]));
  return out;
}

export function renderDir(config: Config): string {
  return path.join(config.stateDir, 'kustomize');
}

/** Writes the state-dir kustomization and renders it; returns the parsed objects and the YAML. */
export async function renderManifests(config: Config, runner: Runner): Promise<{ yaml: string; objects: KubeObject[] }> {
  const dir = ensureDir(renderDir(config));
  ensureDir(path.join(dir, 'config'));
  for (const [file, text] of Object.entries(configFiles(config))) fs.writeFileSync(path.join(dir, 'config', file), text);
  fs.writeFileSync(path.join(dir, 'kustomization.yaml'), stringify(kustomization(config)));
  const res = await runner.run({ argv: ['kubectl', 'kustomize', dir], quiet: true });
  return { yaml: res.stdout, objects: parseObjects(res.stdout) };
}

export function parseObjects(yamlText: string): KubeObject[] {
  return parseAllDocuments(yamlText)
    .map((d) => d.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => !!o);
}

/** The committed defaults in manifests/base/config (kept equal to the generator by a test). */
export function writeBaseConfig(config: Config): void {
  for (const [file, text] of Object.entries(configFiles(config))) fs.writeFileSync(path.join(MANIFESTS, 'base', 'config', file), text);
}
