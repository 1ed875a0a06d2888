// The one Google identity of a deployment (lib/gcp.ts): what the Digdag processes' environment
// holds (never a credential), the gcloud configuration commands (the key's path, never its
// content), and the project secrets push-workflow sets through the REST API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { loadConfig, type Config } from '../../lib/config.ts';
import { ensureGcloudConfig, gcloudConfigDir, gcpProcessEnv, readAdcFile, readServiceAccountKey, syncProjectGcpSecrets } from '../../lib/gcp.ts';
import { ROOT } from '../../lib/paths.ts';
import { UserError } from '../../lib/errors.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { newServiceAccountKey, newUserLogin } from '../helpers/gcp/tokens.ts';

const SA = 'digdag@my-project.iam.gserviceaccount.com';

function keyFile(): { file: string; json: string } {
  const { json } = newServiceAccountKey(SA, 'my-project', 'https://oauth2.googleapis.com/token');
  const file = path.join(tempDir(), 'key.json');
  fs.writeFileSync(file, json, { mode: 0o600 });
  return { file, json };
}

test('without GCP settings the processes get no GCP environment and gcloud is left alone', async () => {
  const config = testConfig();
  assert.deepEqual(gcpProcessEnv(config), {});
  const runner = new RecordingRunner();
  assert.match(await ensureGcloudConfig(testCtx(config, runner)), /no GCP identity configured/);
  assert.deepEqual(runner.commands(), []);
});

test('the processes get the project and the deployment\'s gcloud configuration, never a credential', () => {
  const { file, json } = keyFile();
  const config = testConfig({ GCP_PROJECT: 'my-project', GCP_SA_KEY_FILE: file });
  const env = gcpProcessEnv(config);
  assert.deepEqual(env, { CLOUDSDK_CONFIG: gcloudConfigDir(config), GOOGLE_APPLICATION_CREDENTIALS: file, GOOGLE_CLOUD_PROJECT: 'my-project', CLOUDSDK_CORE_PROJECT: 'my-project' });
  const key = JSON.parse(json) as { private_key: string; private_key_id: string };
  for (const v of Object.values(env)) assert.ok(!v.includes(key.private_key_id) && !key.private_key.includes(v));
});

test('a key is activated by its path (never its content) into the deployment\'s own gcloud configuration, once', async () => {
  const { file, json } = keyFile();
  const config = testConfig({ GCP_PROJECT: 'my-project', GCP_SA_KEY_FILE: file });
  const runner = new RecordingRunner();
  await ensureGcloudConfig(testCtx(config, runner));
  assert.deepEqual(runner.commands(), [
    `gcloud auth activate-service-account ${SA} --key-file=${file}`,
  ]);
  const key = JSON.parse(json) as { private_key: string };
  for (const c of runner.calls) assert.ok(!JSON.stringify(c).includes(key.private_key.split('\n')[1]!));
  const again = new RecordingRunner();
  assert.match(await ensureGcloudConfig(testCtx(config, again)), /already has .* activated/);
  assert.deepEqual(again.commands(), []);
  // Switching to ADC empties the configuration: no account, so gcloud/bq use the metadata server like Digdag.
  const adc = new RecordingRunner();
  await ensureGcloudConfig(testCtx(testConfig({ DIGDAG_HA_STATE_DIR: config.stateDir, GCP_PROJECT: 'my-project' }), adc));
  assert.match(await ensureGcloudConfig(testCtx(testConfig({ DIGDAG_HA_STATE_DIR: config.stateDir, GCP_PROJECT: 'my-project' }), adc)), /already uses Application Default Credentials/);
  assert.deepEqual(adc.commands(), []);
  assert.deepEqual(fs.readdirSync(gcloudConfigDir(config)), ['digdag-ha-identity']);
});

test('a file that is not a service-account key is refused with the reason', async () => {
  const file = path.join(tempDir(), 'user-adc.json');
  fs.writeFileSync(file, JSON.stringify({ type: 'authorized_user', client_id: 'x', refresh_token: 'y' }));
  const config = testConfig({ GCP_SA_KEY_FILE: file });
  await assert.rejects(ensureGcloudConfig(testCtx(config, new RecordingRunner())), (err: unknown) => err instanceof UserError && /not a service-account key \(type "authorized_user"\)/.test(err.message));
});

test('push-workflow\'s secrets: the key as gcp.credential in the request body; without a key it is removed', async () => {
  const seen: { method: string; url: string; body: string }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, body });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const { file, json } = keyFile();
    const withKey = testConfig({ GCP_PROJECT: 'my-project', GCP_SA_KEY_FILE: file });
    const runner = new RecordingRunner();
    const line = await syncProjectGcpSecrets(testCtx(withKey, runner), { url, authorization: 'Basic eA==' }, '7', 'bigquery-sample');
    assert.equal(line, `bigquery-sample: gcp.credential set to the key of ${SA}, gcp.project=my-project`);
    assert.deepEqual(seen.map((s) => `${s.method} ${s.url}`), ['PUT /api/projects/7/secrets/gcp.credential', 'PUT /api/projects/7/secrets/gcp.project']);
    assert.deepEqual(JSON.parse(seen[0]!.body), { value: json });
    assert.ok(!line.includes('PRIVATE KEY') && !runner.lines.join('\n').includes('PRIVATE KEY'));
    seen.length = 0;
    await syncProjectGcpSecrets(testCtx(testConfig({ GCP_PROJECT: 'my-project' }), runner), { url }, '7', 'bigquery-sample');
    assert.deepEqual(seen.map((s) => `${s.method} ${s.url}`), ['DELETE /api/projects/7/secrets/gcp.credential', 'PUT /api/projects/7/secrets/gcp.project']);
  } finally {
    server.close();
  }
});

