// The one Google identity of a deployment (lib/gcp.ts): what the Digdag processes' environment
// holds (never a credential), the gcloud configuration commands (the key's path, never its
// content), and the project secrets push-workflow sets through the REST API.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { ensureGcloudConfig, gcloudConfigDir, gcpProcessEnv, syncProjectGcpSecrets } from '../../lib/gcp.ts';
import { UserError } from '../../lib/errors.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { newServiceAccountKey } from '../helpers/gcp/tokens.ts';

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

test('Digdag log entries: a timestamped line with the lines under it, so a cause is looked for in bq>\'s own retry entry', async () => {
  const { logEntries } = await import('../helpers/gcp/cluster.ts');
  const log = [
    '2026-12-02 23:53:46 +0900 [WARN] (0044@[0:p:1:1]+identity+query) io.digdag.storage.gcs.GCSStorage: Retrying uploading file',
    'java.io.IOException: Error code 404 trying to get security access token from Compute Engine metadata',
    '2026-12-02 23:53:47 +0900 [WARN] (0044@[0:p:1:1]+identity+query) io.digdag.standards.operator.gcp.BqJobRunner: BigQuery job submission failed: retrying in 1 seconds',
    'com.google.api.client.auth.oauth2.TokenResponseException: 400 Bad Request',
    '  "error" : "invalid_grant",',
  ].join('\n');
  const entries = logEntries(log);
  assert.equal(entries.length, 2);
  assert.match(entries[1]!, /retrying in[\s\S]*invalid_grant/);
  assert.doesNotMatch(entries[1]!, /Compute Engine metadata/);
});
