// The BigQuery sample on the local target with real Digdag, offline: the BigQuery emulator and
// fake-gcs-server behind the TLS googleapis edge (test/helpers/gcp), Digdag pointed at it only
// through test-only JVM options and the CLIs' own settings. For each identity — Application
// Default Credentials from a metadata server, a service-account key (GCP_SA_KEY_FILE), a user's
// own login as an ADC file (GCP_ADC_FILE: the authorized_user file `gcloud auth
// application-default login` writes) — the sample succeeds, its tables hold the expected rows,
// and every BigQuery request from bq> and from sh> bq carried a token minted for the same
// account. With a wrong key, a revoked login, or no identity at all, it fails naming the cause
// and nothing secret is printed.
//
// One emulator set and one Digdag deployment (ui + one worker) for the whole suite: the BigQuery
// emulator's memory grows with every query. Needs the Digdag runtime, the emulators
// (.ci/install-gcp-emulators), the gcloud CLI and root (the edge listens on 127.0.0.77:443, the
// port Digdag's clients use); otherwise SKIPPED with the reason.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, test, type TestContext } from 'node:test';
import { authenticatedEndpoint, clientConfigFile } from '../../lib/auth.ts';
import type { Config } from '../../lib/config.ts';
import { logFiles, startAttempt, waitAttempt, workflowId } from '../../lib/digdag-api.ts';
import { authHeaders, CLIENT_JVM_OPTS, detectJava, digdagArgv, requireRuntime, urlOf, type AuthEndpoint } from '../../lib/digdag.ts';
import { gcloudConfigDir } from '../../lib/gcp.ts';
import { endpointOf } from '../../lib/local/apply.ts';
import { localTarget } from '../../lib/local/target.ts';
import { runStep } from '../../lib/pipeline.ts';
import { pushProject } from '../../lib/push-workflow.ts';
import { isAlive, listProcesses } from '../../lib/processes.ts';
import { ROOT } from '../../lib/paths.ts';
import { ShellRunner, type BackgroundCmd, type Cmd, type Result } from '../../lib/runner.ts';
import { UserError } from '../../lib/errors.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { assertNoSecret } from '../helpers/leaks.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { assertExported, EXPORT_BUCKET } from '../helpers/gcp/cluster.ts';
import { emulatorsMissing, startGoogleApis, type EdgeRequest, type GoogleApis } from '../helpers/gcp/index.ts';
import type { MetadataServer } from '../helpers/gcp/metadata-server.ts';
import { freePortRange, prepareRuntime, runtimeVars } from '../helpers/runtime.ts';

const PROJECT = 'digdag-ha-test';
const SAMPLE = 'bigquery-sample';
const SAMPLE_DIR = path.join(ROOT, 'workflows', SAMPLE);
/** The account the metadata server serves (ADC) and the one whose key GCP_SA_KEY_FILE holds. */
const ADC_SA = `digdag-wi@${PROJECT}.iam.gserviceaccount.com`;
const KEY_SA = `digdag-key@${PROJECT}.iam.gserviceaccount.com`;
/** The user whose login (refresh token) the test's authorized_user ADC file holds. */
const USER = 'analyst@example.com';
const LOG_BUCKET = 'digdag-ha-test-logs';

/** The toolkit's commands and the Digdag processes get the fixture's test-only environment. */
class FixtureEnvRunner extends ShellRunner {
  extra: Record<string, string> = {};
  override spawnBackground(cmd: BackgroundCmd): Promise<number> {
    return super.spawnBackground({ ...cmd, env: { ...this.extra, ...cmd.env } });
  }
  override run(cmd: Cmd): Promise<Result> {
    return super.run({ ...cmd, env: { ...this.extra, ...cmd.env } });
  }
}

const lines: string[] = [];
const runner = new FixtureEnvRunner(false, (l) => lines.push(l));
const timings: string[] = [];

