// Typed configuration: every variable declared once (name, default, meaning), loaded from
// defaults < .env < environment < --set flags, validated before anything runs, then frozen.
import fs from 'node:fs';
import path from 'node:path';
import dotenv from 'dotenv';
import { UserError } from './errors.ts';
import { LAYOUTS, layoutRoles, type Layout, type Role } from './roles.ts';
import { BASE_IMAGE_SUITE } from './versions.ts';

/** The official PostgreSQL image the manifests and the chart use by default (pinned by digest). */
export const PUBLIC_POSTGRES_IMAGE = 'postgres:15-alpine@sha256:fe0737ba566a2c5b2a28f34433c0a423261900ec17b9bf7ad115e1aae7e57f1b';
/** On the cluster target: built by build-image from the debootstrapped base (docker/postgres). */
export const CLUSTER_POSTGRES_IMAGE = 'digdag-ha.local/postgres:15';
/** The debootstrapped base lib/cluster/images.ts makes (CLUSTER_BASE_IMAGE overrides it there). */
export const CLUSTER_BASE_IMAGE_DEFAULT = `digdag-ha-base:${BASE_IMAGE_SUITE}`;

export const TARGETS = ['local', 'minikube', 'gke', 'cluster'] as const;
export type Target = (typeof TARGETS)[number];

type Kind =
  | { type: 'string'; pattern?: RegExp; example: string }
  | { type: 'int'; min: number; max: number; example: string }
  | { type: 'bool'; example: string }
  | { type: 'enum'; values: readonly string[]; example: string };

export interface VarSpec {
  name: string;
  group: string;
  description: string;
  default: string;
  kind: Kind;
  secret?: boolean;
}

