// The Ingress probe against real HTTP and HTTPS servers on loopback standing in for the
// controller (a self-signed certificate made with openssl, like nginx's default one): each thing
// it must catch — no redirect, an API open without credentials, credentials refused — fails it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { apiCredentials, authorizationHeader } from '../../lib/auth.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { probeIngress } from '../../lib/kube/ingress-probe.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const dir = tempDir('ingress-probe-');
const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_STATE_DIR: dir });
ensureSecrets(config);
const good = authorizationHeader(apiCredentials(config)!);

/** How the stand-in behaves; each test sets it. */
let mode = { redirect: true, openWithoutAuth: false, iap: false };
const servers: (http.Server | https.Server)[] = [];
let httpPort = 0;
let httpsPort = 0;

function api(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (mode.iap) return void res.writeHead(302, { location: 'https://accounts.google.com/o/oauth2/auth' }).end();
  if (req.url === '/api/projects' && !mode.openWithoutAuth && req.headers.authorization !== good) return void res.writeHead(401).end('{"status":401}');
  res.writeHead(200, { 'content-type': 'application/json' }).end('{"projects":[]}');
}

const listen = (s: http.Server | https.Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

before(async () => {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=Kubernetes Ingress Controller Fake Certificate'], { encoding: 'utf8' });
  assert.equal(ssl.status, 0, ssl.stderr);
  const tls = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, api);
  httpsPort = await listen(tls);
  const plain = http.createServer((req, res) => {
    if (mode.redirect) return void res.writeHead(308, { location: `https://${req.headers.host}${req.url}` }).end();
    api(req, res);
  });
  httpPort = await listen(plain);
  servers.push(tls, plain);
});

after(() => {
  for (const s of servers) s.close();
});

const target = () => ({ address: '127.0.0.1', httpPort, httpsPort });

test('TLS on: redirect, 401 without credentials, 200 with them; the self-signed certificate is named', async () => {
  mode = { redirect: true, openWithoutAuth: false, iap: false };
  const r = await probeIngress(config, target());
  assert.equal(r.ok, true, r.detail);
  assert.match(r.detail, /http → 308 https:\/\//);
  assert.match(r.detail, /no credentials → 401/);
  assert.match(r.detail, /generated credentials → 200/);
  assert.match(r.detail, /certificate not trusted/);
  assert.equal(r.url, 'https://127.0.0.1');
});

test('plain HTTP answering instead of redirecting fails the probe', async () => {
  mode = { redirect: false, openWithoutAuth: false, iap: false };
  const r = await probeIngress(config, target());
  assert.equal(r.ok, false);
  assert.match(r.detail, /NOT redirected/);
});

test('an API open without credentials fails the probe', async () => {
  mode = { redirect: true, openWithoutAuth: true, iap: false };
  const r = await probeIngress(config, target());
  assert.equal(r.ok, false);
  assert.match(r.detail, /no credentials → 200/);
});

test('credentials refused (another password on the servers) fails the probe', async () => {
  mode = { redirect: true, openWithoutAuth: false, iap: false };
  const other = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_STATE_DIR: tempDir('ingress-probe-other-') });
  ensureSecrets(other);
  const r = await probeIngress(other, target());
  assert.equal(r.ok, false);
  assert.match(r.detail, /generated credentials → 401/);
});

test('INGRESS_TLS=none: plain HTTP is the way in, and says so', async () => {
  mode = { redirect: false, openWithoutAuth: false, iap: false };
  const plain = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_STATE_DIR: dir, INGRESS_TLS: 'none' });
  const r = await probeIngress(plain, target());
  assert.equal(r.ok, true, r.detail);
  assert.equal(r.url, 'http://127.0.0.1');
});

test('IAP in front: a request without a Google login must be refused (redirected to it)', async () => {
  const iap = testConfig({ DIGDAG_HA_TARGET: 'gke', DIGDAG_HA_STATE_DIR: dir, IMAGE: 'r.example/p/digdag-ha:0.10.5.1', INGRESS_HOST: 'digdag.example.com', INGRESS_TLS: 'gke-managed', EDGE_AUTH: 'iap', AUTH: 'none' });
  mode = { redirect: true, openWithoutAuth: false, iap: true };
  const r = await probeIngress(iap, target());
  assert.equal(r.ok, true, r.detail);
  assert.match(r.detail, /IAP: no Google login → 302/);
  assert.equal(r.url, 'https://digdag.example.com');
  mode = { redirect: true, openWithoutAuth: true, iap: false };
  assert.equal((await probeIngress(iap, target())).ok, false, 'an open API behind "IAP" fails');
});

test('the certificate the toolkit expects (the TLS Secret\'s): served → passes, named; another one served → fails', async () => {
  mode = { redirect: true, openWithoutAuth: false, iap: false };
  const served = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  const r = await probeIngress(config, { ...target(), certificate: served });
  assert.equal(r.ok, true, r.detail);
  assert.match(r.detail, /certificate served = the TLS Secret's \(CN=Kubernetes Ingress Controller Fake Certificate\)/);
  assert.doesNotMatch(r.detail, /not trusted/, 'pinned: trust comes from the Secret');
  const other = path.join(dir, 'other.pem');
  const ssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'other.key'), '-out', other, '-days', '1', '-subj', '/CN=another'], { encoding: 'utf8' });
  assert.equal(ssl.status, 0, ssl.stderr);
  const wrong = await probeIngress(config, { ...target(), certificate: fs.readFileSync(other, 'utf8') });
  assert.equal(wrong.ok, false);
  assert.match(wrong.detail, /certificate served is NOT the TLS Secret's/);
});
