// The front door on the own cluster, for real (kube-e2e): Traefik (CLUSTER_ADDONS=traefik,
// lib/cluster/traefik.ts) serving the release's Ingress exactly as rendered for nginx. TLS comes
// from a CA made here with openssl through INGRESS_TLS=existingSecret; the edge asks for the API
// user and password (EDGE_AUTH=nginx-basic). Proves: HTTP → HTTPS; the certificate served is the
// Secret's and chains to the CA; 401 at the edge without credentials (and at Digdag itself); 200
// with them; two UI pods behind it, a session sticking to one by its cookie; the login form in
// headless Chromium through it; `digdag push`/`start` with `client.http.endpoint = https://…`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { apiCredentials, authorizationHeader, clientConfig } from '../../lib/auth.ts';
import type { ClusterConfig } from '../../lib/cluster/config.ts';
import { TRAEFIK_ADDRESS, TRAEFIK_PORTS, traefikMissing } from '../../lib/cluster/traefik.ts';
import type { Config } from '../../lib/config.ts';
import { waitAttempt } from '../../lib/digdag-api.ts';
import type { AuthEndpoint } from '../../lib/digdag.ts';
import { CLIENT_JVM_OPTS, detectJava, digdagArgv, requireRuntime } from '../../lib/digdag.ts';
import { probeIngress } from '../../lib/kube/ingress-probe.ts';
import { POD_PORT } from '../../lib/kube/render.ts';
import type { Ctx } from '../../lib/pipeline.ts';
import { waitFor } from '../../lib/processes.ts';
import type { Result, Runner } from '../../lib/runner.ts';
import { Browser, chromiumBin } from './browser.ts';
import { SAMPLE_PROJECT } from '../../lib/push-workflow.ts';

/** The Ingress host: a name only this test resolves (Host/SNI, the JVM hosts file, Chromium's resolver rule). */
export const FRONT_DOOR_HOST = 'digdag-ha.test';
const COOKIE = 'digdag-ui';

export interface FrontDoor {
  /** Why the front door cannot be tested here (Traefik not built), or undefined. */
  missing?: string;
  /** The config variables of a deployment behind it. */
  vars: Record<string, string>;
}

/** The deployment's settings for the front door; CLUSTER_ADDONS=traefik only when Traefik is built. */
export function frontDoor(cc: ClusterConfig): FrontDoor {
  const missing = traefikMissing(cc)[0];
  const vars = { INGRESS_TLS: 'existingSecret', INGRESS_HOST: FRONT_DOOR_HOST, EDGE_AUTH: 'nginx-basic' };
  return missing ? { missing, vars } : { vars: { ...vars, CLUSTER_ADDONS: [...cc.addons, 'traefik'].join(',') } };
}