const IMAGE_REF = /^([a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?)?$/;
const str = (example: string, pattern?: RegExp): Kind => ({ type: 'string', example, pattern });
const int = (min: number, max: number, example: string): Kind => ({ type: 'int', min, max, example });
const bool: Kind = { type: 'bool', example: 'true' };
const oneOf = (values: readonly string[]): Kind => ({ type: 'enum', values, example: values[0] ?? '' });

/** Every variable the project reads. .env.example is checked against this list by a test. */
export const VARIABLES: readonly VarSpec[] = [
  // General
  { name: 'DIGDAG_HA_TARGET', group: 'General', default: '', kind: oneOf(['', ...TARGETS]),
    description: 'Where to deploy: local (Digdag role processes on this machine), minikube, gke, or cluster (the project\'s own test cluster, npx tsx tasks/cluster.ts up). Empty: minikube when docker and minikube answer, else local.' },
  { name: 'DIGDAG_HA_STATE_DIR', group: 'General', default: '.state', kind: str('.state'),
    description: 'Directory for generated secrets, the Digdag runtime cache, PostgreSQL data, process ids and logs. Never commit it.' },

  // Digdag runtime
  { name: 'DIGDAG_SOURCE', group: 'Digdag runtime', default: 'maven', kind: oneOf(['maven', 'release', 'jar']),
    description: 'Where build-image gets Digdag: maven (io.digdag:digdag-cli + digdag-ui from MAVEN_REPO_URL, checksums verified), release (the GitHub release jar, sha256 pinned) or jar (DIGDAG_JAR).' },
  { name: 'MAVEN_REPO_URL', group: 'Digdag runtime', default: 'https://repo.maven.apache.org/maven2', kind: str('https://repo.maven.apache.org/maven2', /^(https?|file):\/\//),
    description: 'Maven repository (or mirror) holding the io.digdag artifacts.' },
  { name: 'DIGDAG_JAR', group: 'Digdag runtime', default: '', kind: str('/opt/digdag/digdag-0.10.5.1.jar'),
    description: 'With DIGDAG_SOURCE=jar: a Digdag fat jar already on disk (the release jar, or one you built).' },
  { name: 'DIGDAG_JAR_SHA256', group: 'Digdag runtime', default: '', kind: str('4d1337d7…', /^([0-9a-f]{64})?$/),
    description: 'sha256 that DIGDAG_JAR must have. Empty: the pinned checksum of the official 0.10.5.1 release jar.' },
  { name: 'JAVA_HOME', group: 'Digdag runtime', default: '', kind: str('/usr/lib/jvm/java-17-openjdk-amd64'),
    description: 'Java runtime for Digdag (11 or 17). Empty: java on PATH.' },
  { name: 'DIGDAG_JVM_OPTS', group: 'Digdag runtime', default: '-Xms64m -Xmx512m', kind: str('-Xmx1g'),
    description: 'Extra JVM options for every Digdag process (heap size). The Java 17 --add-opens flags are added for you.' },

  // Roles
  { name: 'DIGDAG_HA_LAYOUT', group: 'Roles', default: 'worker', kind: oneOf(LAYOUTS),
    description: 'Role layout. worker: ui, scheduler and worker processes, each worker running the executor loop and an agent together (every workflow step as fast as one digdag server). split: the seed\'s four roles ui, workflow (executor loop), scheduler and agent, each scaled on its own.' },
  { name: 'UI_REPLICAS', group: 'Roles', default: '1', kind: int(0, 20, '2'),
    description: 'UI/API processes (no executor loop, no agent, no scheduler). 0 is allowed on the local target: every role serves the API.' },
  { name: 'SCHEDULER_REPLICAS', group: 'Roles', default: '1', kind: int(0, 5, '1'),
    description: 'Scheduler processes (cron schedules only). 0 disables schedules.' },
  { name: 'WORKER_REPLICAS', group: 'Roles', default: '2', kind: int(1, 50, '4'),
    description: 'Layout worker: worker processes (executor loop + agent). At least 1; the lower bound when autoscaling.' },
  { name: 'WORKFLOW_REPLICAS', group: 'Roles', default: '1', kind: int(1, 20, '2'),
    description: 'Layout split: workflow executor processes (executor loop + TTL enforcer). At least 1, or workflows stall.' },
  { name: 'AGENT_REPLICAS', group: 'Roles', default: '2', kind: int(1, 50, '4'),
    description: 'Layout split: agent processes that run tasks. At least 1; the lower bound when autoscaling.' },
  { name: 'AGENT_MAX_TASK_THREADS', group: 'Roles', default: '4', kind: int(1, 256, '8'),
    description: 'agent.max-task-threads: tasks one worker (or agent) runs at once (Digdag default 0 = unbounded; always bounded here).' },
  { name: 'AGENT_HEARTBEAT_INTERVAL', group: 'Roles', default: '', kind: str('60', /^(\d+)?$/),
    description: 'agent.heartbeat-interval in seconds. Empty: 2 on local (fast failover for verify-ha), 10 on Kubernetes.' },
  { name: 'AGENT_LOCK_RETENTION_TIME', group: 'Roles', default: '', kind: str('300', /^(\d+)?$/),
    description: 'agent.lock-retention-time in seconds: how long a dead agent keeps its tasks. Empty: 8 on local, 60 on Kubernetes. Must be >= 3 x heartbeat.' },
  { name: 'LOCK_EXPIRE_INTERVAL', group: 'Roles', default: '', kind: str('10', /^(\d+)?$/),
    description: 'database.queue.expireLockInterval in seconds. Empty: 2 on local, 10 on Kubernetes.' },
  { name: 'AGENT_TERMINATION_GRACE_SECONDS', group: 'Roles', default: '900', kind: int(30, 86400, '3600'),
    description: 'Kubernetes: how long a stopping worker (or agent) may finish its running tasks before SIGKILL (then they are retried after the lock retention).' },
  { name: 'DB_POOL_SIZE', group: 'Roles', default: '8', kind: int(2, 200, '8'),
    description: 'database.maximumPoolSize = minimumPoolSize per Digdag process (Digdag default CPUs x 32 exhausts PostgreSQL).' },

  // Database
  { name: 'DATABASE_URL', group: 'Database', default: '', kind: str('postgresql://digdag:secret@10.0.0.5:5432/digdag', /^(postgres(ql)?:\/\/.+)?$/), secret: true,
    description: 'Use an existing PostgreSQL (e.g. Cloud SQL) with this role and database instead of starting one. Empty: the project runs its own.' },
  { name: 'POSTGRES_PORT', group: 'Database', default: '0', kind: int(0, 65535, '54320'),
    description: 'Local target: port of the project-owned PostgreSQL on 127.0.0.1. 0: a free port is picked once and kept.' },
  { name: 'POSTGRES_BIN_DIR', group: 'Database', default: '', kind: str('/usr/lib/postgresql/15/bin'),
    description: 'Local target: directory with initdb, pg_ctl and postgres. Empty: the newest /usr/lib/postgresql/*/bin, else pg_config --bindir.' },
  { name: 'POSTGRES_MAX_CONNECTIONS', group: 'Database', default: '200', kind: int(20, 10000, '200'),
    description: 'max_connections of the project-owned PostgreSQL; all Digdag pools together must fit under it.' },
  { name: 'DB_NAME', group: 'Database', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Database Digdag uses.' },
  { name: 'DB_USER', group: 'Database', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Role Digdag connects as (NOSUPERUSER).' },

  // Workflows
  { name: 'WORKFLOW_DIR', group: 'Workflows', default: '', kind: str('./my-project'),
    description: 'Your own Digdag project directory, pushed by push-workflow next to the ha-sample project verify-ha uses.' },
  { name: 'WORKFLOW_PROJECT', group: 'Workflows', default: '', kind: str('my-project', /^([A-Za-z0-9_.-]+)?$/),
    description: 'Project name for WORKFLOW_DIR. Empty: the directory name.' },

  // Local target
  { name: 'LOCAL_PORT_BASE', group: 'Local target', default: '65432', kind: int(1024, 65500, '65432'),
    description: 'Local target: first HTTP port; the processes take consecutive ports in the layout\'s order (ui first). The first UI is the endpoint.' },

  // Logs and GCP
  { name: 'LOG_SERVER', group: 'Logs and GCP', default: '', kind: oneOf(['', 'local', 'gcs', 'none']),
    description: 'Where task logs are stored. Empty: local (a shared directory) on the local target, gcs when GCS_LOG_BUCKET is set on Kubernetes, else none.' },
  { name: 'GCS_LOG_BUCKET', group: 'Logs and GCP', default: '', kind: str('my-digdag-logs', /^([a-z0-9][a-z0-9._-]{1,220})?$/),
    description: 'log-server.gcs.bucket for task logs.' },
  { name: 'GCS_LOG_PATH', group: 'Logs and GCP', default: 'digdag-logs', kind: str('digdag-logs'),
    description: 'log-server.gcs.path prefix inside the bucket.' },
  { name: 'GCP_PROJECT', group: 'Logs and GCP', default: '', kind: str('my-project', /^([a-z][a-z0-9-]{4,28}[a-z0-9])?$/),
    description: 'GCP project for bq>/gcs_wait> and the gcloud CLI (GOOGLE_CLOUD_PROJECT in the pods).' },
  { name: 'GCP_SA_KEY_FILE', group: 'Logs and GCP', default: '', kind: str('./gcp-service-account-key.json'),
    description: 'Service-account JSON key mounted into the pods. Empty: Application Default Credentials (Workload Identity on GKE).' },

  // Kubernetes
  { name: 'K8S_NAMESPACE', group: 'Kubernetes', default: 'digdag', kind: str('digdag', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'Namespace everything is deployed into.' },
  { name: 'KUBE_CONTEXT', group: 'Kubernetes', default: '', kind: str('gke_my-project_asia-northeast1_digdag'),
    description: 'kubectl context. Empty: the minikube profile on minikube, the current context on gke.' },
  { name: 'MINIKUBE_PROFILE', group: 'Kubernetes', default: 'digdag-ha', kind: str('digdag-ha', /^[a-z0-9][a-z0-9-]*$/),
    description: 'minikube profile (a dedicated cluster, so teardown deletes only ours).' },
  { name: 'IMAGE', group: 'Kubernetes', default: 'digdag-ha:0.10.5.1', kind: str('asia-northeast1-docker.pkg.dev/my-project/digdag/digdag-ha:0.10.5.1', /^[a-z0-9][a-z0-9._\-/:@]*$/),
    description: 'Image name. On gke it must include the registry path; build-image pushes it there.' },
  { name: 'INSTALL_GCLOUD', group: 'Kubernetes', default: '', kind: oneOf(['', 'true', 'false']),
    description: 'Install the gcloud SDK in the image so sh> tasks can call bq and gcloud. Empty: true, except on the cluster target (Google\'s apt repository is not a registry it can reach).' },
  { name: 'BASE_IMAGE', group: 'Kubernetes', default: '', kind: str('debian:bookworm-slim', IMAGE_REF),
    description: 'Base image of the Digdag image (a JRE 17 is installed with apt when it has no java). Empty: eclipse-temurin 11 (pinned) on minikube/gke, the debootstrapped base (CLUSTER_BASE_IMAGE) on cluster.' },
  { name: 'POSTGRES_IMAGE', group: 'Kubernetes', default: '', kind: str('mirror.example.com/postgres:15-alpine', IMAGE_REF),
    description: 'PostgreSQL 15 image of the in-cluster database (runs as uid 70 like the official alpine image). Empty: the pinned postgres:15-alpine on minikube/gke; on cluster an image build-image makes from the base with Debian\'s postgresql-15.' },
  { name: 'IMAGE_PULL_POLICY', group: 'Kubernetes', default: '', kind: oneOf(['', 'IfNotPresent', 'Always', 'Never']),
    description: 'imagePullPolicy of every container. Empty: Always on gke with a tag (a moved tag is picked up), IfNotPresent otherwise (locally loaded or digest-pinned images).' },
  { name: 'RESOURCE_PROFILE', group: 'Kubernetes', default: 'default', kind: oneOf(['default', 'small']),
    description: 'Requests and limits of the pods: default (sized for production nodes) or small (every role and PostgreSQL fit one 2-vCPU node with room for a rolling update\'s surge pod).' },
  { name: 'IMAGE_TZ', group: 'Kubernetes', default: 'Asia/Tokyo', kind: str('Asia/Tokyo', /^[A-Za-z_]+(\/[A-Za-z_+-]+)*$/),
    description: 'Time zone baked into the image.' },
  { name: 'IMAGE_LANG', group: 'Kubernetes', default: 'ja_JP.UTF-8', kind: str('ja_JP.UTF-8', /^[A-Za-z_]+\.UTF-8$/),
    description: 'Locale baked into the image.' },
  { name: 'AGENT_AUTOSCALING', group: 'Kubernetes', default: 'none', kind: oneOf(['none', 'keda', 'hpa']),
    description: 'Scale the task-running role (workers, or agents in the split layout) automatically: keda (on Digdag\'s queue depth, needs KEDA), hpa (on CPU) or none (replicas fixed).' },
  { name: 'KEDA_NAMESPACE', group: 'Kubernetes', default: 'keda', kind: str('keda', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'With AGENT_AUTOSCALING=keda: the namespace KEDA runs in; its operator runs the queue-depth query, so the PostgreSQL NetworkPolicy admits it.' },
  { name: 'AGENT_MAX_REPLICAS', group: 'Kubernetes', default: '10', kind: int(1, 500, '20'),
    description: 'Upper bound for autoscaling the workers (agents in the split layout); WORKER_REPLICAS (AGENT_REPLICAS) is the lower bound.' },
  { name: 'GCP_SERVICE_ACCOUNT', group: 'Kubernetes', default: '', kind: str('digdag@my-project.iam.gserviceaccount.com', /^([a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com)?$/),
    description: 'gke: Google service account bound to the digdag ServiceAccount by Workload Identity. Empty: the node\'s default identity.' },
  { name: 'INGRESS_HOST', group: 'Kubernetes', default: '', kind: str('digdag.example.com', /^([a-z0-9.-]+)?$/),
    description: 'Host name for the Ingress rule. Empty: any host (the minikube IP works).' },
  { name: 'PORT_FORWARD_PORT', group: 'Kubernetes', default: '65432', kind: int(1024, 65535, '65432'),
    description: 'Local port that port-forward binds to the UI Service.' },
  { name: 'ROLLOUT_TIMEOUT_SECONDS', group: 'Kubernetes', default: '300', kind: int(10, 3600, '600'),
    description: 'How long apply waits for each role to roll out before showing events and failing.' },

  // Security (digdag-ha security branch; one additive block, see INTEGRATION.md)
  { name: 'AUTH', group: 'Security', default: 'basic', kind: oneOf(['basic', 'none']),
    description: 'Authentication on every Digdag port: basic (Digdag\'s own basic authenticator, user AUTH_USER, password generated once by create-secret) or none (anyone who reaches a port can run sh> tasks; a warning says so).' },
  { name: 'AUTH_USER', group: 'Security', default: 'digdag', kind: str('digdag', /^[A-Za-z0-9_.@-]{1,64}$/),
    description: 'User name for the UI, the REST API and the digdag CLI. The password is generated by create-secret and never printed; the task prints where to read it.' },
  { name: 'INGRESS_TLS', group: 'Security', default: 'cert-manager', kind: oneOf(['cert-manager', 'gke-managed', 'none']),
    description: 'Kubernetes: TLS at the Ingress: cert-manager (issuer TLS_ISSUER), gke-managed (Google-managed certificate, needs INGRESS_HOST) or none. HTTP redirects to HTTPS whenever TLS is on.' },
  { name: 'TLS_ISSUER', group: 'Security', default: 'letsencrypt', kind: str('letsencrypt-prod', /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/),
    description: 'With INGRESS_TLS=cert-manager: the ClusterIssuer (annotation cert-manager.io/cluster-issuer) that signs the Ingress certificate.' },
  { name: 'EDGE_AUTH', group: 'Security', default: 'none', kind: oneOf(['none', 'nginx-basic', 'iap']),
    description: 'Kubernetes: extra authentication at the edge: nginx-basic (ingress-nginx basic auth with the same user and password, so the browser prompts), iap (GKE Identity-Aware Proxy via a BackendConfig; needs the OAuth client Secret IAP_OAUTH_SECRET) or none.' },
  { name: 'IAP_OAUTH_SECRET', group: 'Security', default: 'digdag-iap-oauth', kind: str('digdag-iap-oauth', /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/),
    description: 'With EDGE_AUTH=iap: Secret holding client_id and client_secret of the OAuth client IAP uses.' },
  { name: 'INGRESS_CONTROLLER_NAMESPACE', group: 'Security', default: 'ingress-nginx', kind: str('ingress-nginx', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'NetworkPolicy: namespace of the ingress controller allowed to reach the UI/API pods (minikube\'s addon uses ingress-nginx).' },
  { name: 'INGRESS_CONTROLLER_LABELS', group: 'Security', default: 'app.kubernetes.io/name=ingress-nginx', kind: str('app.kubernetes.io/name=ingress-nginx', /^([A-Za-z0-9./_-]+=[A-Za-z0-9._-]*)(,[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*)*$/),
    description: 'NetworkPolicy: labels (k=v,k=v) of the ingress controller pods allowed to reach the UI/API pods.' },
  { name: 'EGRESS_CIDRS', group: 'Security', default: '0.0.0.0/0', kind: str('0.0.0.0/0', /^(none|[0-9./,:a-fA-F]+)$/),
    description: 'NetworkPolicy: where Digdag pods may connect on 443 (Google APIs for bq>/gcs, other HTTPS APIs tasks call), comma-separated CIDRs, or none (no HTTPS out of the cluster). Private ranges (10/8, 172.16/12, 192.168/16) are always excluded so tasks cannot reach other pods.' },

  // Metrics (every Digdag process always exports its metrics; see README "What to watch")
  { name: 'LOCAL_METRICS_PORT_BASE', group: 'Metrics', default: '9400', kind: int(1024, 65000, '9400'),
    description: 'Local target: first metrics port. The queue exporter listens on it; process n (in the layout\'s order, from 0) serves Prometheus metrics on base+1+2n and keeps Digdag\'s loopback JMX port (server.jmx.port) on base+2+2n.' },
  { name: 'MONITORING', group: 'Metrics', default: 'none', kind: oneOf(['none', 'prometheus-operator']),
    description: 'Kubernetes: none (pods carry prometheus.io/* scrape annotations only) or prometheus-operator (adds the PodMonitor, the PrometheusRule with the alerts and the one queue exporter; needs the monitoring.coreos.com CRDs).' },
  { name: 'PROMETHEUS_NAMESPACE', group: 'Metrics', default: 'monitoring', kind: str('monitoring', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'Kubernetes, MONITORING=prometheus-operator: namespace of the Prometheus that scrapes the pods (a NetworkPolicy lets it reach the metrics ports).' },
  { name: 'QUEUE_EXPORTER_IMAGE', group: 'Metrics', default: 'quay.io/prometheuscommunity/postgres-exporter:v0.11.1', kind: str('registry.example.com/mirror/postgres-exporter@sha256:…', /^[a-z0-9][a-z0-9._\-/:@]*$/),
    description: 'Kubernetes, MONITORING=prometheus-operator: image of the queue exporter (postgres_exporter 0.11.1, the version the local target runs). Point it at your mirror, ideally by digest.' },
];

export interface Config {
  readonly target: Target;
  /** Why this target was chosen (printed by all.ts). */
  readonly targetReason: string;
  readonly root: string;
  readonly stateDir: string;
  readonly vars: Readonly<Record<string, string>>;
  readonly digdag: {
    readonly source: 'maven' | 'release' | 'jar';
    readonly mavenRepoUrl: string;
    readonly jar: string;
    readonly jarSha256: string;
    readonly javaHome: string;
    readonly jvmOpts: readonly string[];
  };
  readonly layout: Layout;
  /** Processes/pods per role; 0 for the roles the layout does not run. */
  readonly replicas: Readonly<Record<Role, number>>;
  readonly agent: {
    readonly maxTaskThreads: number;
    readonly heartbeatInterval: number;
    readonly lockRetentionTime: number;
    readonly lockExpireInterval: number;
    readonly terminationGraceSeconds: number;
  };
  readonly db: {
    readonly externalUrl: string;
    readonly name: string;
    readonly user: string;
    readonly poolSize: number;
    readonly port: number;
    readonly binDir: string;
    readonly maxConnections: number;
  };
  readonly local: { readonly portBase: number };
  readonly logs: { readonly server: 'local' | 'gcs' | 'none'; readonly gcsBucket: string; readonly gcsPath: string };
  readonly gcp: { readonly project: string; readonly saKeyFile: string };
  readonly k8s: {
    readonly namespace: string;
    readonly context: string;
    readonly minikubeProfile: string;
    readonly image: string;
    readonly installGcloud: boolean;
    /** Base of the Digdag image; '' = the Dockerfile's default. */
    readonly baseImage: string;
    readonly postgresImage: string;
    readonly imagePullPolicy: 'IfNotPresent' | 'Always' | 'Never';
    readonly resourceProfile: 'default' | 'small';
    readonly tz: string;
    readonly lang: string;
    readonly ingressHost: string;
    readonly portForwardPort: number;
    readonly rolloutTimeoutSeconds: number;
    readonly autoscaling: 'none' | 'keda' | 'hpa';
    readonly agentMaxReplicas: number;
    readonly kedaNamespace: string;
    readonly gcpServiceAccount: string;
  };
  readonly metrics: {
    /** Local: queue exporter on this port; process n: metrics base+1+2n, JMX base+2+2n. */
    readonly localPortBase: number;
    readonly monitoring: 'none' | 'prometheus-operator';
    readonly queueExporterImage: string;
    readonly prometheusNamespace: string;
  };
  /** Security block (see INTEGRATION.md). */
  readonly security: {
    readonly auth: 'basic' | 'none';
    readonly authUser: string;
    readonly ingressTls: 'cert-manager' | 'gke-managed' | 'none';
    readonly tlsIssuer: string;
    readonly edgeAuth: 'none' | 'nginx-basic' | 'iap';
    readonly iapOauthSecret: string;
    readonly ingressControllerNamespace: string;
    readonly ingressControllerLabels: Readonly<Record<string, string>>;
    readonly egressCidrs: readonly string[];
  };
}

export interface LoadOptions {
  root: string;
  env: Record<string, string | undefined>;
  /** --set NAME=VALUE and --target, already parsed. */
  overrides?: Record<string, string>;
  /** Path of the dotenv file; default <root>/.env. Missing file is fine. */
  envFile?: string;
  /** Answers "do docker and minikube work here?" for target auto-detection. */
  detectKube?: () => boolean;
}

const byName = new Map(VARIABLES.map((v) => [v.name, v]));

function parseValue(spec: VarSpec, raw: string, source: string): string {
  const value = raw.trim();
  const bad = (why: string) =>
    new UserError(
      `${spec.name}=${spec.secret ? '***' : JSON.stringify(value)} (from ${source}) ${why}`,
      `set ${spec.name} to a value like ${spec.name}=${spec.kind.example} — ${spec.description}`,
    );
  switch (spec.kind.type) {
    case 'int': {
      if (!/^-?\d+$/.test(value)) throw bad('is not a whole number');
      const n = Number(value);
      if (n < spec.kind.min || n > spec.kind.max) throw bad(`is out of range (${spec.kind.min}..${spec.kind.max})`);
      return String(n);
    }
    case 'bool':
      if (!/^(true|false|1|0|yes|no)$/i.test(value)) throw bad('is not true or false');
      return /^(true|1|yes)$/i.test(value) ? 'true' : 'false';
    case 'enum':
      if (!spec.kind.values.includes(value)) throw bad(`is not one of: ${spec.kind.values.filter(Boolean).join(', ')}`);
      return value;
    case 'string':
      if (spec.kind.pattern && !spec.kind.pattern.test(value)) throw bad('has the wrong form');
      return value;
  }
}

/** Reads and validates everything; throws UserError naming the variable on the first bad value. */
export function loadConfig(opts: LoadOptions): Config {
  const envFile = opts.envFile ?? path.join(opts.root, '.env');
  let fileVars: Record<string, string> = {};
  if (fs.existsSync(envFile)) fileVars = dotenv.parse(fs.readFileSync(envFile));
  for (const name of Object.keys(fileVars)) {
    if (!byName.has(name)) {
      throw new UserError(`${path.basename(envFile)} sets ${name}, which digdag-ha does not know`, `remove it or fix the name; the known variables are listed in .env.example`);
    }
  }
  for (const name of Object.keys(opts.overrides ?? {})) {
    if (!byName.has(name)) throw new UserError(`--set ${name}: unknown variable`, 'see .env.example for the variable names');
  }

  const vars: Record<string, string> = {};
  for (const spec of VARIABLES) {
    let raw = spec.default;
    let source = 'default';
    if (fileVars[spec.name] !== undefined) [raw, source] = [fileVars[spec.name]!, path.basename(envFile)];
    if (opts.env[spec.name] !== undefined && opts.env[spec.name] !== '') [raw, source] = [opts.env[spec.name]!, 'environment'];
    if (opts.overrides?.[spec.name] !== undefined) [raw, source] = [opts.overrides[spec.name]!, 'command line'];
    vars[spec.name] = parseValue(spec, raw, source);
  }

  let target = vars.DIGDAG_HA_TARGET as Target | '';
  let targetReason = `DIGDAG_HA_TARGET=${target}`;
  if (!target) {
    const kube = opts.detectKube ? opts.detectKube() : false;
    target = kube ? 'minikube' : 'local';
    targetReason = kube
      ? 'no target set; docker and minikube answer, so minikube'
      : 'no target set; docker or minikube does not answer here, so local (Digdag role processes on this machine)';
  }
  const isLocal = target === 'local';
  const num = (n: string) => Number(vars[n]);
  const orDefault = (n: string, local: number, kube: number) => (vars[n] ? Number(vars[n]) : isLocal ? local : kube);

  const heartbeat = orDefault('AGENT_HEARTBEAT_INTERVAL', 2, 10);
  const retention = orDefault('AGENT_LOCK_RETENTION_TIME', 8, 60);
  if (heartbeat < 1) throw new UserError('AGENT_HEARTBEAT_INTERVAL must be at least 1 second', 'set AGENT_HEARTBEAT_INTERVAL=10');
  if (retention < heartbeat * 3) {
    throw new UserError(
      `AGENT_LOCK_RETENTION_TIME=${retention} is less than 3 x AGENT_HEARTBEAT_INTERVAL=${heartbeat}: a live agent could lose its tasks between two heartbeats`,
      `set AGENT_LOCK_RETENTION_TIME=${heartbeat * 3} or more (Digdag's defaults are 60 and 300)`,
    );
  }

  const logServer = (vars.LOG_SERVER || (isLocal ? 'local' : vars.GCS_LOG_BUCKET ? 'gcs' : 'none')) as Config['logs']['server'];
  if (logServer === 'gcs' && !vars.GCS_LOG_BUCKET) {
    throw new UserError('LOG_SERVER=gcs needs a bucket', 'set GCS_LOG_BUCKET=my-digdag-logs (or LOG_SERVER=none)');
  }
  if (logServer === 'local' && !isLocal) {
    throw new UserError('LOG_SERVER=local only works on the local target (pods share no directory)', 'use LOG_SERVER=gcs with GCS_LOG_BUCKET, or LOG_SERVER=none');
  }
  if (vars.DIGDAG_SOURCE === 'jar' && !vars.DIGDAG_JAR) {
    throw new UserError('DIGDAG_SOURCE=jar needs DIGDAG_JAR', 'set DIGDAG_JAR=/path/to/digdag-0.10.5.1.jar');
  }
  if (vars.DIGDAG_JAR && vars.DIGDAG_SOURCE !== 'jar') {
    throw new UserError('DIGDAG_JAR is set but DIGDAG_SOURCE is not jar', 'set DIGDAG_SOURCE=jar, or remove DIGDAG_JAR');
  }
  const root = opts.root;
  const resolve = (p: string | undefined) => (p ? path.resolve(root, p) : '');
  if (vars.GCP_SA_KEY_FILE && !fs.existsSync(resolve(vars.GCP_SA_KEY_FILE))) {
    throw new UserError(`GCP_SA_KEY_FILE=${vars.GCP_SA_KEY_FILE} does not exist`, 'point GCP_SA_KEY_FILE at the service-account JSON key, or leave it empty to use Application Default Credentials');
  }
  if (vars.WORKFLOW_DIR && !fs.existsSync(path.join(resolve(vars.WORKFLOW_DIR), '.'))) {
    throw new UserError(`WORKFLOW_DIR=${vars.WORKFLOW_DIR} does not exist`, 'point WORKFLOW_DIR at a directory holding your .dig files, or leave it empty');
  }
  if (vars.DIGDAG_JAR && !fs.existsSync(resolve(vars.DIGDAG_JAR))) {
    throw new UserError(`DIGDAG_JAR=${vars.DIGDAG_JAR} does not exist`, 'point DIGDAG_JAR at a Digdag jar, or use DIGDAG_SOURCE=maven');
  }
  if (!IMAGE_REF.test(vars.IMAGE!) || (vars.IMAGE!.includes('@') && !/@sha256:[0-9a-f]{64}$/.test(vars.IMAGE!))) {
    throw new UserError(`IMAGE=${vars.IMAGE} is not an image reference`, 'set IMAGE=name:tag or IMAGE=registry/path/name@sha256:<64 hex digits>');
  }
  if (target === 'cluster' && (vars.IMAGE!.includes('@') || vars.POSTGRES_IMAGE?.includes('@'))) {
    throw new UserError('the cluster target loads locally built images, and a digest-pinned reference (name@sha256:…) cannot name one', 'use a tag on the cluster target, e.g. IMAGE=digdag-ha:0.10.5.1');
  }
  if (target === 'cluster' && vars.IMAGE_PULL_POLICY === 'Always') {
    throw new UserError('IMAGE_PULL_POLICY=Always on the cluster target: it has no registry, its images are imported into containerd', 'set IMAGE_PULL_POLICY=IfNotPresent (or leave it empty)');
  }
  if (target === 'gke' && !vars.IMAGE!.includes('/')) {
    throw new UserError(`IMAGE=${vars.IMAGE} has no registry path, and gke pulls from a registry`, 'set IMAGE=asia-northeast1-docker.pkg.dev/<project>/<repo>/digdag-ha:0.10.5.1');
  }

  // Kubernetes-only combinations (UI_REPLICAS=0, AGENT_MAX_REPLICAS below the lower bound, the
  // edge's TLS and authentication) are the chart's to refuse: chart/digdag-ha, rendered before anything is applied.
  const layout = vars.DIGDAG_HA_LAYOUT as Layout;
  const replicaVar: Record<Role, string> = { ui: 'UI_REPLICAS', scheduler: 'SCHEDULER_REPLICAS', worker: 'WORKER_REPLICAS', workflow: 'WORKFLOW_REPLICAS', agent: 'AGENT_REPLICAS' };
  const replicas = Object.fromEntries(
    Object.entries(replicaVar).map(([role, name]) => [role, layoutRoles({ layout }).includes(role as Role) ? num(name) : 0]),
  ) as Record<Role, number>;
  const processes = Object.values(replicas).reduce((a, b) => a + b, 0);
  const connections = processes * num('DB_POOL_SIZE') + 1; // + the migration client
  if (!vars.DATABASE_URL && connections > num('POSTGRES_MAX_CONNECTIONS') - 5) {
    throw new UserError(
      `${processes} Digdag processes x DB_POOL_SIZE=${vars.DB_POOL_SIZE} need ${connections} connections; POSTGRES_MAX_CONNECTIONS=${vars.POSTGRES_MAX_CONNECTIONS} leaves too few`,
      `lower DB_POOL_SIZE or a replica count, or raise POSTGRES_MAX_CONNECTIONS to ${connections + 10}`,
    );
  }
  if (isLocal && num('LOCAL_PORT_BASE') + processes > 65535) {
    throw new UserError(`LOCAL_PORT_BASE=${vars.LOCAL_PORT_BASE} leaves no room for ${processes} processes`, 'set LOCAL_PORT_BASE=65432 or lower');
  }
  if (isLocal) {
    const [http, metrics] = [num('LOCAL_PORT_BASE'), num('LOCAL_METRICS_PORT_BASE')];
    const metricsEnd = metrics + 2 * processes; // the queue exporter, then two ports per process
    if (metricsEnd > 65535) throw new UserError(`LOCAL_METRICS_PORT_BASE=${metrics} leaves no room for ${2 * processes + 1} metrics ports`, 'set LOCAL_METRICS_PORT_BASE=9400');
    if (metrics <= http + processes - 1 && http <= metricsEnd) {
      throw new UserError(`LOCAL_METRICS_PORT_BASE=${metrics} (ports ${metrics}-${metricsEnd}) overlaps the HTTP ports ${http}-${http + processes - 1} of LOCAL_PORT_BASE`, `set LOCAL_METRICS_PORT_BASE=${http + processes} or a range elsewhere`);
    }
  }

  const stateDir = path.join(resolve(vars.DIGDAG_HA_STATE_DIR), target);
  const config: Config = {
    target,
    targetReason,
    root,
    stateDir,
    vars: Object.freeze({ ...vars }),
    digdag: {
      source: vars.DIGDAG_SOURCE as Config['digdag']['source'],
      mavenRepoUrl: vars.MAVEN_REPO_URL!.replace(/\/+$/, ''),
      jar: resolve(vars.DIGDAG_JAR!),
      jarSha256: vars.DIGDAG_JAR_SHA256!,
      javaHome: vars.JAVA_HOME!,
      jvmOpts: vars.DIGDAG_JVM_OPTS!.split(/\s+/).filter(Boolean),
    },
    layout,
    replicas,
    agent: {
      maxTaskThreads: num('AGENT_MAX_TASK_THREADS'),
      heartbeatInterval: heartbeat,
      lockRetentionTime: retention,
      lockExpireInterval: orDefault('LOCK_EXPIRE_INTERVAL', 2, 10),
      terminationGraceSeconds: num('AGENT_TERMINATION_GRACE_SECONDS'),
    },
    db: {
      externalUrl: vars.DATABASE_URL!,
      name: vars.DB_NAME!,
      user: vars.DB_USER!,
      poolSize: num('DB_POOL_SIZE'),
      port: num('POSTGRES_PORT'),
      binDir: vars.POSTGRES_BIN_DIR!,
      maxConnections: num('POSTGRES_MAX_CONNECTIONS'),
    },
    local: { portBase: num('LOCAL_PORT_BASE') },
    logs: { server: logServer, gcsBucket: vars.GCS_LOG_BUCKET!, gcsPath: vars.GCS_LOG_PATH! },
    gcp: { project: vars.GCP_PROJECT!, saKeyFile: resolve(vars.GCP_SA_KEY_FILE!) },
    k8s: {
      namespace: vars.K8S_NAMESPACE!,
      context: vars.KUBE_CONTEXT || (target === 'minikube' ? vars.MINIKUBE_PROFILE! : ''),
      minikubeProfile: vars.MINIKUBE_PROFILE!,
      image: vars.IMAGE!,
      installGcloud: vars.INSTALL_GCLOUD ? vars.INSTALL_GCLOUD === 'true' : target !== 'cluster',
      baseImage: vars.BASE_IMAGE || (target === 'cluster' ? opts.env.CLUSTER_BASE_IMAGE || CLUSTER_BASE_IMAGE_DEFAULT : ''),
      postgresImage: vars.POSTGRES_IMAGE || (target === 'cluster' ? CLUSTER_POSTGRES_IMAGE : PUBLIC_POSTGRES_IMAGE),
      imagePullPolicy: (vars.IMAGE_PULL_POLICY || (target === 'gke' && !vars.IMAGE!.includes('@') ? 'Always' : 'IfNotPresent')) as Config['k8s']['imagePullPolicy'],
      resourceProfile: vars.RESOURCE_PROFILE as Config['k8s']['resourceProfile'],
      tz: vars.IMAGE_TZ!,
      lang: vars.IMAGE_LANG!,
      ingressHost: vars.INGRESS_HOST!,
      portForwardPort: num('PORT_FORWARD_PORT'),
      rolloutTimeoutSeconds: num('ROLLOUT_TIMEOUT_SECONDS'),
      autoscaling: vars.AGENT_AUTOSCALING as Config['k8s']['autoscaling'],
      agentMaxReplicas: num('AGENT_MAX_REPLICAS'),
      kedaNamespace: vars.KEDA_NAMESPACE!,
      gcpServiceAccount: vars.GCP_SERVICE_ACCOUNT!,
    },
    metrics: {
      localPortBase: num('LOCAL_METRICS_PORT_BASE'),
      monitoring: vars.MONITORING as Config['metrics']['monitoring'],
      queueExporterImage: vars.QUEUE_EXPORTER_IMAGE!,
      prometheusNamespace: vars.PROMETHEUS_NAMESPACE!,
    },
    security: securityConfig(vars),
  };
  return deepFreeze(config);
}

/** The Security block's checks and shape, kept apart from the rest of loadConfig. */
function securityConfig(vars: Record<string, string>): Config['security'] {
  if (vars.EDGE_AUTH === 'nginx-basic' && vars.AUTH === 'none') {
    // The htpasswd Secret is made from Digdag's own user and password, which AUTH=none does not generate.
    throw new UserError('EDGE_AUTH=nginx-basic uses the UI/API user and password, which AUTH=none turns off', 'set AUTH=basic with EDGE_AUTH=nginx-basic (the browser then asks once, at nginx)');
  }
  const cidrs = vars.EGRESS_CIDRS === 'none' ? [] : vars.EGRESS_CIDRS!.split(',').map((c) => c.trim()).filter(Boolean);
  if (vars.EGRESS_CIDRS !== 'none' && !cidrs.length) {
    // An empty peer list in a NetworkPolicy rule would allow 443 to everywhere.
    throw new UserError(`EGRESS_CIDRS=${JSON.stringify(vars.EGRESS_CIDRS)} names no CIDR`, 'set EGRESS_CIDRS=0.0.0.0/0, a list like 199.36.153.8/30,203.0.113.0/24, or none for no HTTPS out of the cluster');
  }
  for (const c of cidrs) {
    if (!/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$|^[0-9a-fA-F:]+\/\d{1,3}$/.test(c)) {
      throw new UserError(`EGRESS_CIDRS has ${JSON.stringify(c)}, which is not a CIDR`, 'set EGRESS_CIDRS=0.0.0.0/0 or a list like 199.36.153.8/30,203.0.113.0/24');
    }
  }
  return {
    auth: vars.AUTH as 'basic' | 'none',
    authUser: vars.AUTH_USER!,
    ingressTls: vars.INGRESS_TLS as Config['security']['ingressTls'],
    tlsIssuer: vars.TLS_ISSUER!,
    edgeAuth: vars.EDGE_AUTH as Config['security']['edgeAuth'],
    iapOauthSecret: vars.IAP_OAUTH_SECRET!,
    ingressControllerNamespace: vars.INGRESS_CONTROLLER_NAMESPACE!,
    ingressControllerLabels: Object.fromEntries(vars.INGRESS_CONTROLLER_LABELS!.split(',').map((kv) => kv.split('=') as [string, string])),
    egressCidrs: cidrs,
  };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** The .env.example text, generated from VARIABLES so the two cannot drift. */
export function renderEnvExample(): string {
  const lines = ['# digdag-ha configuration. Copy to .env and edit; the environment and --set NAME=VALUE override it.', '# Every value below is the default.', ''];
  let group = '';
  for (const v of VARIABLES) {
    if (v.group !== group) {
      group = v.group;
      lines.push(`# --- ${group} ---`);
    }
    lines.push(`# ${v.description}`, `${v.name}=${v.default}`, '');
  }
  return lines.join('\n');
}
