// The chart's values for a Config: what the toolkit's variables mean for chart/digdag-ha, the one
// source of every Kubernetes object. Also the names of the toolkit's variables behind each value
// (so a refusal of the chart names the variable to change) and the warnings apply prints.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.ts';
import { parseDatabaseUrl } from '../postgres.ts';
import { LAYOUT_ROLES, type Role } from '../roles.ts';

export const IN_CLUSTER_DB = { host: 'digdag-postgres', port: 5432 };

/** Secrets the create-secret task makes; the chart only refers to them (it never generates one here). */
export const SECRET_NAMES = { secrets: 'digdag-secrets', api: 'digdag-api-credentials', edge: 'digdag-edge-auth' } as const;

/** RESOURCE_PROFILE=small: CPU requests that fit every role, PostgreSQL and a surge pod on one
 * 2-vCPU node (the default ones, 1850m in all, deadlock a rolling update there). Memory stays:
 * the heaps (-Xmx) need it, and memory is not what a small node lacks. */
export const SMALL_CPU: Record<Role | 'postgres' | 'init', string> = { ui: '100m', scheduler: '50m', workflow: '100m', worker: '200m', agent: '200m', postgres: '100m', init: '25m' };

/** The chart's default ingress controller labels: a key the config does not name is dropped (Helm merges maps). */
const CHART_CONTROLLER_LABELS = ['app.kubernetes.io/name'];

/** The own test cluster's API server port (lib/cluster/config.ts; the core cannot import the harness). */
const API_SERVER_PORT_CLUSTER = 6443;

/** NodeLocal DNSCache, where the cluster runs it (the chart's default dnsCidrs). */
const NODE_LOCAL_DNS = '169.254.20.10/32';

export type ChartValues = Record<string, unknown>;

/** Where the pods reach the database. */
export function dbLocation(config: Config): { host: string; port: number; database: string; user: string } {
  if (config.db.externalUrl) {
    const u = parseDatabaseUrl(config.db.externalUrl);
    return { host: u.host, port: u.port, database: u.database, user: u.user };
  }
  return { ...IN_CLUSTER_DB, database: config.db.name, user: config.db.user };
}

/** name[:tag][@sha256:…] → its parts; a port in the registry host is not a tag. */
/** Where build-image records the ID of the Digdag image it built and loaded (this state dir's). */
export const imageBuildFile = (config: Config) => path.join(config.stateDir, 'image-build.json');