interface Pki {
  ca: string;
  cert: string;
  key: string;
  truststore: string;
  truststorePassword: string;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** A CA and a certificate for FRONT_DOOR_HOST, made with openssl (cert-manager cannot run here). */
function makePki(dir: string): Pki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  if (fs.existsSync(f('truststore.p12'))) return { ca: f('ca.pem'), cert: f('tls.crt'), key: f('tls.key'), truststore: f('truststore.p12'), truststorePassword: 'front-door' };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=digdag-ha front door test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', ...ec, '-keyout', f('tls.key'), '-out', f('tls.csr'), '-subj', `/CN=${FRONT_DOOR_HOST}`]);
  fs.writeFileSync(f('tls.ext'), `subjectAltName=DNS:${FRONT_DOOR_HOST}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['x509', '-req', '-in', f('tls.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('tls.crt'), '-days', '2', '-extfile', f('tls.ext')]);
  execFileSync('keytool', ['-importcert', '-noprompt', '-alias', 'digdag-ha-front-door-ca', '-file', f('ca.pem'), '-keystore', f('truststore.p12'), '-storetype', 'PKCS12', '-storepass', 'front-door'], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (const k of ['ca.key', 'tls.key']) fs.chmodSync(f(k), 0o600);
  return { ca: f('ca.pem'), cert: f('tls.crt'), key: f('tls.key'), truststore: f('truststore.p12'), truststorePassword: 'front-door' };
}

type Kubectl = (args: string[], input?: string) => Promise<Result>;

/** The Ingress's TLS Secret (INGRESS_TLS_SECRET) from the test CA, in the release's namespace: before the pipeline's ingress step. */
export async function applyTlsSecret(config: Config, dir: string, k: Kubectl): Promise<void> {
  const pki = makePki(dir);
  const secret = { apiVersion: 'v1', kind: 'Secret', type: 'kubernetes.io/tls', metadata: { name: config.security.tlsSecret },
    data: { 'tls.crt': fs.readFileSync(pki.cert).toString('base64'), 'tls.key': fs.readFileSync(pki.key).toString('base64') } };
  const r = await k(['apply', '-f', '-'], JSON.stringify(secret));
  assert.equal(r.code, 0, r.stderr);
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  fingerprint?: string;
  authorized?: boolean;
}

/** One HTTPS request to the controller for FRONT_DOOR_HOST, trusting only the test CA. */
function get(pki: Pki, p: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: TRAEFIK_ADDRESS, port: TRAEFIK_PORTS.https, servername: FRONT_DOOR_HOST, path: p, headers: { host: FRONT_DOOR_HOST, ...headers }, ca: fs.readFileSync(pki.ca), agent: false, timeout: 10_000 }, (res) => {
      const s = res.socket as tls.TLSSocket;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, fingerprint: s.getPeerCertificate().fingerprint256, authorized: s.authorized }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const setCookie = (a: Answer) => [a.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith(`${COOKIE}=`));

/**
 * Everything through the Ingress. `k` is kubectl in the release's namespace; `apiUrl` the
 * port-forward (Digdag without the edge); the UI is scaled to two pods for the affinity check
 * and back to its configured count after.
 */
export async function proveFrontDoor(o: { ctx: Ctx; runner: Runner; dir: string; k: Kubectl; apiUrl: string; log: (l: string) => void }): Promise<{ browserSkipped?: string }> {
  const { ctx, runner, k, log } = o;
  const config = ctx.config;
  const pki = makePki(o.dir);
  const creds = apiCredentials(config);
  assert.ok(creds, 'AUTH=basic expected');
  const auth = { authorization: authorizationHeader(creds) };
  const url = `https://${FRONT_DOOR_HOST}`;

  // The ingress task and verify-ha met the controller: the address it published, their probe passing.
  assert.equal(ctx.facts.ingressAddress, TRAEFIK_ADDRESS, 'the ingress task found the address Traefik published in the Ingress status');
  const edge = ctx.facts.checks?.find((c) => /through the Ingress/.test(c.what));
  assert.ok(edge?.ok, `verify-ha's Ingress check passed: ${edge?.detail ?? 'not run'}`);
  const probe = await probeIngress(config, { address: TRAEFIK_ADDRESS, certificate: fs.readFileSync(pki.cert, 'utf8') });
  assert.ok(probe.ok, probe.detail);
  assert.match(probe.detail, new RegExp(`http → 30[18] https://${FRONT_DOOR_HOST.replace(/\./g, '\\.')}/api/version`));
  assert.match(probe.detail, /no credentials → 401.*credentials → 200/);
  log(`probe: ${probe.detail}`);

  // The certificate chains to the test CA for the host (not merely pinned) and is the Secret's.
  const open = await get(pki, '/api/version', auth);
  assert.equal(open.authorized, true, 'the served certificate verifies against the test CA for the host');
  assert.equal(open.fingerprint, new crypto.X509Certificate(fs.readFileSync(pki.cert)).fingerprint256, 'the certificate served is the one in the Secret');
  // 401 at the edge (its realm: Digdag's own 401 has none) and at Digdag itself (no edge in front).
  const noCreds = await get(pki, '/api/projects', {});
  assert.equal(noCreds.status, 401);
  assert.match(String(noCreds.headers['www-authenticate']), /^Basic realm="Digdag"/, 'the edge answered: a browser would prompt');
  const direct = await fetch(`${o.apiUrl}/api/projects`);
  assert.equal(direct.status, 401, 'Digdag itself refuses without credentials');
  const wrong = await get(pki, '/api/projects', { authorization: `Basic ${Buffer.from(`${creds.user}:not-the-password`).toString('base64')}` });
  assert.equal(wrong.status, 401, 'a wrong password is refused at the edge');
  assert.equal((await get(pki, '/api/projects', auth)).status, 200);

  // Two UI pods behind the Ingress; a session's cookie keeps it on one. Traefik's cookie value
  // names the backend: the first 16 hex digits of sha256("http://<pod IP>:<port>").
  const uiReplicas = config.replicas.ui;
  assert.equal((await k(['scale', 'deployment/digdag-ui', '--replicas=2'])).code, 0);
  try {
    const rollout = await k(['rollout', 'status', 'deployment/digdag-ui', '--timeout=300s']);
    assert.equal(rollout.code, 0, rollout.stderr);
    const ips = (await k(['get', 'pods', '-l', 'app.kubernetes.io/component=ui', '--field-selector=status.phase=Running', '-o', 'jsonpath={.items[*].status.podIP}'])).stdout.trim().split(/\s+/).filter(Boolean);
    assert.equal(ips.length, 2, `two UI pods: ${ips.join(' ')}`);
    const cookieOf = new Map(ips.map((ip) => [crypto.createHash('sha256').update(`http://${ip}:${POD_PORT}`).digest('hex').slice(0, 16), ip]));
    const seen = new Set<string>();
    // Bounded: the controller picks up the second endpoint once the pod is Ready.
    const both = await waitFor(async () => {
      const a = await get(pki, '/api/projects', auth);
      const c = setCookie(a);
      if (a.status === 200 && c) seen.add(/^[^=]+=([^;]*)/.exec(c)![1]!);
      return [...cookieOf.keys()].every((v) => seen.has(v));
    }, 60_000, 100);
    assert.ok(both, `without a cookie the requests reach both UI pods (${[...cookieOf.values()].join(', ')}); cookies seen: ${[...seen].join(', ')}`);
    const first = await get(pki, '/', auth);
    const cookie = setCookie(first);
    assert.ok(cookie, 'a new session gets the affinity cookie');
    assert.match(cookie, /; Path=\/.*HttpOnly/i);
    const value = /^[^=]+=([^;]*)/.exec(cookie)![1]!;
    assert.ok(cookieOf.has(value), `the cookie names one of the UI pods: ${value}`);
    for (let i = 0; i < 20; i++) {
      const a = await get(pki, '/api/projects', { ...auth, cookie: `${COOKIE}=${value}` });
      assert.equal(a.status, 200);
      assert.equal(setCookie(a), undefined, `request ${i + 1} with the cookie stayed on ${cookieOf.get(value)} (no new cookie)`);
    }
    log(`affinity: two UI pods (${ips.join(', ')}), the session stuck to ${cookieOf.get(value)}`);

    // The browser and the CLI with both UI pods still up: scaling back first raced (CI 2026-12-02
    // 16:18: the browser's first page went to the pod being removed and stayed blank).
    // A person in a browser: Chromium resolves the host to the controller and accepts exactly this
    // certificate's key. Without the password the edge answers (its 401, not the UI); with it (the
    // edge's prompt answered) the UI's login form, then the project list.
    const cert = new crypto.X509Certificate(fs.readFileSync(pki.cert));
    const spki = crypto.createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    const browserSkipped = await browserThroughEdge(config, `--host-resolver-rules=MAP ${FRONT_DOOR_HOST} ${TRAEFIK_ADDRESS}`, `--ignore-certificate-errors-spki-list=${spki}`, log);

    // The CLI as the write-up points it: a client config whose endpoint is the Ingress; the JVM
    // resolves the host by a hosts file and trusts the test CA by a truststore.
    const hosts = path.join(o.dir, 'hosts');
    fs.writeFileSync(hosts, `${TRAEFIK_ADDRESS} ${FRONT_DOOR_HOST}\n`);
    const clientFile = path.join(o.dir, 'client.properties');
    fs.writeFileSync(clientFile, clientConfig(url, creds), { mode: 0o600 });
    const project = path.join(o.dir, 'front-door');
    fs.mkdirSync(project, { recursive: true });
    fs.writeFileSync(path.join(project, 'hello.dig'), '+hello:\n  echo>: through the front door\n');
    const java = await detectJava(config, runner);
    const jvm = [...CLIENT_JVM_OPTS, `-Djdk.net.hosts.file=${hosts}`, `-Djavax.net.ssl.trustStore=${pki.truststore}`, `-Djavax.net.ssl.trustStorePassword=${pki.truststorePassword}`, '-Djavax.net.ssl.trustStoreType=PKCS12'];
    const cli = (args: string[]) => runner.run({ argv: digdagArgv(java, requireRuntime(config), jvm, [...args, '-c', clientFile]), nothrow: true, quiet: true, cwd: o.dir, timeoutMs: 180_000 });
    const pushed = await cli(['push', 'front-door', '--project', project, '-r', `front-door-${Date.now()}`]);
    assert.equal(pushed.code, 0, `digdag push through ${url}: ${pushed.stdout}\n${pushed.stderr}`);
    const started = await cli(['start', 'front-door', 'hello', '--session', 'now']);
    assert.equal(started.code, 0, `digdag start through ${url}: ${started.stdout}\n${started.stderr}`);
    const attempt = /attempt id: (\d+)/.exec(started.stdout)?.[1];
    assert.ok(attempt, started.stdout);
    const endpoint: AuthEndpoint = { url: o.apiUrl, authorization: auth.authorization };
    assert.ok((await waitAttempt(endpoint, attempt, 180_000)).success, `attempt ${attempt} started through the Ingress succeeds`);
    log(`CLI: push and start through ${url} (client.http.endpoint), attempt ${attempt} succeeded`);
    return { browserSkipped };
  } finally {
    await k(['scale', 'deployment/digdag-ui', `--replicas=${uiReplicas}`]);
  }
}

/** The login form through the edge in headless Chromium; returns why it could not run (no browser). */
async function browserThroughEdge(config: Config, resolve: string, pin: string, log: (l: string) => void): Promise<string | undefined> {
  const bin = chromiumBin();
  if (!bin) return 'no Chromium on this machine (apt-get install chromium)';
  const creds = apiCredentials(config)!;
  const browser = Browser.launch(bin, [resolve, pin]);
  try {
    // The edge's prompt cancelled: its 401 page, not the UI.
    const stranger = await browser.newPage();
    await stranger.answerAuth(null);
    await stranger.navigate(`https://${FRONT_DOOR_HOST}/`);
    const refused = await stranger.waitText(/401|Unauthorized/);
    assert.ok(refused.ok && !/Log in to Digdag/.test(refused.text), `without the password the edge refuses the browser: ${refused.text.slice(0, 200)}`);
    // The prompt answered with the user and password, as a person would.
    const page = await browser.newPage();
    await page.answerAuth({ user: creds.user, password: creds.password });
    await page.navigate(`https://${FRONT_DOOR_HOST}/`);
    let form = await page.waitText(/Log in to Digdag/);
    if (!form.ok) {
      // Seen once (CI, 2026-12-02 16:18, while the second UI pod was being removed — now done
      // after this part): a blank page 30 s after the answered prompt. What the page had, for
      // whoever reads the log; then one reload, as a person would.
      const seen = await page
        .evaluate<string>("JSON.stringify({ state: document.readyState, url: location.href, resources: performance.getEntriesByType('resource').map((e) => e.name.replace(location.origin, '') + ' ' + Math.round(e.duration) + 'ms ' + (e.responseStatus ?? '')) })")
        .catch((e: unknown) => String(e));
      log(`browser: no login form 30 s after the answered prompt (${seen}); reloading once`);
      await page.navigate(`https://${FRONT_DOOR_HOST}/`);
      form = await page.waitText(/Log in to Digdag/);
    }
    assert.ok(form.ok, `past the edge, the UI's login form: ${form.text.slice(0, 200)}`);
    const fill = (pw: string) =>
      page.evaluate<number>(`(() => {
        const inputs = document.querySelectorAll('form input');
        const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        set.call(inputs[0], ${JSON.stringify(creds.user)}); inputs[0].dispatchEvent(new Event('input', { bubbles: true }));
        set.call(inputs[1], ${JSON.stringify(pw)}); inputs[1].dispatchEvent(new Event('input', { bubbles: true }));
        document.querySelector('form button[type=submit]').click();
        return inputs.length;
      })()`);
    await fill(creds.password);
    const list = await page.waitText(new RegExp(SAMPLE_PROJECT));
    assert.ok(list.ok && !/Log in to Digdag/.test(list.text), `after logging in the UI lists ${SAMPLE_PROJECT} through the Ingress: ${list.text.slice(0, 300)}`);
    assert.equal(await page.evaluate<number>("fetch('/api/projects').then((r) => r.status)"), 200, 'a same-origin request without headers (task-log download) passes the edge and Digdag');
    log(`browser: the edge's 401 without the password, the login form past it, ${SAMPLE_PROJECT} listed`);
    return undefined;
  } finally {
    await browser.close();
  }
}
