// tasks/gcp.ts with the real Google Cloud CLI against a recording stand-in of Google's APIs
// (test/helpers/gcloud-fake.ts): what up sends (names, region, REGIONAL, backups/PITR, roles and
// where they are granted, the Workload Identity member), that a second up sends no change, that
// down keeps the data without --purge, that bad input changes nothing, and that the generated
// database password reaches the API body only — never argv, a log line or gcloud's own logs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { readSecrets } from '../../lib/credentials.ts';
import { UserError } from '../../lib/errors.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { clearSecretsForTest } from '../../lib/secrets.ts';
import { gcp } from '../../tasks/gcp.ts';
import { FakeGcp, type RecordedRequest } from '../helpers/gcloud-fake.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const gcloudMissing = spawnSync('gcloud', ['version'], { encoding: 'utf8', env: { ...process.env, CLOUDSDK_CONFIG: tempDir('gcloud-probe-') } }).status !== 0
  ? 'gcloud is not installed (the Google Cloud CLI; /usr/lib/google-cloud-sdk on this project\'s machines)'
  : undefined;

const PROJECT = 'digdag-ha-test';
const REGION = 'asia-northeast1';
const SA = `digdag@${PROJECT}.iam.gserviceaccount.com`;
const WI_MEMBER = `serviceAccount:${PROJECT}.svc.id.goog[digdag/digdag]`;

/** An isolated gcloud: its own config dir, an access token from a file, every API pointed at the fake. */
function gcloudEnv(fake: FakeGcp, dir: string): Record<string, string> {
  fs.writeFileSync(path.join(dir, 'token'), 'ya29.test-access-token\n');
  return {
    ...fake.endpointEnv(),
    CLOUDSDK_CONFIG: path.join(dir, 'gcloud'),
    CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: path.join(dir, 'token'),
    CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
    CLOUDSDK_CORE_DISABLE_USAGE_REPORTING: 'true',
    CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: 'true',
    CLOUDSDK_SURVEY_DISABLE_PROMPTS: 'true',
    KUBECONFIG: path.join(dir, 'kubeconfig'),
    DOCKER_CONFIG: path.join(dir, 'docker'),
  };
}

function setup(vars: Record<string, string> = {}, fakeOpts: Partial<ConstructorParameters<typeof FakeGcp>[0]> = {}) {
  const dir = tempDir('digdag-ha-gcp-');
  const fake = new FakeGcp({ project: PROJECT, ...fakeOpts });
  const config = testConfig({
    DIGDAG_HA_TARGET: 'gke',
    IMAGE: `${REGION}-docker.pkg.dev/${PROJECT}/digdag/digdag-ha:0.10.5.1`,
    GCP_PROJECT: PROJECT,
    DIGDAG_HA_STATE_DIR: path.join(dir, 'state'),
    ...vars,
  });
  const lines: string[] = [];
  const runner = (dryRun = false) => new ShellRunner(dryRun, (l) => lines.push(l));
  return { dir, fake, config, lines, runner, env: () => gcloudEnv(fake, dir) };
}

const find = (reqs: RecordedRequest[], method: string, re: RegExp) => reqs.filter((r) => r.method === method && re.test(r.path));
const one = (reqs: RecordedRequest[], method: string, re: RegExp) => {
  const f = find(reqs, method, re);
  assert.equal(f.length, 1, `one ${method} ${re}, got ${f.length}:\n${reqs.map((r) => `${r.method} ${r.path}`).join('\n')}`);
  return f[0]!;
};

