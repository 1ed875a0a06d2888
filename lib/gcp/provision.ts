// The GCP home, up and down: APIs, Artifact Registry, GKE with Workload Identity, Cloud SQL for
// PostgreSQL 15 (regional HA, backups, point-in-time recovery), the log bucket, the service
// account and its roles. Every resource is described before it is created, so a second `up`
// changes nothing; `down` goes in reverse and keeps data (database, bucket, images) unless purged.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import type { Config } from '../config.ts';
import { ensureSecrets, readSecrets, secretsFile } from '../credentials.ts';
import { UserError } from '../errors.ts';
import { outcome, type Runner } from '../runner.ts';
import { writePrivateFile } from '../state.ts';
import { Gcloud } from './gcloud.ts';
import { BUCKET_ROLE, gcpHome, PROJECT_ROLES, REQUIRED_SERVICES, WORKLOAD_IDENTITY_ROLE, type GcpHome } from './home.ts';

export interface GcpRun {
  runner: Runner;
  config: Config;
  /** Extra environment for gcloud (tests: isolated CLOUDSDK_CONFIG, endpoint overrides, KUBECONFIG, DOCKER_CONFIG). */
  env?: Readonly<Record<string, string>>;
}

export interface GcpReport {
  /** One line per resource: created / updated / exists / deleted / kept. */
  lines: string[];
  /** What this run created or changed (empty: nothing to do). */
  changed: string[];
  /** The .env values --target gke uses (up only). */
  envValues?: Record<string, string>;
  envFile?: string;
}

type Policy = { bindings?: { role: string; members?: string[]; condition?: unknown }[] } | undefined;

const hasBinding = (p: Policy, role: string, member: string) => !!p?.bindings?.some((b) => b.role === role && !b.condition && b.members?.includes(member));

interface Provisioning {
  g: Gcloud;
  home: GcpHome;
  run: GcpRun;
  report: GcpReport;
}

/** Reads that refuse bad input before anything is changed: the project, the right to read and change its IAM policy, the enabled APIs. */
async function preflight(run: GcpRun): Promise<Provisioning & { policy: Policy; enabled: Set<string> }> {
  const home = gcpHome(run.config);
  const g = new Gcloud(run.runner, { project: home.project, env: run.env });
  // The three reads run at once; their refusals are reported in this order.
  const [project, policy, services] = await Promise.allSettled([
    g.read(['projects', 'describe', home.project], `project ${home.project}`),
    g.read<Policy>(['projects', 'get-iam-policy', home.project], `the IAM policy of project ${home.project} (resourcemanager.projects.getIamPolicy, needed to grant the service account its roles)`),
    g.read<{ config?: { name?: string }; name?: string }[]>(['services', 'list', '--enabled'], 'the enabled APIs (serviceusage.services.list)'),
  ]);
  if (project.status === 'rejected') {
    const e = project.reason;
    if (!(e instanceof UserError)) throw e;
    throw new UserError(`project ${home.project} does not exist or the account gcloud uses cannot see it`, `check GCP_PROJECT (the project id, not its name or number) and the account (gcloud auth list; gcloud auth login)`, e.detail);
  }
  if (!project.value) throw new UserError(`project ${home.project} does not exist`, 'set GCP_PROJECT to an existing project id (gcloud projects list)');
  if (policy.status === 'rejected') throw policy.reason;
  if (services.status === 'rejected') throw services.reason;
  const enabled = new Set((services.value ?? []).map((s) => s.config?.name ?? String(s.name).split('/').pop()!));
  return { g, home, run, policy: policy.value, enabled, report: { lines: [], changed: [] } };
}

function made(c: Provisioning, what: string, verb = 'created'): void {
  c.report.changed.push(what);
  c.report.lines.push(outcome(c.run.runner, `${verb}: ${what}`, `would be ${verb}: ${what}`));
}
const exists = (c: Provisioning, what: string) => c.report.lines.push(`exists: ${what}`);

/** gcloud processes at once: its start-up (~1 s of Python) dominates, and the machine may be small. */
const READS_AT_ONCE = 4;