/** The ID build-image recorded for the configured image, if it built this one. */
export function builtImageId(config: Config): string | undefined {
  try {
    const ids = JSON.parse(fs.readFileSync(imageBuildFile(config), 'utf8')) as Record<string, string>;
    const id = ids[config.k8s.image];
    return id && /^sha256:[0-9a-f]{64}$/.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

export function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const at = image.indexOf('@');
  const ref = at >= 0 ? image.slice(0, at) : image;
  const digest = at >= 0 ? image.slice(at + 1) : undefined;
  const i = ref.lastIndexOf(':');
  const [name, tag] = i > ref.lastIndexOf('/') ? [ref.slice(0, i), ref.slice(i + 1)] : [ref, digest ? undefined : 'latest'];
  return { name, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** The values of chart/digdag-ha for this config (minimal: what the config decides; the rest are the chart's defaults). */
export function valuesFromConfig(config: Config): ChartValues {
  const db = dbLocation(config);
  const small = config.k8s.resourceProfile === 'small';
  const cpu = (v: string) => (small ? { resources: { requests: { cpu: v } } } : {});
  const img = splitImage(config.k8s.image);
  const s = config.security;
  const monitoring = config.metrics.monitoring === 'prometheus-operator';
  const labels: Record<string, string | null> = Object.fromEntries(CHART_CONTROLLER_LABELS.map((k) => [k, null]));
  Object.assign(labels, s.ingressControllerLabels);
  const google = config.k8s.googleApis;
  const dns = [NODE_LOCAL_DNS];
  // The test cluster's CoreDNS is a node process (kube-dns Service → the bridge address), not a
  // kube-dns pod the DNS rule selects: allow the node's address on port 53 too.
  if (config.target === 'cluster') dns.push(`${config.cluster.nodeAddress}/32`);
  return {
    image: { repository: img.name, ...(img.tag ? { tag: img.tag } : {}), digest: img.digest ?? '', pullPolicy: config.k8s.imagePullPolicy, buildId: builtImageId(config) ?? '' },
    layout: config.layout,
    roles: Object.fromEntries(LAYOUT_ROLES[config.layout].map((r) => [r, { replicas: config.replicas[r], ...cpu(SMALL_CPU[r]) }])),
    agent: {
      maxTaskThreads: config.agent.maxTaskThreads,
      heartbeatInterval: config.agent.heartbeatInterval,
      lockRetentionTime: config.agent.lockRetentionTime,
      terminationGracePeriodSeconds: config.agent.terminationGraceSeconds,
      pollMillis: config.agent.pollMillis,
    },
    executor: { taskMaxRun: config.executor.taskMaxRun, pollMillis: config.executor.pollMillis },
    waitMigrated: cpu(SMALL_CPU.init),
    // init-db deletes and re-creates digdag-migrate before each migration.
    migrate: { revisionSuffix: false, ...cpu(SMALL_CPU.init) },
    database: {
      name: db.database,
      user: db.user,
      poolSize: config.db.poolSize,
      expireLockInterval: config.agent.lockExpireInterval,
      external: config.db.externalUrl ? { enabled: true, host: db.host, port: db.port } : { enabled: false },
    },
    ...(config.db.cloudSqlInstance ? { cloudSqlProxy: {
      instance: config.db.cloudSqlInstance, privateIp: config.db.cloudSqlPrivateIp, port: db.port,
      credentials: config.db.cloudSqlCredentials === 'key' ? 'keySecret' : 'workloadIdentity', instanceCidrs: [...config.db.cloudSqlInstanceCidrs],
    } } : {}),
    postgres: {
      image: config.k8s.postgresImage,
      pullPolicy: config.k8s.imagePullPolicy,
      maxConnections: config.db.maxConnections,
      // GKE: a regional SSD volume; elsewhere the cluster's default class.
      storageClass: config.target === 'gke' ? 'premium-rwo' : '',
      members: config.db.members,
      ...(config.db.members > 1 ? { patroni: { synchronous: config.db.synchronous } } : {}),
      ...cpu(SMALL_CPU.postgres),
    },
    secrets: { existingSecret: SECRET_NAMES.secrets },
    auth: { mode: s.auth, user: s.authUser, existingSecret: SECRET_NAMES.api },
    namespace: { create: true },
    logs: { server: config.logs.server, gcsBucket: config.logs.gcsBucket, gcsPath: config.logs.gcsPath },
    gcp: { project: config.gcp.project, workloadIdentityServiceAccount: config.target === 'gke' ? config.k8s.gcpServiceAccount : '' },
    // Tests and air-gapped setups only; absent (the chart's defaults: nothing rendered) unless set.
    ...(google.address || google.caPem || google.metadataServer ? { googleApis: { address: google.address, caBundle: google.caPem, ...(google.metadataServer ? { metadataServer: google.metadataServer } : {}) } } : {}),
    ingress: { enabled: true, host: config.k8s.ingressHost, tls: { mode: s.ingressTls, issuer: s.tlsIssuer, secretName: s.tlsSecret } },
    edgeAuth: { mode: s.edgeAuth, existingSecret: s.edgeAuth === 'nginx-basic' ? SECRET_NAMES.edge : '', iapOauthSecret: s.iapOauthSecret },
    autoscaling: {
      mode: config.k8s.autoscaling,
      maxReplicas: config.k8s.agentMaxReplicas,
      ...(config.k8s.autoscalingMinReplicas !== undefined ? { minReplicas: config.k8s.autoscalingMinReplicas } : {}),
      kedaNamespace: config.k8s.kedaNamespace,
      pollingInterval: config.k8s.autoscalingPollingSeconds,
      cooldownPeriod: config.k8s.autoscalingCooldownSeconds,
      scaleDownPeriod: config.k8s.autoscalingScaleDownPeriodSeconds,
    },
    metrics: {
      podMonitor: { enabled: monitoring },
      prometheusRule: { enabled: monitoring },
      queueExporter: { enabled: monitoring, image: config.metrics.queueExporterImage, pullPolicy: config.k8s.imagePullPolicy },
      prometheusNamespace: config.metrics.prometheusNamespace,
    },
    networkPolicy: {
      enabled: true,
      ingressController: { namespace: s.ingressControllerNamespace, podLabels: labels },
      egressCidrs: s.egressCidrs,
      dnsCidrs: dns,
      // The test cluster's API server listens on the node's bridge address (lib/cluster/components.ts).
      ...(config.target === 'cluster' ? { apiServer: { cidrs: [`${config.cluster.nodeAddress}/32`], ports: [API_SERVER_PORT_CLUSTER] } } : {}),
    },
  };
}

/** Which toolkit variable sets a chart value: a refusal of the chart is translated with it. */
export const VALUE_VARIABLES: Readonly<Record<string, string>> = {
  'ingress.tls.mode': 'INGRESS_TLS',
  'ingress.tls.secretName': 'INGRESS_TLS_SECRET',
  'ingress.host': 'INGRESS_HOST',
  'edgeAuth.mode': 'EDGE_AUTH',
  'auth.mode': 'AUTH',
  'autoscaling.maxReplicas': 'AGENT_MAX_REPLICAS',
  'autoscaling.minReplicas': 'AUTOSCALING_MIN_REPLICAS',
  'autoscaling.mode': 'AGENT_AUTOSCALING',
  'autoscaling.pollingInterval': 'AUTOSCALING_POLLING_SECONDS',
  'autoscaling.cooldownPeriod': 'AUTOSCALING_COOLDOWN_SECONDS',
  'autoscaling.scaleDownPeriod': 'AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS',
  'roles.ui.replicas': 'UI_REPLICAS',
  'roles.worker.replicas': 'WORKER_REPLICAS',
  'roles.agent.replicas': 'AGENT_REPLICAS',
  'roles.workflow.replicas': 'WORKFLOW_REPLICAS',
  'agent.lockRetentionTime': 'AGENT_LOCK_RETENTION_TIME',
  'agent.heartbeatInterval': 'AGENT_HEARTBEAT_INTERVAL',
  'agent.pollMillis': 'AGENT_POLL_MILLIS',
  'executor.taskMaxRun': 'WORKFLOW_MAX_TASKS',
  'executor.pollMillis': 'EXECUTOR_POLL_MILLIS',
  'logs.server': 'LOG_SERVER',
  'logs.gcsBucket': 'GCS_LOG_BUCKET',
  'cloudSqlProxy.instance': 'CLOUDSQL_INSTANCE',
  'cloudSqlProxy.credentials': 'CLOUDSQL_PROXY_CREDENTIALS',
  'cloudSqlProxy.instanceCidrs': 'CLOUDSQL_INSTANCE_CIDRS',
  'postgres.members': 'POSTGRES_MEMBERS',
  'postgres.patroni.synchronous': 'POSTGRES_SYNC',
  'googleApis.address': 'GOOGLE_APIS_ADDRESS',
  'googleApis.caBundle': 'GOOGLE_APIS_CA_FILE',
  'googleApis.metadataServer': 'GOOGLE_METADATA_ADDRESS',
};

/** The toolkit variables behind the chart values a message names, e.g. "ingress.host = INGRESS_HOST". */
export function variablesIn(message: string): string[] {
  return Object.entries(VALUE_VARIABLES)
    .filter(([value]) => new RegExp(`(^|[^\\w.])${value.replace(/\./g, '\\.')}(?![\\w])`).test(message))
    .map(([value, name]) => `${value} = ${name}`);
}

/** What the user should know about this rendering (printed by the apply task; the chart's NOTES say the same). */
export function renderWarnings(config: Config): string[] {
  const s = config.security;
  const out: string[] = [];
  if (!s.egressCidrs.length) out.push('EGRESS_CIDRS=none: Digdag pods cannot reach HTTPS outside the cluster, so bq>, gcs and Google APIs fail (the metadata server stays reachable).');
  if (config.db.externalUrl) {
    const db = parseDatabaseUrl(config.db.externalUrl);
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(db.host)) {
      out.push(`DATABASE_URL names ${db.host}, not an address: NetworkPolicy cannot allow a DNS name, so add its address range to the digdag-egress policy (port ${db.port}) or Digdag cannot reach it.`);
    }
  }
  if (s.ingressTls === 'cert-manager' && !config.k8s.ingressHost) out.push('INGRESS_HOST is empty: cert-manager cannot issue a certificate without a host name, so nginx serves its self-signed default certificate (HTTP still redirects to HTTPS). Set INGRESS_HOST for a real certificate.');
  if (!config.db.externalUrl && config.db.members === 1) out.push('POSTGRES_MEMBERS=1: the in-cluster PostgreSQL is one pod and NOT highly available — while it is down every Digdag role stalls, and its volume is the only copy of every project, schedule and history. Set POSTGRES_MEMBERS=3 (Patroni) or DATABASE_URL for an HA database.');
  if (!config.db.externalUrl && config.db.members > 1 && !config.db.synchronous) out.push('POSTGRES_SYNC=off: replication is asynchronous, so a failover can lose the last committed transactions.');
  if (config.k8s.googleApis.address) out.push(`GOOGLE_APIS_ADDRESS=${config.k8s.googleApis.address}: Google's API host names lead there in every Digdag pod, not to Google (tests and air-gapped setups only).`);
  if (config.k8s.googleApis.metadataServer) out.push(`GOOGLE_METADATA_ADDRESS=${config.k8s.googleApis.metadataServer}: every Digdag pod takes its Google identity from that metadata server, not the platform's (tests and air-gapped setups only).`);
  if (s.ingressTls === 'none') out.push('INGRESS_TLS=none: the Ingress serves plain HTTP; passwords cross the network in clear text.');
  if (s.auth === 'none' && s.edgeAuth !== 'iap') out.push('AUTH=none: Digdag accepts every request; only the NetworkPolicies and the edge stand between the network and sh> tasks.');
  return out;
}
