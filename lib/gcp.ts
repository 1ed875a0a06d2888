// One Google identity for everything a Digdag process runs: Digdag's GCP operators (bq>, bq_ddl>,
// gcs_wait>, …) and the gcloud/bq CLIs in sh> tasks. Either a service-account key
// (GCP_SA_KEY_FILE) — set as the project secret gcp.credential through the REST API, never typed
// by a user, and activated in a gcloud configuration the deployment owns — or Application Default
// Credentials (the metadata server: Workload Identity on GKE), for which that gcloud
// configuration holds no account so gcloud/bq fall back to the same metadata server. On the local
// target, ADC may instead be a file (GCP_ADC_FILE, or the one ADC itself would find: the user's
// own login from `gcloud auth application-default login`, an authorized_user file): the Digdag
// processes get its path as GOOGLE_APPLICATION_CREDENTIALS and the gcloud configuration as
// auth/credential_file_override, so bq>, the GCS log server and sh> bq|gcloud are that one user.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { request } from './digdag-api.ts';
import { getJson, type Endpoint } from './digdag.ts';
import { UserError } from './errors.ts';
import type { Ctx } from './pipeline.ts';
import { outcome } from './runner.ts';
import { registerSecret } from './secrets.ts';
import { ensureDir } from './state.ts';

/** Digdag's secret names its GCP operators read (GcpCredentialProvider). */
export const GCP_CREDENTIAL_SECRET = 'gcp.credential';
export const GCP_PROJECT_SECRET = 'gcp.project';

/** Whether the deployment manages a Google identity at all (otherwise nothing GCP is touched). */
export const usesGcp = (config: Config) => !!(config.gcp.project || config.gcp.saKeyFile);

/** The gcloud configuration directory the Digdag processes' sh> tasks use (CLOUDSDK_CONFIG). */
export const gcloudConfigDir = (config: Config) => path.join(config.stateDir, 'gcloud');

export interface ServiceAccountKey {
  /** The key file's text: a secret (registered for masking). */
  json: string;
  email: string;
  project: string;
  sha256: string;
}

/** Reads GCP_SA_KEY_FILE; a file that is not a service-account key fails with the reason. */
export function readServiceAccountKey(config: Config): ServiceAccountKey | undefined {
  const file = config.gcp.saKeyFile;
  if (!file) return undefined;
  const json = fs.readFileSync(file, 'utf8');
  registerSecret(json);
  let key: { type?: string; client_email?: string; project_id?: string; private_key?: string };
  try {
    key = JSON.parse(json);
  } catch {
    throw new UserError(`GCP_SA_KEY_FILE=${file} is not JSON`, 'download the key again: gcloud iam service-accounts keys create key.json --iam-account=<sa-email>');
  }
  if (key.type !== 'service_account' || !key.client_email || !key.private_key) {
    throw new UserError(`GCP_SA_KEY_FILE=${file} is not a service-account key (type "${key.type ?? 'missing'}")`,
      'use a JSON key of a service account; for your own login use Application Default Credentials (leave GCP_SA_KEY_FILE empty)');
  }
  registerSecret(key.private_key);
  return { json, email: key.client_email, project: key.project_id ?? '', sha256: createHash('sha256').update(json).digest('hex') };
}

/** The ADC file of the local target (GCP_ADC_FILE): what it holds, without its secrets. */
export interface AdcFile {
  file: string;
  type: 'authorized_user' | 'service_account';
  /** The service account's email; a user login names no account. */
  email?: string;
  sha256: string;
}

/**
 * Reads the ADC file the config resolved (lib/config/logs.ts), registering its secrets for
 * masking; a file that is missing, unreadable, not JSON or not a user login / service-account
 * key fails naming the file, where it came from and the fix.
 */
