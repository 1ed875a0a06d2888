// Renders the Kubernetes objects for a Config: a kustomization in the state dir that layers the
// repo's base, the layout's and the target's components with this config's properties (from the shared generator), image, replicas,
// components and patches, then `kubectl kustomize` (client-side, works offline).
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ROOT } from '../cli.ts';
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
  const scaled = `digdag-${taskRole(config.layout)}`;
  // Order matters: the target's patches apply to the layout's Deployments.
  const components: string[] = [
    rel(path.join(MANIFESTS, 'components', `layout-${config.layout}`)),
    rel(path.join(MANIFESTS, 'components', config.target === 'gke' ? 'gke' : 'minikube')),
  ];
  if (config.db.externalUrl) components.push(rel(path.join(MANIFESTS, 'components', 'external-db')));
  if (config.k8s.autoscaling !== 'none') components.push(rel(path.join(MANIFESTS, 'components', config.k8s.autoscaling)));
  const patches: unknown[] = layoutRoles(config)
    .filter(runsTasks)
    .map((r) => json('Deployment', `digdag-${r}`, [{ op: 'replace', path: '/spec/template/spec/terminationGracePeriodSeconds', value: config.agent.terminationGraceSeconds }]));
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
  }
  if (config.k8s.autoscaling === 'hpa') {
    patches.push(json('HorizontalPodAutoscaler', 'digdag-autoscaler', [
      { op: 'replace', path: '/spec/scaleTargetRef/name', value: scaled },
      { op: 'replace', path: '/spec/minReplicas', value: config.replicas[taskRole(config.layout)] },
      { op: 'replace', path: '/spec/maxReplicas', value: config.k8s.agentMaxReplicas },
    ]));
  }
  const images = [kustomizeImage('digdag-ha', config.k8s.image)];
  if (config.metrics.monitoring === 'prometheus-operator') {
    components.push(rel(path.join(MANIFESTS, 'components', 'monitoring')));
    images.push(kustomizeImage(POSTGRES_EXPORTER_IMAGE.slice(0, POSTGRES_EXPORTER_IMAGE.lastIndexOf(':')), config.metrics.queueExporterImage));
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

/** A kustomize images entry: a tag, or a digest (kustomize writes name@digest only from `digest`). */
export function kustomizeImage(name: string, image: string): Record<string, string> {
  const [newName, tag] = splitImage(image);
  return tag.startsWith('@') ? { name, newName, digest: tag.slice(1) } : { name, newName, newTag: tag };
}

export function splitImage(image: string): [string, string] {
  if (image.includes('@')) {
    const [name, digest] = image.split('@');
    return [name!, `@${digest}`];
  }
  const i = image.lastIndexOf(':');
  return i > image.lastIndexOf('/') ? [image.slice(0, i), image.slice(i + 1)] : [image, 'latest'];
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
