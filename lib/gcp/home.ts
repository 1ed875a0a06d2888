// What the GCP home of one configuration is called: every resource name, the roles and where
// each is granted, derived once from Config so up, down and the printed .env agree.
import path from 'node:path';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';

/** The APIs the home needs; enabled before anything else is created. */
export const REQUIRED_SERVICES = [
  'artifactregistry.googleapis.com',
  'bigquery.googleapis.com',
  'cloudresourcemanager.googleapis.com',
  'compute.googleapis.com',
  'container.googleapis.com',
  'iam.googleapis.com',
  'iamcredentials.googleapis.com',
  'sqladmin.googleapis.com',
  'storage.googleapis.com',
] as const;

/** Roles on the project: run BigQuery jobs, edit the workflows' tables, connect to Cloud SQL. */
export const PROJECT_ROLES = ['roles/bigquery.jobUser', 'roles/bigquery.dataEditor', 'roles/cloudsql.client'] as const;
/** On the log bucket only. */
export const BUCKET_ROLE = 'roles/storage.objectAdmin';
export const WORKLOAD_IDENTITY_ROLE = 'roles/iam.workloadIdentityUser';
/** The chart's Kubernetes service account of every Digdag pod. */
export const KSA_NAME = 'digdag';

export interface GcpHome {
  project: string;
  region: string;
  mode: 'autopilot' | 'standard';
  cluster: string;
  machineType: string;
  kubeContext: string;
  workloadPool: string;
  repository: string;
  registryHost: string;
  image: string;
  sqlInstance: string;
  sqlTier: string;
  backupStart: string;
  backupCount: number;
  database: string;
  dbUser: string;
  bucket: string;
  logRetentionDays: number;
  saName: string;
  saEmail: string;
  saMember: string;
  /** serviceAccount:PROJECT.svc.id.goog[NAMESPACE/digdag] */
  wiMember: string;
  /** The Kubernetes target's state dir: the generated database password lives in its secret store. */
  stateDir: string;
}

export function gcpHome(config: Config): GcpHome {
  const project = config.gcp.project;
  if (!project) {
    throw new UserError('GCP_PROJECT is not set: there is no project to provision', 'set GCP_PROJECT=<your project id> in .env, or run with --set GCP_PROJECT=<your project id>');
  }
  const h = config.gcpHome;
  const registryHost = `${h.region}-docker.pkg.dev`;
  // A bare name:tag (the default digdag-ha:0.10.5.1) goes into the home's repository.
  const image = config.k8s.image.includes('/') ? config.k8s.image : `${registryHost}/${project}/${h.repository}/${config.k8s.image}`;
  const saEmail = `${h.saName}@${project}.iam.gserviceaccount.com`;
  return {
    project,
    region: h.region,
    mode: h.gkeMode,
    cluster: h.cluster,
    machineType: h.machineType,
    kubeContext: `gke_${project}_${h.region}_${h.cluster}`,
    workloadPool: `${project}.svc.id.goog`,
    repository: h.repository,
    registryHost,
    image,
    sqlInstance: h.sqlInstance,
    sqlTier: h.sqlTier,
    backupStart: h.backupStart,
    backupCount: h.backupCount,
    database: config.db.name,
    dbUser: config.db.user,
    bucket: config.logs.gcsBucket || `${project}-digdag-logs`,
    logRetentionDays: h.logRetentionDays,
    saName: h.saName,
    saEmail,
    saMember: `serviceAccount:${saEmail}`,
    wiMember: `serviceAccount:${project}.svc.id.goog[${config.k8s.namespace}/${KSA_NAME}]`,
    stateDir: path.join(path.dirname(config.stateDir), 'gke'),
  };
}