export function readAdcFile(config: Config): AdcFile | undefined {
  const { adcFile: file, adcFileFrom: from } = config.gcp;
  if (!file || config.gcp.saKeyFile) return undefined;
  const named = /^[A-Z_]+$/.test(from) ? `${from}=${file}` : `${file} (${from})`;
  const fix = 'run `gcloud auth application-default login` (it writes ~/.config/gcloud/application_default_credentials.json) and point GCP_ADC_FILE at that file, or use a service-account key (GCP_SA_KEY_FILE)';
  let json: string;
  try {
    json = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UserError(`the Application Default Credentials file ${named} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(err)})`}`, fix);
  }
  registerSecret(json);
  let adc: { type?: string; client_id?: string; client_secret?: string; refresh_token?: string; client_email?: string; private_key?: string };
  try {
    adc = JSON.parse(json);
  } catch {
    throw new UserError(`the Application Default Credentials file ${named} is not JSON`, fix);
  }
  for (const s of [adc.client_secret, adc.refresh_token, adc.private_key]) registerSecret(s);
  const sha256 = createHash('sha256').update(json).digest('hex');
  if (adc.type === 'authorized_user' && adc.client_id && adc.client_secret && adc.refresh_token) return { file, type: 'authorized_user', sha256 };
  if (adc.type === 'service_account' && adc.client_email && adc.private_key) return { file, type: 'service_account', email: adc.client_email, sha256 };
  throw new UserError(`the Application Default Credentials file ${named} is neither a user login (authorized_user with client_id, client_secret, refresh_token) nor a service-account key (type "${adc.type ?? 'missing'}")`, fix);
}

const adcIdentity = (adc: AdcFile) => (adc.type === 'authorized_user' ? `the user login in ${adc.file}` : `the key of ${adc.email} in ${adc.file}`);

/**
 * The environment of every Digdag process for GCP (sh> tasks inherit it). No credential is in
 * it, only paths: the key reaches the operators as a project secret and gcloud/bq through
 * CLOUDSDK_CONFIG.
 */
export function gcpProcessEnv(config: Config): Record<string, string> {
  if (!usesGcp(config)) return {};
  const project = config.gcp.project;
  return {
    CLOUDSDK_CONFIG: gcloudConfigDir(config),
    // The key's path (not its content) for the clients that read only ADC: the GCS log server,
    // and the operators of a project pushed without push-workflow (no gcp.credential secret).
    ...(config.gcp.saKeyFile ? { GOOGLE_APPLICATION_CREDENTIALS: config.gcp.saKeyFile } : {}),
    // The local target's ADC file (GCP_ADC_FILE): by name, so Digdag reads the same file gcloud does.
    ...(!config.gcp.saKeyFile && config.gcp.adcFile ? { GOOGLE_APPLICATION_CREDENTIALS: config.gcp.adcFile } : {}),
    // The Java clients' project lookup on the ADC path needs it (else a NullPointerException).
    ...(project ? { GOOGLE_CLOUD_PROJECT: project, CLOUDSDK_CORE_PROJECT: project } : {}),
  };
}

/**
 * Makes the deployment's gcloud configuration match the identity: the key activated (the file's
 * path on the command line, never its content), or no account at all for ADC. Idempotent.
 */
export async function ensureGcloudConfig(ctx: Ctx): Promise<string> {
  const { config, runner } = ctx;
  if (!usesGcp(config)) return 'gcloud: no GCP identity configured (GCP_PROJECT, GCP_SA_KEY_FILE empty)';
  const dir = gcloudConfigDir(config);
  const key = readServiceAccountKey(config);
  const adc = key ? undefined : readAdcFile(config);
  const marker = path.join(dir, 'digdag-ha-identity');
  const want = key ? `key ${key.email} ${key.sha256}` : adc ? `adc-file ${adc.file} ${adc.sha256}` : 'adc';
  if (fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === want) {
    return `gcloud configuration ${dir} already ${key ? `has ${key.email} activated` : adc ? `uses ${adcIdentity(adc)}` : 'uses Application Default Credentials'}`;
  }
  const env = { CLOUDSDK_CONFIG: dir, CLOUDSDK_CORE_DISABLE_PROMPTS: '1' };
  await runner.change(undefined, () => {
    fs.rmSync(dir, { recursive: true, force: true });
    ensureDir(dir);
  });
  if (key) {
    // gcloud exchanges the key for a token here: a revoked or wrong key fails now, not in a task.
    const res = await runner.run({ argv: ['gcloud', 'auth', 'activate-service-account', key.email, `--key-file=${config.gcp.saKeyFile}`], env, mutates: true, nothrow: true });
    if (res.code !== 0) {
      throw new UserError(`gcloud could not activate the key of ${key.email} from GCP_SA_KEY_FILE=${config.gcp.saKeyFile}`,
        'check that the key is a current key of that service account (keys can be deleted or disabled) and that oauth2.googleapis.com is reachable',
        // gcloud's own cause (e.g. "invalid_grant: Invalid JWT Signature"), not its login advice.
        res.stderr.split('\n').filter((l) => /^ERROR:/.test(l)).join('\n') || res.stderr.trim().split('\n').slice(-6).join('\n'));
    }
  }
  if (adc) {
    // bq asks gcloud for the login's refresh token (print-refresh-token) and gcloud's file log
    // records command output (found by the test): no file log in this configuration.
    await runner.run({ argv: ['gcloud', 'config', 'set', 'core/disable_file_logging', 'true'], env, mutates: true });
    // gcloud and bq read the file itself (the path, never its content, on the command line).
    await runner.run({ argv: ['gcloud', 'config', 'set', 'auth/credential_file_override', adc.file], env, mutates: true });
    // Else, where a metadata server answers (a GCE VM; the tests' one), gcloud takes its account as
    // core/account and bq asks the metadata server for a token: another identity than the file's.
    await runner.run({ argv: ['gcloud', 'config', 'set', 'core/check_gce_metadata', 'false'], env, mutates: true });
    // One refresh now, so a revoked login or a wrong file fails apply, not a task; prints no token.
    const res = await runner.run({ argv: ['gcloud', 'config', 'config-helper', '--force-auth-refresh', '--format=value(credential.token_expiry)'], env, mutates: true, nothrow: true });
    if (res.code !== 0) {
      throw new UserError(`gcloud could not get a token with ${adcIdentity(adc)} (${config.gcp.adcFileFrom})`,
        adc.type === 'authorized_user'
          ? 'log in again: gcloud auth application-default login (a login expires or is revoked), and check that oauth2.googleapis.com is reachable; or use GCP_SA_KEY_FILE'
          : 'check that the key is a current key of that service account and that oauth2.googleapis.com is reachable',
        res.stderr.split('\n').filter((l) => /^ERROR:/.test(l)).join('\n') || res.stderr.trim().split('\n').slice(-6).join('\n'));
    }
  }
  // The project comes from CLOUDSDK_CORE_PROJECT in the processes' environment (gcpProcessEnv):
  // `gcloud config set project` would ask Cloud Resource Manager, a permission the SA may lack.
  await runner.change(undefined, () => fs.writeFileSync(marker, want, { mode: 0o600 }));
  return `${outcome(runner, 'gcloud configuration', 'would make the gcloud configuration')} ${dir}: ${key ? `${key.email} activated` : adc ? `${adcIdentity(adc)} (${config.gcp.adcFileFrom})` : 'no account (Application Default Credentials)'}`;
}

async function send(endpoint: Endpoint, method: string, p: string, body?: unknown): Promise<void> {
  const res = await request(endpoint, method, p, body);
  // The body is never echoed: a PUT carries the key.
  if (!res.ok && !(method === 'DELETE' && res.status === 404)) throw new UserError(`${method} ${p} answered HTTP ${res.status}`, 'check that Digdag runs with digdag.secret-encryption-key (create-secret) and the credentials are right');
}

export async function projectSecretNames(endpoint: Endpoint, projectId: string): Promise<string[]> {
  return (await getJson<{ secrets: { key: string }[] }>(endpoint, `/api/projects/${projectId}/secrets`)).secrets.map((s) => s.key);
}

/**
 * The project's GCP secrets as the identity says: with a key, gcp.credential (the key, in the
 * request body) and gcp.project; without one, gcp.credential removed so ADC applies.
 */
export async function syncProjectGcpSecrets(ctx: Ctx, endpoint: Endpoint, projectId: string, projectName: string): Promise<string> {
  const key = readServiceAccountKey(ctx.config);
  const project = ctx.config.gcp.project || key?.project || '';
  const base = `/api/projects/${projectId}/secrets`;
  if (key) {
    await ctx.runner.change(`would set the secret ${GCP_CREDENTIAL_SECRET} of ${projectName} (the key of ${key.email})`, () => send(endpoint, 'PUT', `${base}/${GCP_CREDENTIAL_SECRET}`, { value: key.json }));
  } else {
    await ctx.runner.change(`would remove the secret ${GCP_CREDENTIAL_SECRET} of ${projectName}`, () => send(endpoint, 'DELETE', `${base}/${GCP_CREDENTIAL_SECRET}`));
  }
  if (project) await ctx.runner.change(undefined, () => send(endpoint, 'PUT', `${base}/${GCP_PROJECT_SECRET}`, { value: project }));
  return key
    ? `${projectName}: ${GCP_CREDENTIAL_SECRET} set to the key of ${key.email}${project ? `, ${GCP_PROJECT_SECRET}=${project}` : ''}`
    : `${projectName}: Application Default Credentials (no ${GCP_CREDENTIAL_SECRET})${project ? `, ${GCP_PROJECT_SECRET}=${project}` : ''}`;
}