describe('tasks/gcp.ts with the real gcloud against a recording endpoint', { skip: gcloudMissing }, () => {
  const s = setup();
  let env: Record<string, string>;
  const started = Date.now();
  before(async () => {
    clearSecretsForTest();
    await s.fake.start();
    env = s.env();
  });
  after(async () => {
    await s.fake.stop();
    process.stderr.write(`# gcp-gcloud: ${s.fake.requests.length} API requests, ${s.lines.filter((l) => l.startsWith('$ gcloud')).length} gcloud runs, ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  });

  test('plan prints every gcloud command up would run and sends no change', async () => {
    const r = await gcp('plan', s.config, s.runner(true), { env });
    assert.deepEqual(s.fake.changes(), [], 'plan changed nothing at the API');
    const printed = s.lines.filter((l) => l.startsWith('[dry-run] gcloud'));
    for (const cmd of ['services enable', 'artifacts repositories create digdag', 'auth configure-docker', 'container clusters create-auto digdag', 'sql instances create digdag-pg', 'sql databases create digdag', 'sql users create digdag', 'storage buckets create gs://digdag-ha-test-digdag-logs', 'iam service-accounts create digdag', 'projects add-iam-policy-binding', 'storage buckets add-iam-policy-binding', 'iam service-accounts add-iam-policy-binding']) {
      assert.ok(printed.some((l) => l.includes(`gcloud ${cmd}`)), `plan shows gcloud ${cmd}:\n${printed.join('\n')}`);
    }
    assert.ok(printed.some((l) => l.includes('--flags-file=-')), 'the user is created with the password on stdin');
    assert.equal(readSecrets({ ...s.config, stateDir: path.join(path.dirname(s.config.stateDir), 'gke') }), undefined, 'plan generated no password');
    assert.ok(r.lines.some((l) => l.startsWith('would be created: Cloud SQL instance digdag-pg')));
    assert.ok(!fs.existsSync(r.envFile!), 'plan wrote no .env file');
  });

  test('up creates the home: every request as configured', async () => {
    const before = s.fake.requests.length;
    const r = await gcp('up', s.config, s.runner(), { env });
    const reqs = s.fake.requests.slice(before);
    assert.ok(reqs.every((q) => q.auth === 'Bearer ya29.test-access-token'), 'every request carries the token from the file');

    const enable = one(reqs, 'POST', new RegExp(`^/v1/projects/${PROJECT}/services:batchEnable$`));
    assert.deepEqual([...enable.body.serviceIds].sort(), ['artifactregistry.googleapis.com', 'bigquery.googleapis.com', 'cloudresourcemanager.googleapis.com', 'compute.googleapis.com', 'container.googleapis.com', 'iam.googleapis.com', 'iamcredentials.googleapis.com', 'sqladmin.googleapis.com', 'storage.googleapis.com']);

    const repo = one(reqs, 'POST', new RegExp(`^/v1/projects/${PROJECT}/locations/${REGION}/repositories$`));
    assert.equal(repo.query.repositoryId, 'digdag');
    assert.equal(repo.body.format, 'DOCKER');

    const cluster = one(reqs, 'POST', new RegExp(`^/v1/projects/${PROJECT}/locations/${REGION}/clusters$`));
    assert.equal(cluster.body.cluster.name, 'digdag');
    assert.equal(cluster.body.cluster.autopilot?.enabled, true, 'Autopilot by default (Workload Identity always on)');

    const sql = one(reqs, 'POST', new RegExp(`^/sql/v1beta4/projects/${PROJECT}/instances$`));
    assert.equal(sql.body.name, 'digdag-pg');
    assert.equal(sql.body.databaseVersion, 'POSTGRES_15');
    assert.equal(sql.body.region, REGION);
    assert.equal(sql.body.settings.availabilityType, 'REGIONAL');
    assert.equal(sql.body.settings.deletionProtectionEnabled, true);
    assert.deepEqual(sql.body.settings.backupConfiguration, {
      kind: 'sql#backupConfiguration', enabled: true, pointInTimeRecoveryEnabled: true, startTime: '18:00', transactionLogRetentionDays: 7,
      backupRetentionSettings: { retainedBackups: 7, retentionUnit: 'COUNT' },
    });
    assert.equal(one(reqs, 'POST', /\/instances\/digdag-pg\/databases$/).body.name, 'digdag');

    const secrets = readSecrets({ ...s.config, stateDir: path.join(path.dirname(s.config.stateDir), 'gke') });
    assert.ok(secrets, 'the password is in the gke secret store');
    const secretFile = path.join(path.dirname(s.config.stateDir), 'gke', 'secrets', 'secrets.json');
    assert.equal(fs.statSync(secretFile).mode & 0o777, 0o600);
    const user = one(reqs, 'POST', /\/instances\/digdag-pg\/users$/);
    assert.equal(user.body.name, 'digdag');
    assert.equal(user.body.password, secrets.dbPassword, 'the generated password reached the API (through the flags file on stdin)');

    const bucket = one(reqs, 'POST', /^\/storage\/v1\/b$/);
    assert.equal(bucket.query.project, PROJECT);
    assert.equal(bucket.body.name, `${PROJECT}-digdag-logs`);
    assert.equal(bucket.body.location, REGION);
    assert.deepEqual(bucket.body.iamConfiguration, { publicAccessPrevention: 'enforced', uniformBucketLevelAccess: { enabled: true } });
    assert.deepEqual(bucket.body.lifecycle, { rule: [{ action: { type: 'Delete' }, condition: { age: 90 } }] });

    assert.equal(one(reqs, 'POST', new RegExp(`^/v1/projects/${PROJECT}/serviceAccounts$`)).body.accountId, 'digdag');

    // Roles and their scopes: three on the project, object admin on the log bucket only, the KSA on the SA.
    const saRoles = (bindings: { role: string; members: string[] }[]) => bindings.filter((b) => b.members.includes(`serviceAccount:${SA}`)).map((b) => b.role).sort();
    assert.deepEqual(saRoles(s.fake.projectPolicy.bindings), ['roles/bigquery.dataEditor', 'roles/bigquery.jobUser', 'roles/cloudsql.client']);
    assert.equal(find(reqs, 'POST', new RegExp(`^/v1/projects/${PROJECT}:setIamPolicy$`)).length, 3);
    assert.deepEqual(saRoles(s.fake.bucketPolicies.get(`${PROJECT}-digdag-logs`)!.bindings), ['roles/storage.objectAdmin']);
    const wi = one(reqs, 'POST', new RegExp(`^/v1/projects/[^/]+/serviceAccounts/${SA}:setIamPolicy$`));
    assert.deepEqual(wi.body.policy.bindings, [{ role: 'roles/iam.workloadIdentityUser', members: [WI_MEMBER] }]);

    // Local results: the docker credential helper, the kubectl context, the .env values.
    assert.equal(JSON.parse(fs.readFileSync(path.join(s.dir, 'docker', 'config.json'), 'utf8')).credHelpers[`${REGION}-docker.pkg.dev`], 'gcloud');
    const kube = YAML.parse(fs.readFileSync(path.join(s.dir, 'kubeconfig'), 'utf8'));
    assert.ok(kube.contexts.some((c: { name: string }) => c.name === `gke_${PROJECT}_${REGION}_digdag`));
    assert.deepEqual(r.envValues, {
      DIGDAG_HA_TARGET: 'gke', GCP_PROJECT: PROJECT, GCP_REGION: REGION, IMAGE: `${REGION}-docker.pkg.dev/${PROJECT}/digdag/digdag-ha:0.10.5.1`,
      KUBE_CONTEXT: `gke_${PROJECT}_${REGION}_digdag`, GCP_SERVICE_ACCOUNT: SA, GCS_LOG_BUCKET: `${PROJECT}-digdag-logs`, LOG_SERVER: 'gcs',
      CLOUDSQL_INSTANCE: `${PROJECT}:${REGION}:digdag-pg`, DATABASE_URL: 'postgresql://digdag@127.0.0.1:5432/digdag',
    });
    assert.equal(fs.readFileSync(r.envFile!, 'utf8'), Object.entries(r.envValues!).map(([k, v]) => `${k}=${v}\n`).join(''));
    // Those values are a configuration --target gke accepts: the chart renders with the Auth Proxy sidecar and Workload Identity.
    const gke = testConfig({ ...r.envValues!, DIGDAG_HA_STATE_DIR: path.join(s.dir, 'state') });
    const { objects } = await renderManifests(gke, s.runner());
    const worker = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'digdag-worker') as any;
    assert.equal(worker.spec.template.spec.initContainers[0].args.at(-1), `${PROJECT}:${REGION}:digdag-pg`);
    const ksa = objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === 'digdag')!;
    assert.equal(ksa.metadata.annotations?.['iam.gke.io/gcp-service-account'], SA);

    // The password: in the API body only — not in an argv or log line of ours, the .env file, or gcloud's own logs.
    const gcloudLogs = fs.readdirSync(path.join(s.dir, 'gcloud', 'logs'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => fs.readFileSync(path.join(e.parentPath, e.name), 'utf8'));
    assert.ok(gcloudLogs.length > 0, 'gcloud wrote its logs');
    for (const [where, text] of [['our log lines', s.lines.join('\n')], ['the .env values', fs.readFileSync(r.envFile!, 'utf8')], ['gcloud\'s logs', gcloudLogs.join('\n')], ['the report', r.lines.join('\n')]] as const) {
      assert.ok(!text.includes(secrets.dbPassword), `the password is not in ${where}`);
    }
    assert.ok(s.lines.some((l) => l.includes('gcloud sql users create digdag --instance=digdag-pg --flags-file=-')));
  });

  test('a second up describes everything, sends no change and says so', async () => {
    const before = s.fake.requests.length;
    const r = await gcp('up', s.config, s.runner(), { env });
    assert.deepEqual(s.fake.requests.slice(before).filter((q) => q.method !== 'GET' && !/:getIamPolicy$/.test(q.path)), []);
    assert.deepEqual(r.changed, []);
    assert.match(r.lines.at(-1)!, /^nothing to change: the GCP home of digdag-ha-test already exists as configured$/);
  });

  test('down without --purge removes the cluster, the roles and the service account, and keeps the database, the bucket and the images', async () => {
    const before = s.fake.requests.length;
    const r = await gcp('down', s.config, s.runner(), { env });
    const reqs = s.fake.requests.slice(before);
    const deleted = find(reqs, 'DELETE', /./).map((q) => q.path);
    assert.equal(deleted.length, 2, deleted.join('\n'));
    assert.match(deleted[0]!, new RegExp(`/serviceAccounts/${SA}$`));
    assert.equal(deleted[1], `/v1/projects/${PROJECT}/locations/${REGION}/clusters/digdag`);
    assert.equal(s.fake.clusters.size, 0);
    assert.equal(s.fake.serviceAccounts.size, 0);
    assert.ok(s.fake.instances.has('digdag-pg') && s.fake.databases.has('digdag-pg/digdag'), 'database kept');
    assert.ok(s.fake.buckets.has(`${PROJECT}-digdag-logs`), 'bucket kept');
    assert.equal(s.fake.repos.size, 1, 'repository kept');
    assert.ok(!JSON.stringify(s.fake.projectPolicy).includes(SA), 'project roles revoked');
    assert.ok(!JSON.stringify(s.fake.bucketPolicies.get(`${PROJECT}-digdag-logs`)).includes(SA), 'bucket role revoked');
    assert.ok(r.lines.some((l) => /^kept: Cloud SQL instance digdag-pg/.test(l)));
    assert.ok(r.lines.some((l) => /^kept: log bucket gs:\/\/digdag-ha-test-digdag-logs/.test(l)));
  });

  test('down --purge deletes the data too: deletion protection lifted, instance, bucket, repository', async () => {
    const before = s.fake.requests.length;
    await gcp('down', s.config, s.runner(), { env, purge: true });
    const reqs = s.fake.requests.slice(before);
    assert.equal(one(reqs, 'PATCH', /\/instances\/digdag-pg$/).body.settings.deletionProtectionEnabled, false);
    one(reqs, 'DELETE', /\/instances\/digdag-pg$/);
    one(reqs, 'DELETE', /^\/storage\/v1\/b\/digdag-ha-test-digdag-logs$/);
    one(reqs, 'DELETE', /\/repositories\/digdag$/);
    assert.equal(s.fake.instances.size + s.fake.buckets.size + s.fake.repos.size, 0);
  });
});

describe('tasks/gcp.ts refuses bad input before anything is created', { skip: gcloudMissing }, () => {
  test('no project: refused before gcloud runs, naming GCP_PROJECT', async () => {
    const s = setup({ GCP_PROJECT: '' });
    await assert.rejects(gcp('up', s.config, s.runner(), { env: {} }), (e: unknown) => e instanceof UserError && /GCP_PROJECT is not set/.test(e.message) && /GCP_PROJECT=/.test(e.fix ?? ''));
    assert.deepEqual(s.lines, []);
  });

  test('a region without the services: refused when the configuration is read', () => {
    assert.throws(() => setup({ GCP_REGION: 'mars-north1' }), (e: unknown) => e instanceof UserError && /GCP_REGION=mars-north1 is not a region/.test(e.message) && /asia-northeast1/.test(e.fix ?? ''));
  });

  test('permission denied by the API, and an unknown project: refused by the first reads, nothing sent that changes', async () => {
    const denied = setup({}, { denyIamRead: true });
    await denied.fake.start();
    try {
      await assert.rejects(gcp('up', denied.config, denied.runner(), { env: denied.env() }), (e: unknown) => e instanceof UserError && /permission denied: the IAM policy of project/.test(e.message) && /roles\/owner/.test(e.fix ?? '') && /PERMISSION_DENIED|does not have permission/.test(e.detail ?? ''));
      const other = setup({ GCP_PROJECT: 'someone-elses' });
      await assert.rejects(gcp('up', other.config, other.runner(), { env: denied.env() }), (e: unknown) => e instanceof UserError && /project someone-elses does not exist or the account gcloud uses cannot see it/.test(e.message) && /GCP_PROJECT/.test(e.fix ?? ''));
      assert.deepEqual(denied.fake.changes(), []);
    } finally {
      await denied.fake.stop();
    }
  });
});

describe('tasks/gcp.ts on a home that drifted (Standard mode)', { skip: gcloudMissing }, () => {
  test('up repairs what differs — Workload Identity, REGIONAL + backups/PITR, the bucket\'s access and lifecycle, the user\'s password — and creates nothing', async () => {
    const s = setup({ GKE_MODE: 'standard' });
    await s.fake.start();
    try {
      const f = s.fake;
      const sa = `serviceAccount:${SA}`;
      for (const api of ['artifactregistry', 'bigquery', 'cloudresourcemanager', 'compute', 'container', 'iam', 'iamcredentials', 'sqladmin', 'storage']) f.enabled.add(`${api}.googleapis.com`);
      f.repos.set(`projects/${PROJECT}/locations/${REGION}/repositories/digdag`, { name: `projects/${PROJECT}/locations/${REGION}/repositories/digdag`, format: 'DOCKER' });
      f.clusters.set(`projects/${PROJECT}/locations/${REGION}/clusters/digdag`, { name: 'digdag', location: REGION, zone: REGION, status: 'RUNNING', nodePools: [{ name: 'default-pool', config: { machineType: 'e2-standard-4' }, initialNodeCount: 1 }], endpoint: '127.0.0.1', masterAuth: { clusterCaCertificate: '' }, currentMasterVersion: '1.31.3-gke.1000', currentNodeVersion: '1.31.3-gke.1000' });
      f.instances.set('digdag-pg', { kind: 'sql#instance', name: 'digdag-pg', project: PROJECT, region: REGION, databaseVersion: 'POSTGRES_15', state: 'RUNNABLE', backendType: 'SECOND_GEN', connectionName: `${PROJECT}:${REGION}:digdag-pg`, settings: { tier: 'db-custom-2-7680', availabilityType: 'ZONAL', backupConfiguration: { enabled: false } } });
      f.databases.set('digdag-pg/digdag', { kind: 'sql#database', name: 'digdag', instance: 'digdag-pg', project: PROJECT });
      f.users.set('digdag-pg/digdag', { kind: 'sql#user', name: 'digdag', instance: 'digdag-pg', project: PROJECT, password: 'made-by-hand' });
      f.buckets.set(`${PROJECT}-digdag-logs`, { kind: 'storage#bucket', name: `${PROJECT}-digdag-logs`, id: `${PROJECT}-digdag-logs`, location: 'ASIA-NORTHEAST1', storageClass: 'STANDARD', iamConfiguration: { uniformBucketLevelAccess: { enabled: true }, publicAccessPrevention: 'inherited' }, metageneration: '1', etag: 'CAE=', timeCreated: '2026-12-01T00:00:00.000Z', updated: '2026-12-01T00:00:00.000Z' });
      f.bucketPolicies.set(`${PROJECT}-digdag-logs`, { version: 1, etag: 'CAE=', bindings: [{ role: 'roles/storage.objectAdmin', members: [sa] }] });
      f.serviceAccounts.set(SA, { name: `projects/${PROJECT}/serviceAccounts/${SA}`, email: SA, projectId: PROJECT, uniqueId: '1' });
      f.saPolicies.set(SA, { version: 1, etag: 'ACAB', bindings: [{ role: 'roles/iam.workloadIdentityUser', members: [WI_MEMBER] }] });
      f.projectPolicy.bindings.push(...['roles/bigquery.jobUser', 'roles/bigquery.dataEditor', 'roles/cloudsql.client'].map((role) => ({ role, members: [sa] })));
      fs.mkdirSync(path.join(s.dir, 'docker'));
      fs.writeFileSync(path.join(s.dir, 'docker', 'config.json'), JSON.stringify({ credHelpers: { [`${REGION}-docker.pkg.dev`]: 'gcloud' } }));
      fs.writeFileSync(path.join(s.dir, 'kubeconfig'), YAML.stringify({ apiVersion: 'v1', kind: 'Config', contexts: [{ name: `gke_${PROJECT}_${REGION}_digdag`, context: {} }] }));

      const r = await gcp('up', s.config, s.runner(), { env: s.env() });
      assert.deepEqual(f.changes().map((q) => `${q.method} ${q.path}`), [
        `PUT /v1/projects/${PROJECT}/locations/${REGION}/clusters/digdag`,
        `PATCH /sql/v1beta4/projects/${PROJECT}/instances/digdag-pg`,
        `PUT /sql/v1beta4/projects/${PROJECT}/instances/digdag-pg/users`,
        `PATCH /storage/v1/b/${PROJECT}-digdag-logs`,
      ], r.lines.join('\n'));
      assert.deepEqual(one(f.requests, 'PUT', /\/clusters\/digdag$/).body.update, { desiredWorkloadIdentityConfig: { workloadPool: `${PROJECT}.svc.id.goog` } });
      const patch = one(f.requests, 'PATCH', /\/instances\/digdag-pg$/).body.settings;
      assert.equal(patch.availabilityType, 'REGIONAL');
      assert.equal(patch.backupConfiguration.enabled, true);
      assert.equal(patch.backupConfiguration.pointInTimeRecoveryEnabled, true);
      const secrets = readSecrets({ ...s.config, stateDir: path.join(path.dirname(s.config.stateDir), 'gke') })!;
      assert.equal(f.users.get('digdag-pg/digdag').password, secrets.dbPassword, 'the user now has the password the secret store holds');
      const bucket = one(f.requests, 'PATCH', /^\/storage\/v1\/b\//).body;
      assert.equal(bucket.iamConfiguration.publicAccessPrevention, 'enforced');
      assert.deepEqual(bucket.lifecycle, { rule: [{ action: { type: 'Delete' }, condition: { age: 90 } }] });
      assert.ok(!s.lines.join('\n').includes(secrets.dbPassword));
    } finally {
      await s.fake.stop();
    }
  });
});