// --- The local target's ADC file (GCP_ADC_FILE): a user's own login or a key, by path only. ---

/** The config as a user's shell would load it: their HOME, CLOUDSDK_CONFIG, GOOGLE_APPLICATION_CREDENTIALS. */
function userConfig(env: Record<string, string | undefined>, vars: Record<string, string> = {}) {
  const state = tempDir();
  return loadConfig({ root: ROOT, env, envFile: path.join(state, 'no-such.env'), overrides: { DIGDAG_HA_TARGET: 'local', GCP_PROJECT: 'my-project', ...vars, DIGDAG_HA_STATE_DIR: state }, detectKube: () => false });
}

function userLogin(dir = tempDir()): { file: string; login: ReturnType<typeof newUserLogin>['login'] } {
  const { login, json } = newUserLogin('analyst@example.com');
  const file = path.join(dir, 'application_default_credentials.json');
  fs.writeFileSync(file, json, { mode: 0o600 });
  return { file, login };
}

test('the ADC file is the one ADC itself would find: GCP_ADC_FILE, else GOOGLE_APPLICATION_CREDENTIALS, else the well-known file, else none (the metadata server)', () => {
  const home = tempDir();
  const wellKnown = path.join(home, '.config', 'gcloud', 'application_default_credentials.json');
  assert.deepEqual(pick(userConfig({ HOME: home })), { adcFile: '', adcFileFrom: '' });
  fs.mkdirSync(path.dirname(wellKnown), { recursive: true });
  fs.writeFileSync(wellKnown, '{}');
  assert.deepEqual(pick(userConfig({ HOME: home })), { adcFile: wellKnown, adcFileFrom: 'gcloud\'s well-known ADC file' });
  const sdk = tempDir();
  fs.writeFileSync(path.join(sdk, 'application_default_credentials.json'), '{}');
  assert.equal(userConfig({ HOME: home, CLOUDSDK_CONFIG: sdk }).gcp.adcFile, path.join(sdk, 'application_default_credentials.json'));
  assert.deepEqual(pick(userConfig({ HOME: home, GOOGLE_APPLICATION_CREDENTIALS: '/elsewhere/adc.json' })), { adcFile: '/elsewhere/adc.json', adcFileFrom: 'GOOGLE_APPLICATION_CREDENTIALS' });
  const named = userLogin().file;
  assert.deepEqual(pick(userConfig({ HOME: home, GOOGLE_APPLICATION_CREDENTIALS: '/elsewhere/adc.json' }, { GCP_ADC_FILE: named })), { adcFile: named, adcFileFrom: 'GCP_ADC_FILE' });
  assert.equal(userConfig({ HOME: home }, { GCP_ADC_FILE: '~/.config/gcloud/application_default_credentials.json' }).gcp.adcFile, wellKnown);
  // A key wins; without GCP_PROJECT nothing GCP is managed, so no file is looked for.
  assert.equal(userConfig({ HOME: home }, { GCP_SA_KEY_FILE: keyFile().file }).gcp.adcFile, '');
  assert.equal(userConfig({ HOME: home }, { GCP_PROJECT: '' }).gcp.adcFile, '');
});

const pick = (c: Config) => ({ adcFile: c.gcp.adcFile, adcFileFrom: c.gcp.adcFileFrom });

test('GCP_ADC_FILE is refused on Kubernetes, without GCP_PROJECT, and when the file does not exist — each naming the fix', () => {
  const file = userLogin().file;
  assert.throws(() => userConfig({}, { DIGDAG_HA_TARGET: 'minikube', GCP_ADC_FILE: file }), (e: unknown) => e instanceof UserError && /GCP_ADC_FILE is for the local target/.test(e.message) && /Workload Identity .* or GCP_SA_KEY_FILE/.test(e.fix ?? ''));
  assert.throws(() => userConfig({}, { GCP_PROJECT: '', GCP_ADC_FILE: file }), (e: unknown) => e instanceof UserError && /GCP_ADC_FILE needs GCP_PROJECT/.test(e.message));
  assert.throws(() => userConfig({}, { GCP_ADC_FILE: '/nonexistent/adc.json' }), (e: unknown) => e instanceof UserError && /GCP_ADC_FILE=\/nonexistent\/adc.json does not exist/.test(e.message) && /gcloud auth application-default login/.test(e.fix ?? ''));
});

