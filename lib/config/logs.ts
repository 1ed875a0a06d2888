// Config section Logs and GCP: where task logs go, and the Google project and credentials tasks use.
import fs from 'node:fs';
import path from 'node:path';
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
    description: 'Service-account JSON key: activated for gcloud/bq in sh> tasks and set by push-workflow as the gcp.credential secret of every pushed project (mounted read-only into the pods). Never put it in git. Empty: Application Default Credentials (Workload Identity on GKE, the metadata server; on the local target GCP_ADC_FILE), for bq> and sh> alike.' },
  { name: 'GCP_ADC_FILE', default: '', kind: str('~/.config/gcloud/application_default_credentials.json'),
    description: 'Local target, without GCP_SA_KEY_FILE: the Application Default Credentials file that bq>, the GCS log server and sh> bq|gcloud all use — your own login (`gcloud auth application-default login` writes an authorized_user file) or a service-account key. Only its path is passed on (GOOGLE_APPLICATION_CREDENTIALS of the Digdag processes, auth/credential_file_override of the deployment\'s gcloud configuration), never its content. Empty: the file ADC itself would find — GOOGLE_APPLICATION_CREDENTIALS of the user running the task, else application_default_credentials.json in $CLOUDSDK_CONFIG or ~/.config/gcloud — or, with none, the metadata server. Not for Kubernetes (Workload Identity or GCP_SA_KEY_FILE there).' },
]);

export interface LogsConfig {
  readonly server: 'local' | 'gcs' | 'none';
  readonly gcsBucket: string;
  readonly gcsPath: string;
}

export interface GcpConfig {
  readonly project: string;
  readonly saKeyFile: string;
  /**
   * Local target without a key: the ADC file (absolute path) bq>, the GCS log server and sh>
   * bq|gcloud share; '' when none (the metadata server). Content checked by lib/gcp.ts.
   */
  readonly adcFile: string;
  /** Where adcFile came from, for messages: GCP_ADC_FILE, GOOGLE_APPLICATION_CREDENTIALS or gcloud's well-known file. */
  readonly adcFileFrom: string;
}

/** The ADC file the user means (see GCP_ADC_FILE), in ADC's own order. */
function adcFile(v: Values, keyFile: string): { adcFile: string; adcFileFrom: string } {
  const none = { adcFile: '', adcFileFrom: '' };
  const named = v.str('GCP_ADC_FILE');
  if (named && !v.isLocal) {
    throw new UserError(`GCP_ADC_FILE is for the local target (target ${v.target}: the pods cannot read your file)`, 'on Kubernetes use Workload Identity (GCP_SERVICE_ACCOUNT) or GCP_SA_KEY_FILE; leave GCP_ADC_FILE empty');
  }
  if (named && !v.str('GCP_PROJECT')) {
    throw new UserError('GCP_ADC_FILE needs GCP_PROJECT (a login names no project; Digdag\'s bq> needs one)', 'set GCP_PROJECT=<your project>');
  }
  if (!v.isLocal || keyFile || !v.str('GCP_PROJECT')) return none;
  const home = v.env.HOME ?? '';
  if (named) {
    const file = named.startsWith('~/') ? path.join(home, named.slice(2)) : v.path('GCP_ADC_FILE');
    if (!fs.existsSync(file)) {
      throw new UserError(`GCP_ADC_FILE=${named} does not exist`, 'run `gcloud auth application-default login` (it writes ~/.config/gcloud/application_default_credentials.json) and point GCP_ADC_FILE at that file, or leave GCP_ADC_FILE empty');
    }
    return { adcFile: file, adcFileFrom: 'GCP_ADC_FILE' };
  }
  const fromEnv = v.env.GOOGLE_APPLICATION_CREDENTIALS;
  if (fromEnv) return { adcFile: path.resolve(fromEnv), adcFileFrom: 'GOOGLE_APPLICATION_CREDENTIALS' };
  const configDir = v.env.CLOUDSDK_CONFIG || (home ? path.join(home, '.config', 'gcloud') : '');
  const wellKnown = configDir ? path.join(configDir, 'application_default_credentials.json') : '';
  return wellKnown && fs.existsSync(wellKnown) ? { adcFile: wellKnown, adcFileFrom: 'gcloud\'s well-known ADC file' } : none;
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
    gcp: { project: v.str('GCP_PROJECT'), saKeyFile: keyFile, ...adcFile(v, keyFile) },
  };
}
