// The generated secrets (DB, PostgreSQL and UI/API passwords, encryption key, the Authorization
// header) are grepped for where they must never be: `ps` output of running processes, the
// environment a sh> task inherits (Digdag's agent passes its own environment on), logs, rendered
// ConfigMaps; and the files holding them are 0600. The last test needs a real Digdag and reports
// SKIPPED with the reason where there is none.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { apiCredentials, authenticatedEndpoint, authorizationHeader, authProperties, clientConfigFile, credentialsHint, htpasswdLine, writeClientConfig } from '../../lib/auth.ts';
import { ensureSecrets, secretsFile } from '../../lib/credentials.ts';
import { detectJava, digdagArgv, getJson, requireRuntime } from '../../lib/digdag.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { runStep } from '../../lib/pipeline.ts';
import { waitFor } from '../../lib/processes.ts';
import { secretProperties, serverProperties } from '../../lib/properties.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { writePrivateFile } from '../../lib/state.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { freePortRange, prepareRuntime, runtimeVars } from '../helpers/runtime.ts';
import { generatedSecrets } from '../helpers/leaks.ts';

const lines: string[] = [];
const runner = new ShellRunner(false, (l) => lines.push(l));
const stateRoot = tempDir();
const config = testConfig({ DIGDAG_HA_STATE_DIR: stateRoot });
const started: number[] = [];

after(() => {
  for (const pid of started) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** Every generated value in every form it travels in. */
function secretValues(): string[] {
  ensureSecrets(config);
  return generatedSecrets(config).map((s) => s.value);
}

function assertFree(where: string, text: string): void {
  for (const v of secretValues()) assert.ok(!text.includes(v), `${where} contains a generated secret (${v.slice(0, 3)}…)`);
}

test('create-secret generates the UI/API password once and logs only where to read it', async () => {
  await runStep(createSecret, testCtx(config, runner));
  const first = JSON.parse(fs.readFileSync(secretsFile(config), 'utf8')) as { apiPassword: string };
  assert.match(first.apiPassword, /^[A-Za-z0-9_-]{32}$/);
  await runStep(createSecret, testCtx(config, runner, true));
  assert.equal((JSON.parse(fs.readFileSync(secretsFile(config), 'utf8')) as { apiPassword: string }).apiPassword, first.apiPassword, 'never regenerated');
  for (const l of credentialsHint(config)) runner.log(l);
  assert.ok(lines.some((l) => l.includes(secretsFile(config))), 'the hint names the file');
  assertFree('the task log', lines.join('\n'));
});

test('files holding secrets are 0600, and the properties carry the basic-auth keys', () => {
  const { secrets } = ensureSecrets(config);
  const props = path.join(config.stateDir, 'props', 'ui-1.properties');
  // As apply writes them: the generated properties plus the secret part.
  writePrivateFile(props, serverProperties(config, 'ui', { bind: '127.0.0.1', port: 1, jmxPort: 3, dbHost: '127.0.0.1', dbPort: 2, dbName: 'd', dbUser: 'u' })
    + secretProperties(secrets.dbPassword, secrets.encryptionKey) + authProperties(apiCredentials(config, secrets)));
  writeClientConfig(config, 'http://127.0.0.1:65432');
  for (const f of [secretsFile(config), props, clientConfigFile(config)]) {
    assert.equal(fs.statSync(f).mode & 0o777, 0o600, `${f} is not 0600`);
  }
  const text = fs.readFileSync(props, 'utf8');
  assert.match(text, /^server\.authenticator\.type = basic$/m);
  assert.match(text, new RegExp(`^server\\.authenticator\\.basic\\.username = ${config.security.authUser}$`, 'm'));
  assert.match(fs.readFileSync(clientConfigFile(config), 'utf8'), /^client\.http\.headers\.Authorization = Basic [A-Za-z0-9+/=]+$/m);
  assert.equal(authProperties(apiCredentials(testConfig({ AUTH: 'none' }), secrets)), '', 'AUTH=none writes no username, so Digdag uses NoAuthenticator');
  assert.match(credentialsHint(testConfig({ AUTH: 'none' })).join('\n'), /WARNING: AUTH=none/);
});

test('a background process (a Digdag role, whose sh> tasks inherit its environment) gets no secret in its env or argv', async () => {
  const { secrets } = ensureSecrets(config);
  const saved = { ...process.env };
  // What a user's shell might hold: DATABASE_URL with the password, a token, a variable that happens to hold a secret.
  process.env.DATABASE_URL = `postgresql://digdag:${secrets.dbPassword}@127.0.0.1:5432/digdag`;
  process.env.PGPASSWORD = secrets.postgresPassword;
  process.env.MY_API_TOKEN = 'tok-123456';
  process.env.INNOCENT_NAME = `x${secrets.apiPassword}`;
  process.env.DIGDAG_CONFIG = `server.authenticator.basic.password = ${secrets.apiPassword}`;
  const envFile = path.join(stateRoot, 'inherited.env');
  try {
    // The same call apply makes for a role process (tasks/apply.ts startOne); the child stands in for
    // the agent JVM and records the environment it would hand to a sh> task.
    const pid = await runner.spawnBackground({
      argv: ['sh', '-c', 'env > "$0"; sleep 60; true', envFile, '-c', path.join(config.stateDir, 'props', 'agent-1.properties')],
      logFile: path.join(stateRoot, 'agent.log'),
      env: { DIGDAG_HA_ROLE: 'agent', DIGDAG_HA_INSTANCE: 'agent-1' },
      cwd: stateRoot,
    });
    started.push(pid);
    assert.ok(await waitFor(() => fs.existsSync(envFile) && fs.statSync(envFile).size > 0, 5000));
  } finally {
    process.env = saved;
  }
  const env = fs.readFileSync(envFile, 'utf8');
  assertFree('the inherited environment', env);
  assert.ok(!/^(DATABASE_URL|PGPASSWORD|MY_API_TOKEN|INNOCENT_NAME|DIGDAG_CONFIG)=/m.test(env), env);
  assert.match(env, /^DIGDAG_HA_ROLE=agent$/m);
  const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
  assert.ok(ps.includes(envFile), 'the stand-in process is in the ps output');
  assertFree('ps output', ps);
  assertFree('the runner log', lines.join('\n'));
});

test('a command line that would carry the Authorization header is masked in logs', async () => {
  const header = authorizationHeader(apiCredentials(config)!);
  await runner.run({ argv: ['true', '-H', `Authorization: ${header}`] });
  assert.ok(lines.some((l) => l.includes('Authorization: Basic ***')));
  assertFree('the runner log', lines.join('\n'));
  assert.match(htpasswdLine(apiCredentials(config)!), /^digdag:\$apr1\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{22}\n$/);
  assertFree('the htpasswd line', htpasswdLine(apiCredentials(config)!));
});

test('rendered Kubernetes manifests (ConfigMaps included) hold no generated secret', async () => {
  const kube = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_STATE_DIR: stateRoot });
  ensureSecrets(kube);
  const { yaml, objects } = await renderManifests(kube, runner);
  assert.ok(objects.some((o) => o.kind === 'ConfigMap'));
  const kubeValues = (() => {
    const { secrets } = ensureSecrets(kube);
    return [secrets.dbPassword, secrets.encryptionKey, secrets.postgresPassword, secrets.apiPassword];
  })();
  for (const v of [...secretValues(), ...kubeValues]) assert.ok(!yaml.includes(v), 'the rendered YAML contains a generated secret');
});