test('a user login: its path reaches Digdag (GOOGLE_APPLICATION_CREDENTIALS) and gcloud (credential_file_override), refreshed once by apply, its secrets never', async () => {
  const { file, login } = userLogin();
  const config = userConfig({}, { GCP_ADC_FILE: file });
  assert.deepEqual(gcpProcessEnv(config), { CLOUDSDK_CONFIG: gcloudConfigDir(config), GOOGLE_APPLICATION_CREDENTIALS: file, GOOGLE_CLOUD_PROJECT: 'my-project', CLOUDSDK_CORE_PROJECT: 'my-project' });
  const runner = new RecordingRunner();
  assert.match(await ensureGcloudConfig(testCtx(config, runner)), /the user login in .* \(GCP_ADC_FILE\)/);
  assert.deepEqual(runner.commands(), [
    'gcloud config set core/disable_file_logging true',
    `gcloud config set auth/credential_file_override ${file}`,
    'gcloud config set core/check_gce_metadata false',
    'gcloud config config-helper --force-auth-refresh --format=value(credential.token_expiry)',
  ]);
  const everything = JSON.stringify([runner.calls, runner.lines, gcpProcessEnv(config)]);
  for (const s of [login.refreshToken, login.clientSecret]) assert.ok(!everything.includes(s));
  const again = new RecordingRunner();
  assert.match(await ensureGcloudConfig(testCtx(config, again)), /already uses the user login in/);
  assert.deepEqual(again.commands(), []);
  // A new login in the same file (gcloud auth application-default login again) is applied again.
  fs.writeFileSync(file, newUserLogin('other@example.com').json);
  const relogin = new RecordingRunner();
  await ensureGcloudConfig(testCtx(config, relogin));
  assert.equal(relogin.commands().length, 4);
  // push-workflow sets no gcp.credential for it: Digdag's operators fall back to ADC, i.e. this file.
  assert.equal(readServiceAccountKey(config), undefined);
});

test('a login the token endpoint refuses stops apply with gcloud\'s cause and the fix, without gcloud\'s login advice', async () => {
  const { file } = userLogin();
  const config = userConfig({}, { GCP_ADC_FILE: file });
  const runner = new RecordingRunner((argv) => argv.includes('config-helper')
    ? { code: 1, stderr: 'ERROR: (gcloud.config.config-helper) There was a problem refreshing your current auth tokens: (\'invalid_grant: Token has been expired or revoked.\', {...})\nPlease run:\n\n  $ gcloud auth login\n' }
    : undefined);
  await assert.rejects(ensureGcloudConfig(testCtx(config, runner)), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /gcloud could not get a token with the user login in .* \(GCP_ADC_FILE\)/);
    assert.match(err.fix ?? '', /gcloud auth application-default login/);
    assert.match(err.detail ?? '', /invalid_grant/);
    assert.doesNotMatch(err.detail ?? '', /gcloud auth login/);
    return true;
  });
  assert.ok(!fs.existsSync(path.join(gcloudConfigDir(config), 'digdag-ha-identity')), 'a failed refresh was recorded as done');
});

test('an ADC file that is missing, unreadable, not JSON or not a login/key is refused naming the file, where it came from and the fix', () => {
  const refused = (env: Record<string, string>, vars: Record<string, string>, why: RegExp) => assert.throws(() => readAdcFile(userConfig(env, vars)), (e: unknown) => {
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, why);
    assert.match(e.fix ?? '', /gcloud auth application-default login.*GCP_ADC_FILE/);
    assert.ok(!`${e.message}${e.fix}${e.detail ?? ''}`.includes('1//0e-half-a-login'), 'the refusal shows the refresh token');
    return true;
  });
  refused({ GOOGLE_APPLICATION_CREDENTIALS: '/nonexistent/adc.json' }, {}, /file GOOGLE_APPLICATION_CREDENTIALS=\/nonexistent\/adc.json does not exist/);
  refused({}, { GCP_ADC_FILE: tempDir() }, /file GCP_ADC_FILE=.* cannot be read \(EISDIR\)/);
  const write = (text: string) => {
    const f = path.join(tempDir(), 'adc.json');
    fs.writeFileSync(f, text);
    return f;
  };
  refused({}, { GCP_ADC_FILE: write('refresh_token=1//x') }, /is not JSON/);
  refused({}, { GCP_ADC_FILE: write(JSON.stringify({ type: 'external_account', audience: 'x' })) }, /neither a user login .* nor a service-account key \(type "external_account"\)/);
  refused({}, { GCP_ADC_FILE: write(JSON.stringify({ type: 'authorized_user', client_id: 'c', refresh_token: '1//0e-half-a-login' })) }, /neither a user login \(authorized_user with client_id, client_secret, refresh_token\)/);
  // A service-account key as the ADC file works the same way, named by its account.
  const key = keyFile();
  assert.deepEqual({ ...readAdcFile(userConfig({}, { GCP_ADC_FILE: key.file }))!, sha256: '' }, { file: key.file, type: 'service_account', email: SA, sha256: '' });
});
