// Config section GCP home: the names and sizes tasks/gcp.ts provisions a Google Cloud project with
// (registry, GKE cluster, Cloud SQL, log bucket, service account). The project is GCP_PROJECT
// (section Logs and GCP); the log bucket is GCS_LOG_BUCKET, or derived from the project.
import { UserError } from '../errors.ts';
import { group, int, oneOf, str, type Values, type VarSpec } from './spec.ts';

/**
 * Regions that offer GKE Autopilot, Cloud SQL for PostgreSQL and Artifact Registry (Google's
 * public region list, 2026-12). A region outside it is refused before anything is created; a new
 * region is one line here.
 */
export const GCP_REGIONS: readonly string[] = [
  'africa-south1', 'asia-east1', 'asia-east2', 'asia-northeast1', 'asia-northeast2', 'asia-northeast3',
  'asia-south1', 'asia-south2', 'asia-southeast1', 'asia-southeast2', 'australia-southeast1', 'australia-southeast2',
  'europe-central2', 'europe-north1', 'europe-north2', 'europe-southwest1', 'europe-west1', 'europe-west2', 'europe-west3',
  'europe-west4', 'europe-west6', 'europe-west8', 'europe-west9', 'europe-west10', 'europe-west12',
  'me-central1', 'me-central2', 'me-west1', 'northamerica-northeast1', 'northamerica-northeast2', 'northamerica-south1',
  'southamerica-east1', 'southamerica-west1', 'us-central1', 'us-east1', 'us-east4', 'us-east5', 'us-south1',
  'us-west1', 'us-west2', 'us-west3', 'us-west4',
];

const NAME = /^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$/;

export const GCP_HOME_VARIABLES: readonly VarSpec[] = group('GCP home (tasks/gcp.ts)', [
  { name: 'GCP_REGION', default: 'asia-northeast1', kind: str('asia-northeast1', /^[a-z]+-[a-z]+[0-9]+$/),
    description: 'Region of the registry, the GKE cluster, Cloud SQL and the log bucket.' },
  { name: 'GKE_MODE', default: 'autopilot', kind: oneOf(['autopilot', 'standard']),
    description: 'GKE cluster mode: autopilot (Google runs the nodes) or standard (one regional node pool of GKE_MACHINE_TYPE).' },
  { name: 'GKE_CLUSTER', default: 'digdag', kind: str('digdag', NAME),
    description: 'Name of the GKE cluster (Workload Identity on).' },
  { name: 'GKE_MACHINE_TYPE', default: 'e2-standard-4', kind: str('e2-standard-4', /^[a-z0-9]+-[a-z0-9-]+$/),
    description: 'GKE_MODE=standard: machine type of the node pool (one node per zone).' },
  { name: 'ARTIFACT_REPOSITORY', default: 'digdag', kind: str('digdag', NAME),
    description: 'Artifact Registry Docker repository the image is pushed to (<region>-docker.pkg.dev/<project>/<repository>).' },
  { name: 'CLOUDSQL_INSTANCE_NAME', default: 'digdag-pg', kind: str('digdag-pg', NAME),
    description: 'Cloud SQL for PostgreSQL 15 instance (regional HA, automatic backups, point-in-time recovery, deletion protection).' },
  { name: 'CLOUDSQL_TIER', default: 'db-custom-2-7680', kind: str('db-custom-2-7680', /^db-[a-z0-9-]+$/),
    description: 'Machine tier of the Cloud SQL instance.' },
  { name: 'CLOUDSQL_BACKUP_START', default: '18:00', kind: str('18:00', /^([01][0-9]|2[0-3]):00$/),
    description: 'Start of the daily automatic backup window, UTC (18:00 UTC = 03:00 JST).' },
  { name: 'CLOUDSQL_BACKUP_COUNT', default: '7', kind: int(1, 365, '7'),
    description: 'Automatic backups kept; the transaction log for point-in-time recovery is kept as many days (at most 7).' },
  { name: 'GCP_SA_NAME', default: 'digdag', kind: str('digdag', /^[a-z][-a-z0-9]{4,28}[a-z0-9]$/),
    description: 'Account id of the Google service account the digdag Kubernetes service account acts as (Workload Identity).' },
  { name: 'GCS_LOG_RETENTION_DAYS', default: '90', kind: int(1, 3650, '90'),
    description: 'Lifecycle rule of the log bucket: task logs older than this many days are deleted.' },
]);

export interface GcpHomeSection {
  readonly region: string;
  readonly gkeMode: 'autopilot' | 'standard';
  readonly cluster: string;
  readonly machineType: string;
  readonly repository: string;
  readonly sqlInstance: string;
  readonly sqlTier: string;
  readonly backupStart: string;
  readonly backupCount: number;
  readonly saName: string;
  readonly logRetentionDays: number;
}

export function gcpHomeSection(v: Values): GcpHomeSection {
  const region = v.str('GCP_REGION');
  if (!GCP_REGIONS.includes(region)) {
    throw new UserError(`GCP_REGION=${region} is not a region with GKE, Cloud SQL and Artifact Registry`, `set GCP_REGION to one of them, e.g. GCP_REGION=asia-northeast1 (the list: ${GCP_REGIONS.join(', ')})`);
  }
  return {
    region,
    gkeMode: v.str('GKE_MODE') as GcpHomeSection['gkeMode'],
    cluster: v.str('GKE_CLUSTER'),
    machineType: v.str('GKE_MACHINE_TYPE'),
    repository: v.str('ARTIFACT_REPOSITORY'),
    sqlInstance: v.str('CLOUDSQL_INSTANCE_NAME'),
    sqlTier: v.str('CLOUDSQL_TIER'),
    backupStart: v.str('CLOUDSQL_BACKUP_START'),
    backupCount: v.num('CLOUDSQL_BACKUP_COUNT'),
    saName: v.str('GCP_SA_NAME'),
    logRetentionDays: v.num('GCS_LOG_RETENTION_DAYS'),
  };
}
