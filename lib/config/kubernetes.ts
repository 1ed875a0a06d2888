// Config section Kubernetes: namespace, context, images, pod sizing, autoscaling and access
// on minikube, gke and the project's own cluster.
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import { group, IMAGE_REF, int, oneOf, str, type Values, type VarSpec } from './spec.ts';

/** The official PostgreSQL image the manifests and the chart use by default (pinned by digest). */
export const PUBLIC_POSTGRES_IMAGE = 'postgres:15-alpine@sha256:fe0737ba566a2c5b2a28f34433c0a423261900ec17b9bf7ad115e1aae7e57f1b';
/** On the cluster target: built by build-image from the debootstrapped base (docker/postgres). */
export const CLUSTER_POSTGRES_IMAGE = 'digdag-ha.local/postgres:15';

export const KUBERNETES_VARIABLES: readonly VarSpec[] = group('Kubernetes', [
  { name: 'K8S_NAMESPACE', default: 'digdag', kind: str('digdag', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'Namespace everything is deployed into.' },
  { name: 'KUBE_CONTEXT', default: '', kind: str('gke_my-project_asia-northeast1_digdag'),
    description: 'kubectl context. Empty: the minikube profile on minikube, the current context on gke.' },
  { name: 'MINIKUBE_PROFILE', default: 'digdag-ha', kind: str('digdag-ha', /^[a-z0-9][a-z0-9-]*$/),
    description: 'minikube profile (a dedicated cluster, so teardown deletes only ours).' },
  { name: 'IMAGE', default: 'digdag-ha:0.10.5.1', kind: str('asia-northeast1-docker.pkg.dev/my-project/digdag/digdag-ha:0.10.5.1', /^[a-z0-9][a-z0-9._\-/:@]*$/),
    description: 'Image name. On gke it must include the registry path; build-image pushes it there.' },
  { name: 'INSTALL_GCLOUD', default: 'true', kind: oneOf(['true', 'false']),
    description: 'Put the Google Cloud CLI (gcloud, bq, gsutil) into the image so sh> tasks can call them, with the same identity as bq>. It comes from GCLOUD_SDK, never from Google\'s apt repository, so an offline build has it too. false: a lean image without it.' },
  { name: 'GCLOUD_SDK', default: '', kind: str('./google-cloud-cli-528.0.0-linux-x86_64.tar.gz'),
    description: 'With INSTALL_GCLOUD=true: where the image\'s Google Cloud CLI comes from — an installed SDK\'s root directory (e.g. /usr/lib/google-cloud-sdk) or an SDK archive for Linux x86_64 (google-cloud-cli-<version>-linux-x86_64.tar.gz from https://cloud.google.com/sdk/docs/install). Empty: the SDK of the gcloud on PATH. Only its core is copied (gcloud, bq, gsutil, the bundled Python), never its credentials.' },
  { name: 'BASE_IMAGE', default: '', kind: str('debian:bookworm-slim', IMAGE_REF),
    description: 'Base image of the Digdag image (a JRE 17 is installed with apt when it has no java). Empty: eclipse-temurin 11 (pinned) on minikube/gke, the debootstrapped base (CLUSTER_BASE_IMAGE) on cluster.' },
  { name: 'POSTGRES_IMAGE', default: '', kind: str('mirror.example.com/postgres:15-alpine', IMAGE_REF),
    description: 'PostgreSQL 15 image of the in-cluster database (runs as uid 70 like the official alpine image). Empty: the pinned postgres:15-alpine on minikube/gke; on cluster an image build-image makes from the base with Debian\'s postgresql-15.' },
  { name: 'IMAGE_PULL_POLICY', default: '', kind: oneOf(['', 'IfNotPresent', 'Always', 'Never']),
    description: 'imagePullPolicy of every container. Empty: Always on gke with a tag (a moved tag is picked up), IfNotPresent otherwise (locally loaded or digest-pinned images).' },
  { name: 'RESOURCE_PROFILE', default: 'default', kind: oneOf(['default', 'small']),
    description: 'Requests and limits of the pods: default (sized for production nodes) or small (every role and PostgreSQL fit one 2-vCPU node with room for a rolling update\'s surge pod).' },
  { name: 'IMAGE_TZ', default: 'Asia/Tokyo', kind: str('Asia/Tokyo', /^[A-Za-z_]+(\/[A-Za-z_+-]+)*$/),
    description: 'Time zone baked into the image.' },
  { name: 'IMAGE_LANG', default: 'ja_JP.UTF-8', kind: str('ja_JP.UTF-8', /^[A-Za-z_]+\.UTF-8$/),
    description: 'Locale baked into the image.' },
  { name: 'AGENT_AUTOSCALING', default: 'none', kind: oneOf(['none', 'keda', 'hpa']),
    description: 'Scale the task-running role (workers, or agents in the split layout) automatically: keda (on Digdag\'s queue depth, needs KEDA), hpa (on CPU) or none (replicas fixed).' },
  { name: 'KEDA_NAMESPACE', default: 'keda', kind: str('keda', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'With AGENT_AUTOSCALING=keda: the namespace KEDA runs in; its operator runs the queue-depth query, so the PostgreSQL NetworkPolicy admits it.' },
  { name: 'AGENT_MAX_REPLICAS', default: '10', kind: int(1, 500, '20'),
    description: 'Upper bound for autoscaling the workers (agents in the split layout); AUTOSCALING_MIN_REPLICAS (by default WORKER_REPLICAS / AGENT_REPLICAS) is the lower bound.' },
  { name: 'AUTOSCALING_MIN_REPLICAS', default: '', kind: str('0', /^(\d{1,3})?$/),
    description: 'With autoscaling: the fewest workers (agents in the split layout). Empty: WORKER_REPLICAS (AGENT_REPLICAS). 0 (AGENT_AUTOSCALING=keda only) scales them to zero while the queue is empty: the ui\'s executor loop (the workflow role\'s in the split layout) still puts attempts\' tasks in the queue, and the first queued task brings a worker up.' },
  { name: 'AUTOSCALING_POLLING_SECONDS', default: '15', kind: int(1, 3600, '15'),
    description: 'With AGENT_AUTOSCALING=keda: seconds between two queries of the queue depth (KEDA\'s pollingInterval).' },
  { name: 'AUTOSCALING_COOLDOWN_SECONDS', default: '300', kind: int(1, 86400, '300'),
    description: 'With autoscaling: seconds the desired count must stay lower before a worker (agent) is removed (KEDA\'s cooldownPeriod, the scale-down stabilization window).' },
  { name: 'AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS', default: '120', kind: int(1, 86400, '120'),
    description: 'With autoscaling: at most one worker (agent) is removed per this many seconds.' },
  { name: 'GCP_SERVICE_ACCOUNT', default: '', kind: str('digdag@my-project.iam.gserviceaccount.com', /^([a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com)?$/),
    description: 'gke: Google service account bound to the digdag ServiceAccount by Workload Identity. Empty: the node\'s default identity.' },
  { name: 'GOOGLE_APIS_ADDRESS', default: '', kind: str('10.0.0.53', /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$|^$/),
    description: 'Tests and air-gapped setups only: an IPv4 address (a node or pod address, not a Service IP) that Google\'s API host names (www/oauth2/bigquery/storage.googleapis.com) resolve to in every Digdag pod (hostAliases), allowed on port 443 by the NetworkPolicy — a private endpoint or offline stand-in. Empty: Google\'s own endpoints.' },
  { name: 'GOOGLE_APIS_CA_FILE', default: '', kind: str('./private-endpoint-ca.pem'),
    description: 'Tests and air-gapped setups only: PEM file of CA certificates every Digdag pod trusts besides the image\'s own (JVM truststore, gcloud/bq), e.g. the CA of GOOGLE_APIS_ADDRESS\'s endpoint. Certificates only (it goes into a ConfigMap). Empty: none.' },
  { name: 'GOOGLE_METADATA_ADDRESS', default: '', kind: str('10.0.0.53:8080', /^(((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d):([1-9]\d{0,4}))?$/),
    description: 'Tests and air-gapped setups only: IPv4 address:port of a GCE-style metadata server that gives the Digdag pods their Application Default Credentials (GCE_METADATA_HOST/GCE_METADATA_IP/GCE_METADATA_ROOT in every Digdag container, allowed by the NetworkPolicy) — a stand-in for GKE\'s Workload Identity. Empty: the platform\'s own metadata server.' },
  { name: 'INGRESS_HOST', default: '', kind: str('digdag.example.com', /^([a-z0-9.-]+)?$/),
    description: 'Host name for the Ingress rule. Empty: any host (the minikube IP works).' },
  { name: 'PORT_FORWARD_PORT', default: '65432', kind: int(1024, 65535, '65432'),
    description: 'Local port that port-forward binds to the UI Service.' },
  { name: 'ROLLOUT_TIMEOUT_SECONDS', default: '300', kind: int(10, 3600, '600'),
    description: 'How long apply waits for each role to roll out before showing events and failing.' },
]);

export interface K8sConfig {
  readonly namespace: string;
  readonly context: string;
  readonly minikubeProfile: string;
  readonly image: string;
  readonly installGcloud: boolean;
  /** GCLOUD_SDK, resolved: an installed SDK's root or an SDK archive; '' = the gcloud on PATH (lib/kube/gcloud-sdk.ts). */
  readonly gcloudSdk: string;
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
  /** The lower bound when autoscaling; undefined: the task-running role's replicas. 0: scale to zero (keda). */
  readonly autoscalingMinReplicas?: number;
  readonly autoscalingPollingSeconds: number;
  readonly autoscalingCooldownSeconds: number;
  readonly autoscalingScaleDownPeriodSeconds: number;
  readonly kedaNamespace: string;
  readonly gcpServiceAccount: string;
  /** A private endpoint for Google's APIs (tests, air-gapped setups); empty strings = Google's own. */
  readonly googleApis: GoogleApisOverride;
}

export interface GoogleApisOverride {
  /** GOOGLE_APIS_ADDRESS: where Google's API host names lead in the pods. */
  readonly address: string;
  /** GOOGLE_METADATA_ADDRESS: ip:port of the metadata server the pods use instead of the platform's. */
  readonly metadataServer: string;
  /** GOOGLE_APIS_CA_FILE, resolved. */
  readonly caFile: string;
  /** Its PEM text (CA certificates only). */
  readonly caPem: string;
}

/** GOOGLE_APIS_ADDRESS / GOOGLE_APIS_CA_FILE, checked: Kubernetes targets only, a file of CA certificates and no key. */
function googleApisOverride(v: Values): GoogleApisOverride {
  const address = v.str('GOOGLE_APIS_ADDRESS');
  const caFile = v.path('GOOGLE_APIS_CA_FILE');
  const metadataServer = v.str('GOOGLE_METADATA_ADDRESS');
  const set = [address && 'GOOGLE_APIS_ADDRESS', caFile && 'GOOGLE_APIS_CA_FILE', metadataServer && 'GOOGLE_METADATA_ADDRESS'].filter(Boolean);
  if (set.length && v.isLocal) {
    throw new UserError(`${set[0]} is for Kubernetes targets (pod hostAliases, a mounted CA, the pods' metadata server); the local target does not use it`,
      'leave GOOGLE_APIS_ADDRESS, GOOGLE_APIS_CA_FILE and GOOGLE_METADATA_ADDRESS empty on the local target (its processes use the machine\'s DNS, the JVM\'s own truststore and the user\'s Application Default Credentials)');
  }
  for (const [name, value] of [['GOOGLE_APIS_ADDRESS', address], ['GOOGLE_METADATA_ADDRESS', metadataServer]] as const) {
    if (value.startsWith('127.')) {
      throw new UserError(`${name}=${value} is a loopback address: in a pod that is the pod itself`, `set ${name} to the address as the pods reach it, e.g. a node address like 10.0.0.53${name === 'GOOGLE_METADATA_ADDRESS' ? ':8080' : ''}`);
    }
  }
  const port = Number(metadataServer.split(':')[1] ?? 0);
  if (metadataServer && port > 65535) {
    throw new UserError(`GOOGLE_METADATA_ADDRESS=${metadataServer}: port ${port} is not a TCP port`, 'give the metadata server as IPv4:port with a port from 1 to 65535, e.g. 10.0.0.53:8080');
  }
  let caPem = '';
  if (caFile) {
    const shown = v.str('GOOGLE_APIS_CA_FILE');
    if (!fs.existsSync(caFile)) throw new UserError(`GOOGLE_APIS_CA_FILE=${shown} does not exist`, 'point GOOGLE_APIS_CA_FILE at a PEM file of CA certificates, or leave it empty');
    caPem = fs.readFileSync(caFile, 'utf8');
    // Said without the content: a key must not end up in a ConfigMap, nor in an error message.
    if (/PRIVATE KEY-----/.test(caPem)) throw new UserError(`GOOGLE_APIS_CA_FILE=${shown} holds a private key`, 'give a file with the CA certificates only (-----BEGIN CERTIFICATE----- blocks): it is rendered into a ConfigMap');
    if (!/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/.test(caPem)) {
      throw new UserError(`GOOGLE_APIS_CA_FILE=${shown} is not a PEM certificate`, 'give the CA certificates as PEM (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)');
    }
  }
  return { address, metadataServer, caFile, caPem };
}

/** `clusterBaseImage`: the own cluster's debootstrapped base (cluster harness section), the default base there. */
export function kubernetesConfig(v: Values, clusterBaseImage: string): K8sConfig {
  const { target } = v;
  const image = v.str('IMAGE');
  const postgresImage = v.str('POSTGRES_IMAGE');
  if (!IMAGE_REF.test(image) || (image.includes('@') && !/@sha256:[0-9a-f]{64}$/.test(image))) {
    throw new UserError(`IMAGE=${image} is not an image reference`, 'set IMAGE=name:tag or IMAGE=registry/path/name@sha256:<64 hex digits>');
  }
  if (target === 'cluster' && (image.includes('@') || postgresImage.includes('@'))) {
    throw new UserError('the cluster target loads locally built images, and a digest-pinned reference (name@sha256:…) cannot name one', 'use a tag on the cluster target, e.g. IMAGE=digdag-ha:0.10.5.1');
  }
  if (target === 'cluster' && v.str('IMAGE_PULL_POLICY') === 'Always') {
    throw new UserError('IMAGE_PULL_POLICY=Always on the cluster target: it has no registry, its images are imported into containerd', 'set IMAGE_PULL_POLICY=IfNotPresent (or leave it empty)');
  }
  const members = v.str('POSTGRES_MEMBERS');
  if (Number(members) > 1 && !v.str('DATABASE_URL') && (postgresImage || PUBLIC_POSTGRES_IMAGE) === PUBLIC_POSTGRES_IMAGE && target !== 'cluster' && target !== 'local') {
    throw new UserError(`POSTGRES_MEMBERS=${members} makes the in-cluster PostgreSQL a Patroni cluster, and ${PUBLIC_POSTGRES_IMAGE.split('@')[0]} has no Patroni`, 'set POSTGRES_IMAGE to an image with Patroni and PostgreSQL 15 (docker/postgres builds one), or POSTGRES_MEMBERS=1');
  }
  if (target === 'gke' && !image.includes('/')) {
    throw new UserError(`IMAGE=${image} has no registry path, and gke pulls from a registry`, 'set IMAGE=asia-northeast1-docker.pkg.dev/<project>/<repo>/digdag-ha:0.10.5.1');
  }
  // Kubernetes-only combinations of values (AGENT_MAX_REPLICAS below the lower bound, scale to zero
  // without KEDA or without an executor loop outside the workers, UI_REPLICAS=0,
  // the edge's TLS and authentication) are the chart's to refuse: chart/digdag-ha, rendered before anything is applied.
  return {
    namespace: v.str('K8S_NAMESPACE'),
    context: v.str('KUBE_CONTEXT') || (target === 'minikube' ? v.str('MINIKUBE_PROFILE') : ''),
    minikubeProfile: v.str('MINIKUBE_PROFILE'),
    image,
    installGcloud: v.str('INSTALL_GCLOUD') === 'true',
    gcloudSdk: v.path('GCLOUD_SDK'),
    baseImage: v.str('BASE_IMAGE') || (target === 'cluster' ? clusterBaseImage : ''),
    postgresImage: postgresImage || (target === 'cluster' ? CLUSTER_POSTGRES_IMAGE : PUBLIC_POSTGRES_IMAGE),
    imagePullPolicy: (v.str('IMAGE_PULL_POLICY') || (target === 'gke' && !image.includes('@') ? 'Always' : 'IfNotPresent')) as K8sConfig['imagePullPolicy'],
    resourceProfile: v.str('RESOURCE_PROFILE') as K8sConfig['resourceProfile'],
    tz: v.str('IMAGE_TZ'),
    lang: v.str('IMAGE_LANG'),
    ingressHost: v.str('INGRESS_HOST'),
    portForwardPort: v.num('PORT_FORWARD_PORT'),
    rolloutTimeoutSeconds: v.num('ROLLOUT_TIMEOUT_SECONDS'),
    autoscaling: v.str('AGENT_AUTOSCALING') as K8sConfig['autoscaling'],
    agentMaxReplicas: v.num('AGENT_MAX_REPLICAS'),
    ...(v.str('AUTOSCALING_MIN_REPLICAS') ? { autoscalingMinReplicas: Number(v.str('AUTOSCALING_MIN_REPLICAS')) } : {}),
    autoscalingPollingSeconds: v.num('AUTOSCALING_POLLING_SECONDS'),
    autoscalingCooldownSeconds: v.num('AUTOSCALING_COOLDOWN_SECONDS'),
    autoscalingScaleDownPeriodSeconds: v.num('AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS'),
    kedaNamespace: v.str('KEDA_NAMESPACE'),
    gcpServiceAccount: v.str('GCP_SERVICE_ACCOUNT'),
    googleApis: googleApisOverride(v),
  };
}
