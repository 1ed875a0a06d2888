// The web UI's login overlay: the config.js digdag-ui reads (run here in a VM context with a
// stand-in window), and the server argv that puts it ahead of the jar on the classpath.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import vm from 'node:vm';
import { apiCredentials, lockedAuthProperties, roleAuthProperties } from '../../lib/auth.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { DIGDAG_MAIN, digdagArgv, javaFlags, writeRuntime } from '../../lib/digdag.ts';
import { planLocal } from '../../lib/local/apply.ts';
import { parseProperties } from '../../lib/properties.ts';
import { uiConfigJs, uiOverlayDir, UI_CONFIG_RESOURCE, writeUiOverlay } from '../../lib/ui-login.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

interface AuthItem { key: string; type: string; validate: (a: object) => void; scrub: (a: { key: string; value: string }) => string }
interface UiConfig { url: string; auth: { items: AuthItem[] }; headers: (a: { credentials: Record<string, string> }) => Record<string, string> }

/** Loads config.js as the browser would, in front of a recording fetch. */
function loadConfigJs(stored: Record<string, string> | null, status = 200) {
  const storage = new Map<string, string>(stored ? [['digdag.credentials', JSON.stringify(stored)]] : []);
  const calls: { url: string; headers: Headers }[] = [];
  let reloads = 0;
  const window: Record<string, unknown> = {
    location: { origin: 'http://127.0.0.1:65432', href: 'http://127.0.0.1:65432/projects', reload: () => reloads++ },
    localStorage: { getItem: (k: string) => storage.get(k) ?? null, removeItem: (k: string) => storage.delete(k) },
    btoa: (s: string) => Buffer.from(s, 'latin1').toString('base64'),
    fetch: async (input: string, init?: { headers?: Headers }) => {
      calls.push({ url: input, headers: new Headers(init?.headers) });
      return { status };
    },
  };
  vm.runInNewContext(uiConfigJs(), { window, URL, Headers, JSON, String, Object, unescape, encodeURIComponent });
  // Plain copies of values made in the VM's realm (deepEqual compares prototypes).
  const config = window.DIGDAG_CONFIG as UiConfig;
  const headers = (a: { credentials: Record<string, string> }) => ({ ...config.headers(a) });
  return { config: { ...config, headers }, fetch: window.fetch as (u: string, i?: object) => Promise<{ status: number }>, calls, storage, reloads: () => reloads };
}

test('config.js: a login form whose items each have validate and scrub; headers() builds the Basic header', () => {
  const { config } = loadConfigJs(null);
  assert.equal(config.url, '/api/');
  assert.deepEqual(JSON.parse(JSON.stringify(config.auth.items.map((i) => [i.key, i.type]))), [['username', 'text'], ['password', 'password']]);
  for (const item of config.auth.items) {
    assert.equal(typeof item.scrub, 'function', `${item.key} needs its own scrub (LoginPage's fallback throws)`);
    assert.equal(typeof item.validate, 'function');
  }
  assert.equal(config.auth.items[0]!.scrub({ key: 'username', value: ' digdag ' }), 'digdag');
  assert.equal(config.auth.items[1]!.scrub({ key: 'password', value: ' p w ' }), ' p w ', 'passwords are kept as typed');
  const valid: string[] = [];
  const invalid: string[] = [];
  config.auth.items[1]!.validate({ key: 'password', value: '', valid: (k: string) => valid.push(k), invalid: (k: string) => invalid.push(k) });
  assert.deepEqual([valid, invalid], [[], ['password']]);
  config.auth.items[1]!.validate({ key: 'password', value: 'x', valid: (k: string) => valid.push(k), invalid: (k: string) => invalid.push(k) });
  assert.deepEqual(valid, ['password']);
  assert.deepEqual(config.headers({ credentials: { username: 'digdag', password: 's3cr-et_' } }), { Authorization: `Basic ${Buffer.from('digdag:s3cr-et_').toString('base64')}` });
  assert.deepEqual(config.headers({ credentials: {} }), {});
  assert.ok(!/password\s*[:=]\s*['"][^'"]+['"]/.test(uiConfigJs()), 'no password in the file');
});

test('config.js: same-origin /api/ requests without a header get it (task-log downloads); other origins never', async () => {
  const creds = { username: 'digdag', password: 'pw' };
  const { fetch, calls } = loadConfigJs(creds);
  await fetch('/api/logs/1/files/x.gz/download');
  await fetch('https://storage.example.com/presigned?sig=1');
  await fetch('/assets/app.css');
  await fetch('http://127.0.0.1:65432/api/projects', { headers: { Authorization: 'Basic other' } });
  const auth = calls.map((c) => c.headers.get('authorization'));
  assert.deepEqual(auth, [`Basic ${Buffer.from('digdag:pw').toString('base64')}`, null, null, 'Basic other']);
});