function why(): string | undefined {
  if (process.getuid?.() !== 0) return 'the googleapis edge needs port 443 on 127.0.0.77 (run as root)';
  if (spawnSync('gcloud', ['--version'], { stdio: 'ignore' }).status !== 0) return 'no gcloud CLI on this machine';
  return emulatorsMissing();
}

const isJava = (r: EdgeRequest) => /Google-API-Java-Client|google-api-java-client|gcloud-java/i.test(r.userAgent);

describe('BigQuery sample on the local target against the emulators', () => {
  let config: Config;
  let gcp: GoogleApis | undefined;
  let metadata: MetadataServer | undefined;
  let unavailable: string | undefined;
  const state = tempDir('digdag-ha-bq-');
  const started = Date.now();

  const needs = (t: TestContext): boolean => {
    if (unavailable) t.skip(unavailable);
    return !unavailable;
  };

  const configWith = async (vars: Record<string, string>) => testConfig({
    ...runtimeVars, DIGDAG_HA_STATE_DIR: state, UI_REPLICAS: '1', WORKER_REPLICAS: '1', SCHEDULER_REPLICAS: '0',
    LOCAL_PORT_BASE: String(config?.local.portBase ?? await freePortRange(2, 61200)),
    LOCAL_METRICS_PORT_BASE: String(config?.metrics.localPortBase ?? await freePortRange(5, 61600)),
    GCP_PROJECT: PROJECT, WORKFLOW_DIR: SAMPLE_DIR, ...vars,
  });

  /** The pipeline up to push-workflow (verify-ha is proven elsewhere), for the given identity. */
  async function deploy(vars: Record<string, string>): Promise<AuthEndpoint> {
    config = await configWith(vars);
    const t0 = Date.now();
    for (const step of ALL_STEPS.filter((s) => s.name !== 'verify-ha')) await runStep(step, testCtx(config, runner));
    timings.push(`deploy (${vars.GCP_SA_KEY_FILE ? 'key' : vars.GCP_ADC_FILE ? 'user ADC file' : 'adc'}): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return authenticatedEndpoint(config, endpointOf(config));
  }

  const runSample = (endpoint: AuthEndpoint, dataset: string, extra: Record<string, string> = {}) => runAttempt(endpoint, SAMPLE, 'bigquery', { gcp_project: PROJECT, dataset, ...extra }, dataset);

  async function runAttempt(endpoint: AuthEndpoint, project: string, workflow: string, params: Record<string, string>, label: string): Promise<{ id: string; success: boolean; requests: EdgeRequest[]; log: string }> {
    const from = gcp!.edge.requests.length;
    const t0 = Date.now();
    const id = await startAttempt(endpoint, await workflowId(endpoint, project, workflow), new Date(Math.floor(Date.now() / 1000) * 1000), params);
    const attempt = await waitAttempt(endpoint, id, 300_000);
    timings.push(`attempt ${label}: ${((Date.now() - t0) / 1000).toFixed(1)} s, BigQuery emulator ${gcp!.bigquery.rssMb()} MB`);
    let log = '';
    for (const f of await logFiles(endpoint, id)) {
      const res = await fetch(`${urlOf(endpoint)}/api/logs/${id}/files/${encodeURIComponent(f.fileName)}`, { headers: authHeaders(endpoint) });
      const body = Buffer.from(await res.arrayBuffer());
      log += (body[0] === 0x1f && body[1] === 0x8b ? zlib.gunzipSync(body) : body).toString('utf8');
    }
    return { id, success: attempt.success, requests: gcp!.edge.requests.slice(from), log };
  }

  async function emulatorRows(dataset: string, table: string): Promise<string[][]> {
    const res = await fetch(`${gcp!.bigquery.url}/bigquery/v2/projects/${PROJECT}/datasets/${dataset}/tables/${table}/data`);
    assert.equal(res.status, 200, `${dataset}.${table} is not in the emulator`);
    const body = (await res.json()) as { rows?: { f: { v: string }[] }[] };
    return (body.rows ?? []).map((r) => r.f.map((c) => c.v)).sort((a, b) => a.join().localeCompare(b.join()));
  }

  /** Every BigQuery request came from bq> (Java) or sh> bq, and all carried the account's tokens. */
  function assertOneIdentity(requests: EdgeRequest[], email: string, via: 'metadata' | 'key' | 'user'): void {
    const api = requests.filter((r) => r.service === 'bigquery' || r.service === 'storage');
    const java = api.filter(isJava);
    const cli = api.filter((r) => !isJava(r));
    assert.ok(java.length > 0, 'no BigQuery request from Digdag\'s bq>/bq_ddl>');
    assert.ok(cli.length > 0, `no BigQuery request from sh> bq (user agents: ${[...new Set(api.map((r) => r.userAgent))].join(' | ')})`);
    for (const r of api) {
      assert.ok(r.minted, `${r.method} ${r.path} (${r.userAgent}) carried no token the test minted`);
      assert.equal(r.minted.email, email, `${r.method} ${r.path} (${r.userAgent}) ran as ${r.minted.email}`);
      assert.equal(r.minted.via, via, `${r.method} ${r.path} (${r.userAgent}) got its token from the ${r.minted.via}`);
    }
  }

  before(async () => {
    unavailable = why();
    if (unavailable) return;
    config = await configWith({});
    unavailable = await prepareRuntime(config, runner);
    if (unavailable) return;
    const t0 = Date.now();
    gcp = await startGoogleApis({ dir: path.join(state, 'gcp'), project: PROJECT, accounts: [ADC_SA, KEY_SA], buckets: [LOG_BUCKET, EXPORT_BUCKET] });
    metadata = await gcp.startMetadata(ADC_SA);
    runner.extra = gcp.env(metadata);
    timings.push(`emulators + edge up: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  });

  after(async () => {
    if (config) {
      const procs = listProcesses(config);
      await localTarget.down(testCtx(config, runner), true);
      for (const p of procs) assert.equal(isAlive(p), false, `${p.name} still runs after teardown`);
    }
    await gcp?.stop();
    timings.push(`suite: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.stderr.write(`[bigquery-local] ${timings.join('; ')}\n`);
  });

  test('ADC (metadata server): the sample succeeds, its tables hold the rows, bq> and sh> bq ran as one account', { timeout: 600_000 }, async (t) => {
    if (!needs(t)) return;
    const endpoint = await deploy({});
    const run = await runSample(endpoint, 'sample_adc');
    assert.ok(run.success, `attempt ${run.id} failed:\n${run.log.slice(-3000)}`);
    assert.match(run.log, /check passed/);
    assert.deepEqual(await emulatorRows('sample_adc', 'orders'), [['nagoya', '50'], ['osaka', '80'], ['tokyo', '120'], ['tokyo', '30']]);
    assert.deepEqual(await emulatorRows('sample_adc', 'orders_by_region'), [['nagoya', '1', '50'], ['osaka', '1', '80'], ['tokyo', '2', '150']]);
    assertOneIdentity(run.requests, ADC_SA, 'metadata');
  });

  test('a query BigQuery rejects fails the attempt (not logged as a success)', { timeout: 300_000 }, async (t) => {
    if (!needs(t)) return;
    const endpoint = authenticatedEndpoint(config, endpointOf(config));
    await pushProject(testCtx(config, runner), endpoint, { name: 'bq-bad-query', dir: path.join(ROOT, 'test', 'fixtures', 'bq-bad-query') });
    const run = await runAttempt(endpoint, 'bq-bad-query', 'bad', {}, 'bad query');
    assert.equal(run.success, false, `the attempt with a broken query succeeded:\n${run.log.slice(-2000)}`);
    assert.match(run.log, /no_such_column/, `the failure does not name the query's error:\n${run.log.slice(-2000)}`);
  });

  test('service-account key (GCP_SA_KEY_FILE): the same, with the export (bq_extract> to GCS, gcs_wait>), every request with the key\'s account, the key never printed', { timeout: 600_000 }, async (t) => {
    if (!needs(t)) return;
    const keyFile = gcp!.keyFile(KEY_SA);
    const endpoint = await deploy({ GCP_SA_KEY_FILE: keyFile });
    const run = await runSample(endpoint, 'sample_key', { export_bucket: EXPORT_BUCKET });
    assert.ok(run.success, `attempt ${run.id} failed:\n${run.log.slice(-3000)}`);
    assert.deepEqual(await emulatorRows('sample_key', 'orders_by_region'), [['nagoya', '1', '50'], ['osaka', '1', '80'], ['tokyo', '2', '150']]);
    // The metadata server still answers for another account: the key wins for bq>, bq_extract>,
    // gcs_wait> and sh> alike.
    assertOneIdentity(run.requests, KEY_SA, 'key');
    timings.push(await assertExported(gcp!, 'sample_key', run.requests, KEY_SA));
    assert.match(run.log, new RegExp(`exported gs://${EXPORT_BUCKET}/digdag-ha-sample/sample_key/orders_by_region\\.csv \\(\\d+ bytes\\)`), 'echo> printed what gcs_wait> found');
    assertNothingSecret(keySecrets(fs.readFileSync(keyFile, 'utf8')), run.log);
  });

  test('a wrong key is refused before any task runs, naming the cause, and no key is printed', { timeout: 600_000 }, async (t) => {
    if (!needs(t)) return;
    const wrong = gcp!.wrongKeyFile(KEY_SA);
    const from = gcp!.edge.requests.length;
    await assert.rejects(deploy({ GCP_SA_KEY_FILE: wrong }), (err: unknown) => {
      assert.ok(err instanceof UserError, String(err));
      assert.match(`${err.message}\n${err.detail}`, new RegExp(`activate the key of ${KEY_SA}[\\s\\S]*(invalid_grant|Invalid JWT Signature)`));
      assertNothingSecret(keySecrets(fs.readFileSync(wrong, 'utf8')), `${err.message}\n${err.fix}\n${err.detail}`);
      return true;
    });
    assert.ok(gcp!.edge.requests.slice(from).every((r) => r.service === 'token' && !r.minted), 'the wrong key got a token');
  });

  test('a revoked user login (GCP_ADC_FILE) is refused before any task runs, naming the cause, and no login is printed', { timeout: 300_000 }, async (t) => {
    if (!needs(t)) return;
    const { file, login } = gcp!.userAdcFile(USER);
    gcp!.authority.revokeUser(login.refreshToken);
    const from = gcp!.edge.requests.length;
    await assert.rejects(deploy({ GCP_ADC_FILE: file }), (err: unknown) => {
      assert.ok(err instanceof UserError, String(err));
      assert.match(`${err.message}\n${err.fix}\n${err.detail}`, /could not get a token with the user login in [\s\S]*gcloud auth application-default login[\s\S]*invalid_grant/);
      assertNothingSecret([login.refreshToken, login.clientSecret], `${err.message}\n${err.fix}\n${err.detail}`);
      return true;
    });
    const tried = gcp!.edge.requests.slice(from);
    assert.ok(tried.some((r) => r.service === 'token' && r.status === 400), 'the revoked login was never tried at the token endpoint');
    assert.ok(tried.every((r) => r.service === 'token' && !r.minted), 'the revoked login got a token');
  });

  // Two proofs on one deployment (one restart and one sample run less for CI): the user's login
  // and GCS task logs. The metadata server still serves another account: the file wins for all.
  test('user ADC (GCP_ADC_FILE, a gcloud login) with GCS task logs (LOG_SERVER=gcs): bq>, sh> bq and the log uploads all as the user; the worker\'s logs served by the ui process and digdag log; the login never printed', { timeout: 600_000 }, async (t) => {
    if (!needs(t)) return;
    const { file, login } = gcp!.userAdcFile(USER);
    const endpoint = await deploy({ LOG_SERVER: 'gcs', GCS_LOG_BUCKET: LOG_BUCKET, GCS_LOG_PATH: 'digdag-logs', GCP_ADC_FILE: file });
    const run = await runSample(endpoint, 'sample_gcs_logs');
    assert.ok(run.success, `attempt ${run.id} failed:\n${run.log.slice(-3000)}`);
    // runSample read the logs through the endpoint: the ui process, which ran none of the tasks.
    assert.match(run.log, /check passed/);
    const objects = (await (await fetch(`${gcp!.storage.url}/storage/v1/b/${LOG_BUCKET}/o?prefix=digdag-logs/`)).json()) as { items?: { name: string }[] };
    assert.ok((objects.items ?? []).length >= 4, `task logs in gs://${LOG_BUCKET}: ${JSON.stringify(objects.items?.map((o) => o.name))}`);
    const uploads = run.requests.filter((r) => r.service === 'storage');
    assert.ok(uploads.some((r) => r.path.startsWith('/upload/storage/v1/')), 'no upload to GCS went through the edge');
    assertOneIdentity(run.requests, USER, 'user');
    assert.deepEqual(await emulatorRows('sample_gcs_logs', 'orders_by_region'), [['nagoya', '1', '50'], ['osaka', '1', '80'], ['tokyo', '2', '150']]);
    // The digdag CLI, as a user would read it.
    const java = await detectJava(config, runner);
    const cli = await runner.run({ argv: digdagArgv(java, requireRuntime(config), CLIENT_JVM_OPTS, ['log', run.id, '-c', clientConfigFile(config)]), nothrow: true });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /check passed/);
    assertNothingSecret([login.refreshToken, login.clientSecret], run.log);
  });

  test('no identity at all (no key, no metadata server) fails the attempt naming the cause', { timeout: 600_000 }, async (t) => {
    if (!needs(t)) return;
    await metadata!.close();
    const endpoint = await deploy({});
    const run = await runSample(endpoint, 'sample_none');
    assert.equal(run.success, false, 'the attempt without an identity succeeded');
    assert.match(run.log, /credential/i, `the failure does not name the cause:\n${run.log.slice(-2000)}`);
    assert.ok(!run.requests.some((r) => r.service === 'bigquery' && r.minted), 'a BigQuery request carried a token without an identity');
  });

  /** A key's secrets: a line of its private key and its id. */
  function keySecrets(keyJson: string): string[] {
    const key = JSON.parse(keyJson) as { private_key: string; private_key_id: string };
    return [key.private_key.split('\n').filter((l) => l && !l.startsWith('-----'))[1]!, key.private_key_id];
  }

  /** None of the secrets in the attempt's logs, the toolkit's output, ps, the processes' and gcloud's logs. */
  function assertNothingSecret(secrets: string[], attemptLog: string): void {
    const places: [string, string][] = [['the attempt\'s task logs', attemptLog], ['the toolkit\'s output', lines.join('\n')],
      ['ps', spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout]];
    for (const logs of [path.join(config.stateDir, 'logs'), path.join(gcloudConfigDir(config), 'logs')]) {
      for (const f of fs.existsSync(logs) ? fs.readdirSync(logs, { recursive: true }) as string[] : []) {
        const file = path.join(logs, f);
        if (fs.statSync(file).isFile()) places.push([file, fs.readFileSync(file, 'latin1')]);
      }
    }
    for (const [where, text] of places) {
      secrets.forEach((secret, i) => assert.ok(!text.includes(secret), `${where} contains secret #${i} of the credential`));
      assertNoSecret(config, where, text);
    }
  }
});
