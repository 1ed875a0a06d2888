// The Cloud SQL stand-ins of test/helpers/gcp on their own (no proxy, no PostgreSQL): the Admin API
// answers only tokens the authority minted and only its instance, signs a client's public key
// into a certificate of the instance CA; the instance listener takes only such a certificate and
// pipes the bytes through. What the real proxy does with them: test/integration/cloudsql-proxy.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { tempDir } from '../helpers/fixtures.ts';
import { startFakeSqlAdmin, type FakeSqlAdmin } from '../helpers/gcp/cloudsql-admin.ts';
import { startInstanceListener, type InstanceListener } from '../helpers/gcp/cloudsql-listener.ts';
import { makeCloudSqlInstancePki, makeTestPki, type CloudSqlInstancePki, type TestPki } from '../helpers/gcp/pki.ts';
import { newServiceAccountKey, TokenAuthority } from '../helpers/gcp/tokens.ts';

const INSTANCE = 'proj:asia-northeast1:inst';
const SA = 'digdag@proj.iam.gserviceaccount.com';
let authority: TokenAuthority;
let tlsPki: TestPki;
let instancePki: CloudSqlInstancePki;
let admin: FakeSqlAdmin;
let listener: InstanceListener;
let upstream: net.Server;
const received: Buffer[] = [];

before(async () => {
  const dir = tempDir('digdag-ha-cloudsql-unit-');
  authority = new TokenAuthority();
  authority.register({ email: SA, publicKey: newServiceAccountKey(SA, 'proj', 'https://oauth2.googleapis.com/token').publicKey });
  tlsPki = makeTestPki(path.join(dir, 'pki'), '127.0.0.1');
  instancePki = makeCloudSqlInstancePki(path.join(dir, 'instance'), INSTANCE);
  admin = await startFakeSqlAdmin({ tls: tlsPki, authority, connectionName: INSTANCE, instancePki, publicIp: '127.0.0.1', privateIp: '10.0.0.5', bind: '127.0.0.1' });
  upstream = net.createServer((s) => s.on('data', (b) => { received.push(b); s.write('N'); }));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  listener = await startInstanceListener({ pki: instancePki, bind: '127.0.0.1', port: 0, upstream: { host: '127.0.0.1', port: (upstream.address() as net.AddressInfo).port } });
});

after(async () => {
  await listener?.close();
  await admin?.close();
  await new Promise((r) => upstream?.close(r));
});

