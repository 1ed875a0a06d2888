// Config section Logs and GCP: where task logs go, and the Google project and credentials tasks use.
import fs from 'node:fs';
import { UserError } from '../errors.ts';
import { group, oneOf, str, type Values, type VarSpec } from './spec.ts';

export const LOGS_VARIABLES: readonly VarSpec[] = group('Logs and GCP', [
  { name: 'LOG_SERVER', default: '', kind: oneOf(['', 'local', 'gcs', 'none']),
    description: 'Where task logs are stored. Empty: local (a shared directory) on the local target, gcs when GCS_LOG_BUCKET is set on Kubernetes, else none.' },
  { name: 'GCS_LOG_BUCKET', default: '', kind: str('my-digdag-logs', /^([a-z0-9][a-z0-9._-]{1,220})?$/),
    description: 'log-server.gcs.bucket for task logs.' },
  { name: 'GCS_LOG_PATH', default: 'digdag-logs', kind: str('digdag-logs'),
    description: 'log-server.gcs.path prefix inside the bucket.' },
  { name: 'GCP_PROJECT', default: '', kind: str('my-project', /^([a-z][a-z0-9-]{4,28}[a-z0-9])?$/),
    description: 'GCP project for bq>/gcs_wait> and the gcloud CLI (GOOGLE_CLOUD_PROJECT of every Digdag process; the gcp.project secret of pushed projects). Set (or GCP_SA_KEY_FILE set): sh> tasks use a gcloud configuration the deployment owns, with the same identity as bq>.' },
  { name: 'GCP_SA_KEY_FILE', default: '', kind: str('./gcp-service-account-key.json'),
    description: 'Service-account JSON key: activated for gcloud/bq in sh> tasks and set by push-workflow as the gcp.credential secret of every pushed project (mounted read-only into the pods). Never put it in git. Empty: Application Default Credentials (Workload Identity on GKE, the metadata server), for bq> and sh> alike.' },
]);

export interface LogsConfig {
  readonly server: 'local' | 'gcs' | 'none';
  readonly gcsBucket: string;
  readonly gcsPath: string;
}

export interface GcpConfig {
  readonly project: string;
  readonly saKeyFile: string;
}

export function logsConfig(v: Values): { logs: LogsConfig; gcp: GcpConfig } {
  const bucket = v.str('GCS_LOG_BUCKET');
  const server = (v.str('LOG_SERVER') || (v.isLocal ? 'local' : bucket ? 'gcs' : 'none')) as LogsConfig['server'];
  if (server === 'gcs' && !bucket) {
    throw new UserError('LOG_SERVER=gcs needs a bucket', 'set GCS_LOG_BUCKET=my-digdag-logs (or LOG_SERVER=none)');
  }
  if (server === 'local' && !v.isLocal) {
    throw new UserError('LOG_SERVER=local only works on the local target (pods share no directory)', 'use LOG_SERVER=gcs with GCS_LOG_BUCKET, or LOG_SERVER=none');
  }
  const keyFile = v.path('GCP_SA_KEY_FILE');
  if (keyFile && !fs.existsSync(keyFile)) {
    throw new UserError(`GCP_SA_KEY_FILE=${v.str('GCP_SA_KEY_FILE')} does not exist`, 'point GCP_SA_KEY_FILE at the service-account JSON key, or leave it empty to use Application Default Credentials');
  }
  return {
    logs: { server, gcsBucket: bucket, gcsPath: v.str('GCS_LOG_PATH') },
    gcp: { project: v.str('GCP_PROJECT'), saKeyFile: keyFile },
  };
}