// Needs Digdag itself: 401 without or with wrong credentials on a role's port, 200 with them,
// /api/version open, and no secret in that JVM's ps line.
test('real Digdag: no credentials or a wrong password → 401; the generated ones → 200', { timeout: 300_000 }, async (t: TestContext) => {
  const rtConfig = testConfig({ ...runtimeVars, DIGDAG_HA_STATE_DIR: stateRoot });
  const unavailable = await prepareRuntime(rtConfig, runner);
  if (unavailable) {
    t.skip(`no Digdag runtime on this machine: ${unavailable}`);
    return;
  }
  const { secrets } = ensureSecrets(rtConfig);
  const port = await freePortRange(1, 61200);
  const props = path.join(rtConfig.stateDir, 'props', 'auth-check.properties');
  writePrivateFile(props, `server.bind = 127.0.0.1\nserver.port = ${port}\ndatabase.type = memory\n` + authProperties(apiCredentials(rtConfig, secrets)));
  const java = await detectJava(rtConfig, runner);
  const pid = await runner.spawnBackground({ argv: digdagArgv(java, requireRuntime(rtConfig), [], ['server', '-c', props, '--disable-local-agent']), logFile: path.join(stateRoot, 'auth-check.log'), cwd: stateRoot });
  started.push(pid);
  const url = `http://127.0.0.1:${port}`;
  assert.ok(await waitFor(async () => (await fetch(`${url}/api/version`).catch(() => undefined))?.ok ?? false, 120_000, 500), 'Digdag did not answer /api/version');
  assert.equal((await fetch(`${url}/api/projects`)).status, 401);
  const wrong = `Basic ${Buffer.from(`${rtConfig.security.authUser}:wrong-password-xyz`).toString('base64')}`;
  assert.equal((await fetch(`${url}/api/projects`, { headers: { authorization: wrong } })).status, 401);
  assert.ok(!fs.readFileSync(path.join(stateRoot, 'auth-check.log'), 'utf8').includes('wrong-password-xyz'), 'the server log shows the wrong password');
  await getJson(authenticatedEndpoint(rtConfig, url), '/api/projects');
  assertFree('ps output', spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout);
});