/** Runs the reads at most READS_AT_ONCE at a time; the first refusal (in the given order) is thrown. */
async function readAll<T extends readonly (() => Promise<unknown>)[]>(reads: T): Promise<{ [K in keyof T]: Awaited<ReturnType<T[K]>> }> {
  const results: PromiseSettledResult<unknown>[] = new Array(reads.length);
  let next = 0;
  const worker = async () => {
    while (next < reads.length) {
      const i = next++;
      results[i] = await reads[i]!().then((value) => ({ status: 'fulfilled' as const, value }), (reason) => ({ status: 'rejected' as const, reason }));
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_AT_ONCE, reads.length) }, worker));
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as never;
}

/** What exists, all described before anything is created (a second up is this and nothing else). */
async function survey(c: Provisioning) {
  const { g, home } = c;
  const url = `gs://${home.bucket}`;
  const [repo, cluster, instance, database, users, bucket, bucketPolicy, sa, saPolicy] = await readAll([
    () => g.read<any>(['artifacts', 'repositories', 'describe', home.repository, `--location=${home.region}`], `repository ${home.repository}`),
    () => g.read<any>(['container', 'clusters', 'describe', home.cluster, `--region=${home.region}`], `GKE cluster ${home.cluster}`),
    () => g.read<any>(['sql', 'instances', 'describe', home.sqlInstance], `Cloud SQL instance ${home.sqlInstance}`),
    () => g.read<any>(['sql', 'databases', 'describe', home.database, `--instance=${home.sqlInstance}`], `database ${home.database}`),
    () => g.read<{ name: string }[]>(['sql', 'users', 'list', `--instance=${home.sqlInstance}`], `the users of ${home.sqlInstance}`),
    () => g.read<any>(['storage', 'buckets', 'describe', url], `bucket ${url} (bucket names are global: if another project owns it, choose another with GCS_LOG_BUCKET)`),
    () => g.read<Policy>(['storage', 'buckets', 'get-iam-policy', url], `the IAM policy of ${url}`),
    () => g.read<any>(['iam', 'service-accounts', 'describe', home.saEmail], `service account ${home.saEmail}`),
    () => g.read<Policy>(['iam', 'service-accounts', 'get-iam-policy', home.saEmail], `the IAM policy of ${home.saEmail}`),
  ] as const);
  return { repo, cluster, instance, database, users: users ?? [], bucket, bucketPolicy, sa, saPolicy };
}
type Found = Awaited<ReturnType<typeof survey>>;

export async function gcpUp(run: GcpRun): Promise<GcpReport> {
  const c = await preflight(run);
  const { g, home } = c;
  const found = await survey(c);

  // APIs first: every later describe needs them.
  const missing = REQUIRED_SERVICES.filter((s) => !c.enabled.has(s));
  if (missing.length) {
    await g.change(['services', 'enable', ...missing], `enable ${missing.join(', ')}`);
    made(c, `APIs ${missing.join(', ')}`, 'enabled');
  } else exists(c, `APIs ${REQUIRED_SERVICES.join(', ')} (enabled)`);

  await registry(c, found);
  await cluster(c, found);
  const instance = await cloudSql(c, found);
  await logBucket(c, found);
  await serviceAccount(c, found);

  const envValues: Record<string, string> = {
    DIGDAG_HA_TARGET: 'gke',
    GCP_PROJECT: home.project,
    GCP_REGION: home.region,
    IMAGE: home.image,
    KUBE_CONTEXT: home.kubeContext,
    GCP_SERVICE_ACCOUNT: home.saEmail,
    GCS_LOG_BUCKET: home.bucket,
    LOG_SERVER: 'gcs',
    // The Auth Proxy sidecar of every pod serves the instance on 127.0.0.1 (chart: cloudSqlProxy).
    CLOUDSQL_INSTANCE: instance?.connectionName ?? `${home.project}:${home.region}:${home.sqlInstance}`,
    // No password here: it is in the Kubernetes target's secret store, and create-secret puts it into the Secret.
    DATABASE_URL: `postgresql://${home.dbUser}@127.0.0.1:5432/${home.database}`,
  };
  const envFile = path.join(home.stateDir, 'gcp.env');
  const text = Object.entries(envValues).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
  await run.runner.change(`write ${envFile}`, () => writePrivateFile(envFile, text));
  if (!c.report.changed.length) c.report.lines.push(`nothing to change: the GCP home of ${home.project} already exists as configured`);
  return { ...c.report, envValues, envFile };
}