async function call(method: string, p: string, token?: string, body?: unknown): Promise<{ status: number; json: any }> {
  const { default: https } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${admin.url}${p}`, {
      method, ca: fs.readFileSync(tlsPki.caPem), headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/** The key pair a connector makes, and its public key as the Go connector sends it (PKIX in an "RSA PUBLIC KEY" block). */
function connectorKey() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = publicKey.export({ type: 'spki', format: 'der' }).toString('base64').replace(/.{64}/g, '$&\n');
  return { privateKey, pem: `-----BEGIN RSA PUBLIC KEY-----\n${der}\n-----END RSA PUBLIC KEY-----\n` };
}

const base = '/sql/v1beta4/projects/proj/instances/inst';

test('connectSettings: region, SECOND_GEN, both addresses, the instance CA — only with a minted token', async () => {
  const t = authority.mint(SA, 'metadata').token;
  const ok = await call('GET', `${base}/connectSettings?alt=json`, t);
  assert.equal(ok.status, 200);
  assert.equal(ok.json.region, 'asia-northeast1');
  assert.equal(ok.json.backendType, 'SECOND_GEN');
  assert.deepEqual(ok.json.ipAddresses, [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }, { type: 'PRIVATE', ipAddress: '10.0.0.5' }]);
  assert.equal(ok.json.serverCaCert.cert, fs.readFileSync(instancePki.caPem, 'utf8'));
  assert.equal(ok.json.mdxProtocolSupport, undefined, 'no metadata exchange announced');
  assert.equal((await call('GET', `${base}/connectSettings`, 'ya29.not-minted')).status, 401);
  assert.equal((await call('GET', `${base}/connectSettings`)).status, 401);
  const other = await call('GET', '/sql/v1beta4/projects/proj/instances/other/connectSettings', t);
  assert.equal(other.status, 404);
  assert.equal(other.json.error.message, 'The Cloud SQL instance does not exist.');
  const rec = admin.requests.find((r) => r.token === t)!;
  assert.equal(rec.minted?.email, SA);
  assert.equal(rec.kind, 'connectSettings');
});

test('generateEphemeralCert signs the given key with the instance CA (CN Google Cloud SQL Client, clientAuth)', async () => {
  const t = authority.mint(SA, 'metadata').token;
  const key = connectorKey();
  const res = await call('POST', `${base}:generateEphemeralCert`, t, { public_key: key.pem });
  assert.equal(res.status, 200);
  const cert = new crypto.X509Certificate(res.json.ephemeralCert.cert);
  assert.ok(cert.verify(new crypto.X509Certificate(fs.readFileSync(instancePki.caPem)).publicKey));
  assert.ok(cert.checkPrivateKey(key.privateKey), 'the certificate holds the key that was sent');
  assert.match(cert.subject, /CN=Google Cloud SQL Client/);
  assert.match(cert.keyUsage?.join(',') ?? '', /1\.3\.6\.1\.5\.5\.7\.3\.2/);
  assert.equal((await call('POST', `${base}:generateEphemeralCert`, t, { public_key: 'not a key' })).status, 400);
});

test('the instance listener: server CN project:instance, TLS 1.3, a client certificate of the instance CA, then the bytes', async () => {
  const t = authority.mint(SA, 'metadata').token;
  const key = connectorKey();
  const cert = (await call('POST', `${base}:generateEphemeralCert`, t, { public_key: key.pem })).json.ephemeralCert.cert as string;
  const connect = (withCert: boolean) => new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({
      host: '127.0.0.1', port: listener.port, ca: fs.readFileSync(instancePki.caPem), checkServerIdentity: () => undefined,
      ...(withCert ? { cert, key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }) } : {}),
    }, () => resolve(s));
    s.on('error', reject);
  });
  const s = await connect(true);
  assert.equal(s.getProtocol(), 'TLSv1.3');
  assert.match(String((s.getPeerCertificate().subject as unknown as Record<string, string>).CN), /^proj:inst$/);
  s.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]));
  const reply = await new Promise<string>((r) => s.once('data', (b) => r(b.toString())));
  assert.equal(reply, 'N');
  s.destroy();
  assert.equal(received[0]?.toString('hex'), '0000000804d2162f');
  assert.equal(listener.connections[0]?.firstMessage, 'SSLRequest');
  // Without a client certificate the handshake (or the first read) fails; nothing reaches PostgreSQL.
  const n = received.length;
  await assert.rejects(async () => {
    const bad = await connect(false);
    await new Promise((resolve, reject) => { bad.on('error', reject); bad.on('close', resolve); bad.write('x'); });
    throw new Error('closed without an error');
  });
  assert.equal(received.length, n);
});

test('behind the TLS edge (plain HTTP upstream): sqladmin.googleapis.com routes to it once attached, a token the authority did not mint is refused at the edge, the listener records where a connection came from', async () => {
  const { startEdge } = await import('../helpers/gcp/edge.ts');
  const plain = await startFakeSqlAdmin({ authority, connectionName: INSTANCE, instancePki, publicIp: '127.0.0.1', bind: '127.0.0.1' });
  assert.match(plain.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const edge = await startEdge({ pki: tlsPki, authority, upstreams: {}, ip: '127.0.0.1', port: 0 });
  try {
    const get = (token?: string) => fetchVia(edge.url, `/sql/v1beta4/projects/proj/instances/inst/connectSettings`, token);
    assert.equal((await get(authority.mint(SA, 'key').token)).status, 404, 'no Admin API attached yet: the edge serves nothing there');
    edge.upstreams.sqladmin = plain.url;
    const ok = await get(authority.mint(SA, 'key').token);
    assert.equal(ok.status, 200);
    assert.equal(ok.json.region, 'asia-northeast1');
    assert.equal((await get('forged')).status, 401);
    assert.deepEqual(edge.requests.map((r) => [r.service, r.status]), [['sqladmin', 404], ['sqladmin', 200], ['sqladmin', 401]]);
    assert.equal(plain.requests.length, 1, 'the forged token never reached the stand-in');
    assert.equal(plain.requests[0]!.minted?.via, 'key');
  } finally {
    await edge.close();
    await plain.close();
  }
  assert.ok(listener.connections.every((c) => c.remoteAddress === '127.0.0.1' && c.at > 0), JSON.stringify(listener.connections));
});

async function fetchVia(base: string, p: string, token?: string): Promise<{ status: number; json: any }> {
  const { default: https } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${base}${p}`, { ca: fs.readFileSync(tlsPki.caPem), servername: 'sqladmin.googleapis.com', headers: token ? { Authorization: `Bearer ${token}` } : {} }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}
