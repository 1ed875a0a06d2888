// How a person gets in, checked for real on a running Digdag (local target or through a
// port-forward to the cluster): the web UI in headless Chromium and the `digdag` CLI with the
// 0600 client config create-secret/push-workflow wrote — and both refused without credentials.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { apiCredentials, authenticatedEndpoint, clientConfigFile } from '../../lib/auth.ts';
import type { Config } from '../../lib/config.ts';
import { waitAttempt } from '../../lib/digdag-api.ts';
import { CLIENT_JVM_OPTS, detectJava, digdagArgv, requireRuntime } from '../../lib/digdag.ts';
import { SAMPLE_PROJECT } from '../../lib/push-workflow.ts';
import type { Runner } from '../../lib/runner.ts';
import { chromiumBin, uiLogin } from './browser.ts';

/** The web UI: login form, a wrong password sends you back to it, the right one shows the
 * sample project; a header-less same-origin fetch (task-log downloads) is authenticated too.
 * Returns why it could not run (no browser installed), else undefined. */
export async function proveBrowserLogin(config: Config, url: string, screenshot?: string): Promise<string | undefined> {
  const bin = chromiumBin();
  if (!bin) return 'no Chromium on this machine (apt-get install chromium)';
  const creds = apiCredentials(config);
  assert.ok(creds, 'AUTH=basic expected');
  const r = await uiLogin(bin, url, creds.user, creds.password, SAMPLE_PROJECT, 'wrong-password-in-browser', screenshot);
  assert.ok(r.loginFormShown, 'the UI shows its login form');
  assert.ok(r.wrongBackToForm, 'a wrong password returns to the login form');
  assert.equal(r.wrongStored, null, 'a wrong password is not kept in the browser');
  assert.ok(r.projectListShown, `after logging in the UI lists ${SAMPLE_PROJECT}: ${r.text.slice(0, 300)}`);
  assert.equal(r.bareFetchStatus, 200, 'a same-origin request without headers (task-log download) carries the credentials');
  return undefined;
}

/** The digdag CLI: `digdag start` with the client config starts an attempt that succeeds;
 * without it the server answers 401. */
export async function proveCliLogin(config: Config, runner: Runner, url: string): Promise<void> {
  const java = await detectJava(config, runner);
  const rt = requireRuntime(config);
  const clientFile = clientConfigFile(config);
  assert.equal(fs.statSync(clientFile).mode & 0o777, 0o600, `${clientFile} is 0600`);
  const cli = (args: string[]) => runner.run({ argv: digdagArgv(java, rt, CLIENT_JVM_OPTS, args), nothrow: true, quiet: true, cwd: path.dirname(clientFile) });
  // -e overrides the file's endpoint (the port-forward may have moved); the header comes from -c.
  const started = await cli(['start', SAMPLE_PROJECT, 'parallel', '--session', 'now', '-p', 'tasks=1', '-p', 'sleep_seconds=0', '-e', url, '-c', clientFile]);
  assert.equal(started.code, 0, `digdag start with ${clientFile}: ${started.stdout}\n${started.stderr}`);
  const attempt = /attempt id: (\d+)/.exec(started.stdout)?.[1];
  assert.ok(attempt, started.stdout);
  assert.ok((await waitAttempt(authenticatedEndpoint(config, url), attempt, 180_000)).success, `attempt ${attempt} started by the CLI succeeds`);
  // An empty config file: no header. (Without -c the CLI would read ~/.config/digdag/config.)
  const empty = path.join(path.dirname(clientFile), 'empty-client.properties');
  fs.writeFileSync(empty, '', { mode: 0o600 });
  const refused = await cli(['workflows', '-e', url, '-c', empty]).finally(() => fs.rmSync(empty, { force: true }));
  assert.notEqual(refused.code, 0, 'the CLI without credentials is refused');
  assert.match(`${refused.stdout}\n${refused.stderr}`, /401|Unauthorized|Authentication/i);
}