async function registry(c: Provisioning, { repo }: Found): Promise<void> {
  const { g, home } = c;
  const what = `Artifact Registry repository ${home.repository} (docker, ${home.region})`;
  if (repo) exists(c, what);
  else {
    await g.change(['artifacts', 'repositories', 'create', home.repository, '--repository-format=docker', `--location=${home.region}`, '--description=digdag-ha images'], `create the ${what}`);
    made(c, what);
  }
  // docker push authenticates through gcloud's credential helper for the registry host.
  const dockerConfig = path.join(c.run.env?.DOCKER_CONFIG ?? process.env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker'), 'config.json');
  const helpers = readJsonFile<{ credHelpers?: Record<string, string> }>(dockerConfig)?.credHelpers ?? {};
  const helper = `docker credential helper for ${home.registryHost} (${dockerConfig})`;
  if (helpers[home.registryHost] === 'gcloud') exists(c, helper);
  else {
    await g.change(['auth', 'configure-docker', home.registryHost], `configure the ${helper}`);
    made(c, helper, 'configured');
  }
}

async function cluster(c: Provisioning, { cluster: found }: Found): Promise<void> {
  const { g, home } = c;
  const what = `GKE cluster ${home.cluster} (${home.mode}, ${home.region}, Workload Identity pool ${home.workloadPool})`;
  if (!found) {
    // Autopilot always runs Workload Identity with the project's pool; Standard is told to.
    const create =
      home.mode === 'autopilot'
        ? ['container', 'clusters', 'create-auto', home.cluster, `--region=${home.region}`, '--release-channel=regular']
        : ['container', 'clusters', 'create', home.cluster, `--region=${home.region}`, '--release-channel=regular', `--workload-pool=${home.workloadPool}`, `--machine-type=${home.machineType}`, '--num-nodes=1', '--enable-ip-alias'];
    await g.change(create, `create the ${what}`);
    made(c, what);
  } else {
    const autopilot = !!found.autopilot?.enabled;
    if (autopilot !== (home.mode === 'autopilot')) c.report.lines.push(`note: GKE cluster ${home.cluster} exists as ${autopilot ? 'autopilot' : 'standard'} though GKE_MODE=${home.mode}; a cluster cannot change mode, it is kept as it is`);
    if (found.workloadIdentityConfig?.workloadPool !== home.workloadPool) {
      await g.change(['container', 'clusters', 'update', home.cluster, `--region=${home.region}`, `--workload-pool=${home.workloadPool}`], `turn on Workload Identity on GKE cluster ${home.cluster}`);
      made(c, `Workload Identity (${home.workloadPool}) on GKE cluster ${home.cluster}`, 'updated');
    } else exists(c, what);
  }
  const kubeconfig = (c.run.env?.KUBECONFIG ?? process.env.KUBECONFIG ?? path.join(os.homedir(), '.kube', 'config')).split(path.delimiter)[0]!;
  const contexts = (readYamlFile<{ contexts?: { name: string }[] }>(kubeconfig)?.contexts ?? []).map((x) => x.name);
  const context = `kubectl context ${home.kubeContext} (${kubeconfig})`;
  if (contexts.includes(home.kubeContext)) exists(c, context);
  else {
    await g.change(['container', 'clusters', 'get-credentials', home.cluster, `--region=${home.region}`], `write the ${context}`);
    made(c, context, 'written');
  }
}

async function cloudSql(c: Provisioning, found: Found): Promise<any> {
  const { g, home } = c;
  const what = `Cloud SQL instance ${home.sqlInstance} (PostgreSQL 15, REGIONAL, backups at ${home.backupStart} UTC, point-in-time recovery)`;
  const read = () => g.read(['sql', 'instances', 'describe', home.sqlInstance], `Cloud SQL instance ${home.sqlInstance}`);
  let instance = found.instance;
  const backups = [`--backup-start-time=${home.backupStart}`, '--enable-point-in-time-recovery', `--retained-backups-count=${home.backupCount}`, `--retained-transaction-log-days=${Math.min(home.backupCount, 7)}`];
  if (!instance) {
    await g.change(['sql', 'instances', 'create', home.sqlInstance, '--database-version=POSTGRES_15', `--region=${home.region}`, '--edition=enterprise', `--tier=${home.sqlTier}`, '--availability-type=REGIONAL', ...backups, '--storage-auto-increase', '--deletion-protection'], `create the ${what}`);
    made(c, what);
    instance = await read();
  } else {
    const s = instance.settings ?? {};
    const b = s.backupConfiguration ?? {};
    if (!String(instance.databaseVersion ?? '').startsWith('POSTGRES_15')) c.report.lines.push(`note: Cloud SQL instance ${home.sqlInstance} runs ${instance.databaseVersion}, not PostgreSQL 15; kept as it is`);
    if (s.availabilityType !== 'REGIONAL' || !b.enabled || !b.pointInTimeRecoveryEnabled) {
      await g.change(['sql', 'instances', 'patch', home.sqlInstance, '--availability-type=REGIONAL', ...backups], `make Cloud SQL instance ${home.sqlInstance} regional with backups and point-in-time recovery`);
      made(c, `Cloud SQL instance ${home.sqlInstance}: availability REGIONAL, backups and point-in-time recovery (were ${s.availabilityType ?? '?'}, backups ${b.enabled ? 'on' : 'off'}, PITR ${b.pointInTimeRecoveryEnabled ? 'on' : 'off'})`, 'updated');
      instance = await read();
    } else exists(c, what);
  }

  const dbWhat = `database ${home.database} on ${home.sqlInstance}`;
  if (found.database) exists(c, dbWhat);
  else {
    await g.change(['sql', 'databases', 'create', home.database, `--instance=${home.sqlInstance}`], `create the ${dbWhat}`);
    made(c, dbWhat);
  }

  // The password is generated into the Kubernetes target's secret store (0600, outside git) and
  // reaches gcloud as a flags file on stdin: never argv, never a log line.
  const kubeSecrets = { ...c.run.config, stateDir: home.stateDir };
  const hadPassword = !!readSecrets(kubeSecrets);
  const generated = await c.run.runner.change(hadPassword ? undefined : `generate the database password into ${secretsFile(kubeSecrets)}`, () => ensureSecrets(kubeSecrets));
  const flagsFile = generated ? `--password: ${JSON.stringify(generated.secrets.dbPassword)}\n` : undefined;
  const { users } = found;
  const userWhat = `database user ${home.dbUser} on ${home.sqlInstance} (password in ${secretsFile(kubeSecrets)})`;
  if (!users.some((u) => u.name === home.dbUser)) {
    await g.change(['sql', 'users', 'create', home.dbUser, `--instance=${home.sqlInstance}`, '--flags-file=-'], `create the ${userWhat}`, flagsFile);
    made(c, userWhat);
  } else if (!hadPassword) {
    // The user exists but the password we keep was just made: give the user that password.
    await g.change(['sql', 'users', 'set-password', home.dbUser, `--instance=${home.sqlInstance}`, '--flags-file=-'], `set the password of ${userWhat}`, flagsFile);
    made(c, `${userWhat}: password set (the secret store had none)`, 'updated');
  } else exists(c, userWhat);
  return instance;
}

async function logBucket(c: Provisioning, { bucket: b }: Found): Promise<void> {
  const { g, home } = c;
  const url = `gs://${home.bucket}`;
  const what = `log bucket ${url} (${home.region}, uniform access, public access prevention, objects deleted after ${home.logRetentionDays} days)`;
  const lifecycle = path.join(home.stateDir, 'gcp', 'log-bucket-lifecycle.json');
  const rule = { action: { type: 'Delete' }, condition: { age: home.logRetentionDays } };
  const writeLifecycle = () => c.run.runner.change(`write ${lifecycle}`, () => writePrivateFile(lifecycle, JSON.stringify({ rule: [rule] }) + '\n'));
  if (!b) {
    await writeLifecycle();
    await g.change(['storage', 'buckets', 'create', url, `--location=${home.region}`, '--uniform-bucket-level-access', '--public-access-prevention', `--lifecycle-file=${lifecycle}`], `create the ${what}`);
    made(c, what);
    return;
  }
  const rules: { action?: { type?: string }; condition?: { age?: number } }[] = b.lifecycle_config?.rule ?? [];
  const ok = b.uniform_bucket_level_access === true && b.public_access_prevention === 'enforced' && rules.some((r) => r.action?.type === 'Delete' && r.condition?.age === home.logRetentionDays);
  if (ok) exists(c, what);
  else {
    await writeLifecycle();
    await g.change(['storage', 'buckets', 'update', url, '--uniform-bucket-level-access', '--public-access-prevention', `--lifecycle-file=${lifecycle}`], `update the ${what}`);
    made(c, what, 'updated');
  }
}

async function serviceAccount(c: Provisioning & { policy?: Policy }, { sa, bucketPolicy, saPolicy }: Found): Promise<void> {
  const { g, home } = c;
  const what = `service account ${home.saEmail}`;
  if (sa) exists(c, what);
  else {
    await g.change(['iam', 'service-accounts', 'create', home.saName, '--display-name=digdag-ha workflows (Workload Identity)'], `create the ${what}`);
    made(c, what);
  }
  for (const role of PROJECT_ROLES) {
    const bw = `${role} on project ${home.project} for ${home.saMember}`;
    if (hasBinding(c.policy, role, home.saMember)) exists(c, bw);
    else {
      await g.change(['projects', 'add-iam-policy-binding', home.project, `--member=${home.saMember}`, `--role=${role}`, '--condition=None'], `grant ${bw}`);
      made(c, bw, 'granted');
    }
  }
  const url = `gs://${home.bucket}`;
  // A bucket or account made by this run has no binding yet: its policy was not there to read.
  const bb = `${BUCKET_ROLE} on ${url} only, for ${home.saMember}`;
  if (hasBinding(bucketPolicy, BUCKET_ROLE, home.saMember)) exists(c, bb);
  else {
    await g.change(['storage', 'buckets', 'add-iam-policy-binding', url, `--member=${home.saMember}`, `--role=${BUCKET_ROLE}`], `grant ${bb}`);
    made(c, bb, 'granted');
  }
  const wi = `Workload Identity: ${home.wiMember} acts as ${home.saEmail} (${WORKLOAD_IDENTITY_ROLE})`;
  if (hasBinding(saPolicy, WORKLOAD_IDENTITY_ROLE, home.wiMember)) exists(c, wi);
  else {
    await g.change(['iam', 'service-accounts', 'add-iam-policy-binding', home.saEmail, `--member=${home.wiMember}`, `--role=${WORKLOAD_IDENTITY_ROLE}`], `bind ${wi}`);
    made(c, wi, 'bound');
  }
}

export interface DownOptions {
  /** Also delete the Cloud SQL instance (database, backups), the log bucket and the image repository. */
  purge: boolean;
}

/** Reverse order of up. Data — the Cloud SQL instance with its backups, the log bucket, the images — stays unless purged. */
export async function gcpDown(run: GcpRun, opts: DownOptions): Promise<GcpReport> {
  const c = await preflight(run);
  const { g, home } = c;
  const gone = (what: string) => made(c, what, 'deleted');
  const kept = (what: string, why: string) => c.report.lines.push(`kept: ${what} (${why})`);
  const url = `gs://${home.bucket}`;
  const [sa, bucket, bp, instance, cl, repo] = await readAll([
    () => g.read<any>(['iam', 'service-accounts', 'describe', home.saEmail], `service account ${home.saEmail}`),
    () => g.read<any>(['storage', 'buckets', 'describe', url], `bucket ${url}`),
    () => g.read<Policy>(['storage', 'buckets', 'get-iam-policy', url], `the IAM policy of ${url}`),
    () => g.read<any>(['sql', 'instances', 'describe', home.sqlInstance], `Cloud SQL instance ${home.sqlInstance}`),
    () => g.read<any>(['container', 'clusters', 'describe', home.cluster, `--region=${home.region}`], `GKE cluster ${home.cluster}`),
    () => g.read<any>(['artifacts', 'repositories', 'describe', home.repository, `--location=${home.region}`], `repository ${home.repository}`),
  ] as const);

  for (const role of PROJECT_ROLES) {
    if (!hasBinding(c.policy, role, home.saMember)) continue;
    await g.change(['projects', 'remove-iam-policy-binding', home.project, `--member=${home.saMember}`, `--role=${role}`, '--condition=None'], `revoke ${role} from ${home.saMember}`);
    made(c, `${role} on project ${home.project} for ${home.saMember}`, 'revoked');
  }
  if (bucket && !opts.purge) {
    if (hasBinding(bp, BUCKET_ROLE, home.saMember)) {
      await g.change(['storage', 'buckets', 'remove-iam-policy-binding', url, `--member=${home.saMember}`, `--role=${BUCKET_ROLE}`], `revoke ${BUCKET_ROLE} on ${url}`);
      made(c, `${BUCKET_ROLE} on ${url} for ${home.saMember}`, 'revoked');
    }
  }
  if (sa) {
    // Its Workload Identity binding lives on it and goes with it.
    await g.change(['iam', 'service-accounts', 'delete', home.saEmail], `delete service account ${home.saEmail}`);
    gone(`service account ${home.saEmail} (and its Workload Identity binding)`);
  }

  if (!bucket) c.report.lines.push(`absent: log bucket ${url}`);
  else if (opts.purge) {
    await g.change(['storage', 'rm', '--recursive', url], `delete ${url} and its objects`);
    gone(`log bucket ${url} and its objects`);
  } else kept(`log bucket ${url}`, 'task logs; --purge deletes it');

  if (!instance) c.report.lines.push(`absent: Cloud SQL instance ${home.sqlInstance}`);
  else if (opts.purge) {
    if (instance.settings?.deletionProtectionEnabled) await g.change(['sql', 'instances', 'patch', home.sqlInstance, '--no-deletion-protection'], `lift the deletion protection of ${home.sqlInstance}`);
    await g.change(['sql', 'instances', 'delete', home.sqlInstance], `delete Cloud SQL instance ${home.sqlInstance}`);
    gone(`Cloud SQL instance ${home.sqlInstance} with database ${home.database} and its automatic backups`);
  } else kept(`Cloud SQL instance ${home.sqlInstance} with database ${home.database}, user ${home.dbUser}, backups and point-in-time recovery`, 'data; --purge deletes it');

  if (cl) {
    await g.change(['container', 'clusters', 'delete', home.cluster, `--region=${home.region}`], `delete GKE cluster ${home.cluster}`);
    gone(`GKE cluster ${home.cluster}`);
  } else c.report.lines.push(`absent: GKE cluster ${home.cluster}`);

  if (!repo) c.report.lines.push(`absent: Artifact Registry repository ${home.repository}`);
  else if (opts.purge) {
    await g.change(['artifacts', 'repositories', 'delete', home.repository, `--location=${home.region}`], `delete repository ${home.repository}`);
    gone(`Artifact Registry repository ${home.repository} and its images`);
  } else kept(`Artifact Registry repository ${home.repository}`, 'images; --purge deletes it');

  c.report.lines.push(`kept: the enabled APIs and the docker credential helper (other work in ${home.project} may use them)`);
  return c.report;
}

function readJsonFile<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function readYamlFile<T>(file: string): T | undefined {
  try {
    return YAML.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