test('config.js: a 401 with stored credentials forgets them and reloads to the login form', async () => {
  const { fetch, storage, reloads } = loadConfigJs({ username: 'digdag', password: 'wrong' }, 401);
  await fetch('/api/projects');
  await fetch('/api/projects');
  assert.equal(storage.size, 0);
  assert.equal(reloads(), 1);
});

test('the overlay is written where the class loader finds public/config.js', () => {
  const config = testConfig();
  const dir = writeUiOverlay(config);
  assert.equal(dir, uiOverlayDir(config));
  assert.equal(fs.readFileSync(path.join(dir, UI_CONFIG_RESOURCE), 'utf8'), uiConfigJs());
  assert.equal(UI_CONFIG_RESOURCE, path.join('public', 'config.js'));
});

test('digdagArgv: -jar without an overlay; -cp overlay:jar io.digdag.cli.Main with one (jar and Maven classpath)', () => {
  const java = { bin: 'java', major: 17, flags: [] };
  const jar = { kind: 'jar' as const, path: '/c/digdag.jar', version: '0.10.5.1', source: 't' };
  const lib = { kind: 'classpath' as const, path: '/c/lib', version: '0.10.5.1', source: 't' };
  assert.deepEqual(digdagArgv(java, jar, ['-Xmx1g'], ['server']), ['java', '-Xmx1g', '-jar', '/c/digdag.jar', 'server']);
  assert.deepEqual(digdagArgv(java, jar, [], ['server'], '/s/ui-overlay'), ['java', '-cp', '/s/ui-overlay:/c/digdag.jar', DIGDAG_MAIN, 'server']);
  assert.deepEqual(digdagArgv(java, lib, [], ['server'], '/s/ui-overlay'), ['java', '-cp', '/s/ui-overlay:/c/lib/*', DIGDAG_MAIN, 'server']);
  assert.equal(DIGDAG_MAIN, 'io.digdag.cli.Main');
});

test('local plan: only the UI serves the login page; AUTH=none runs every role from the jar', async () => {
  for (const auth of ['basic', 'none']) {
    // The task-callback patch off: this is about the login page alone (local-tasks.test.ts has both).
    const config = testConfig({ AUTH: auth, DIGDAG_PATCHES: 'false' });
    ensureSecrets(config);
    const jar = path.join(tempDir(), 'digdag.jar');
    fs.writeFileSync(jar, '');
    writeRuntime(config, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
    const plan = await planLocal(config, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
    for (const p of plan) {
      const login = auth === 'basic' && p.instance.role === 'ui';
      assert.equal(p.loginPage, login, p.instance.name);
      assert.equal(p.argv.includes('-jar'), !login, p.instance.name);
      if (login) assert.deepEqual(p.argv.slice(p.argv.indexOf('-cp'), p.argv.indexOf('server')), ['-cp', `${uiOverlayDir(config)}:${jar}`, DIGDAG_MAIN]);
    }
  }
});

test('local plan: with UI_REPLICAS=0 the first role that runs answers the endpoint and gets the password', async () => {
  const config = testConfig({ UI_REPLICAS: '0', SCHEDULER_REPLICAS: '0' });
  ensureSecrets(config);
  const jar = path.join(tempDir(), 'digdag.jar');
  fs.writeFileSync(jar, '');
  const plan = await planLocal(config, { bin: 'java', major: 17, flags: [] }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  assert.deepEqual(plan.map((p) => [p.instance.name, p.port - config.local.portBase, p.servesUsers]), [['worker-1', 0, true], ['worker-2', 1, true]]);
});

test('role auth: the real password only where people log in, a throw-away one elsewhere, nothing with AUTH=none', () => {
  const config = testConfig();
  const { secrets } = ensureSecrets(config);
  const creds = apiCredentials(config)!;
  const ui = parseProperties(roleAuthProperties(true, creds));
  assert.equal(ui.get('server.authenticator.type'), 'basic');
  assert.equal(ui.get('server.authenticator.basic.username'), 'digdag');
  assert.equal(ui.get('server.authenticator.basic.password'), secrets.apiPassword);
  for (const role of ['worker', 'scheduler', 'agent', 'workflow'] as const) {
    const p = parseProperties(roleAuthProperties(false, creds));
    assert.equal(p.get('server.authenticator.basic.username'), 'digdag');
    assert.notEqual(p.get('server.authenticator.basic.password'), secrets.apiPassword, role);
    assert.ok((p.get('server.authenticator.basic.password') ?? '').length >= 32);
  }
  assert.notEqual(lockedAuthProperties('digdag'), lockedAuthProperties('digdag'), 'a new throw-away password each time');
  assert.equal(roleAuthProperties(true, apiCredentials(testConfig({ AUTH: 'none' }))), '');
});
