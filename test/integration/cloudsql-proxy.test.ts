// The real Cloud SQL Auth Proxy v2 (the chart's sidecar, built by .ci/install-cloud-sql-proxy) in
// front of a real PostgreSQL, offline: a stand-in of the Cloud SQL Admin API (connectSettings,
// generateEphemeralCert; HTTPS from the test CA, trusted through SSL_CERT_DIR on a ConfigMap-like
// directory, as the chart's sidecar trusts googleApis.caBundle) and the instance's mutual-TLS
// listener on 3307 piping to the project's PostgreSQL (test/helpers/gcp). The proxy authenticates
// as Workload Identity gives a pod: Application Default Credentials from the project's metadata
// server (GCE_METADATA_HOST). psql through the proxy's 127.0.0.1 port runs queries as Digdag's
// role, and Digdag's own init-db (migrate run over JDBC) goes through it; the Admin API saw both
// calls with a token minted for the expected account. A wrong instance name, a region that does
// not match, a token nobody minted, an Admin API certificate of a CA it does not trust and an
// unreachable Admin API each fail the connection with the proxy naming the cause. Needs the proxy
// binary (and, for init-db, the Digdag runtime), otherwise SKIPPED with the reason.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { readSecrets } from '../../lib/credentials.ts';
import { downLocal } from '../../lib/local/down.ts';
import { applySql } from '../../lib/local/init-db.ts';
import { runSteps } from '../../lib/pipeline.ts';
import { pickFreePort } from '../../lib/ports.ts';
import { dbEndpoint, queryAsApp, type DbEndpoint } from '../../lib/postgres.ts';
import { listProcesses } from '../../lib/processes.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { initDb } from '../../tasks/init-db.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { startFakeSqlAdmin, type FakeSqlAdmin } from '../helpers/gcp/cloudsql-admin.ts';
import { startInstanceListener, type InstanceListener } from '../helpers/gcp/cloudsql-listener.ts';
import { cloudSqlProxyMissing, startCloudSqlProxy, waitForLine, type ProxyOptions, type ProxyProcess } from '../helpers/gcp/cloudsql-proxy.ts';
import { startMetadataServer, type MetadataServer } from '../helpers/gcp/metadata-server.ts';
import { makeCloudSqlInstancePki, makeTestPki, type TestPki } from '../helpers/gcp/pki.ts';
import { newServiceAccountKey, TokenAuthority } from '../helpers/gcp/tokens.ts';
import { prepareRuntime, runtimeVars } from '../helpers/runtime.ts';

const PROJECT = 'digdag-ha-test';
const REGION = 'asia-northeast1';
const INSTANCE = `${PROJECT}:${REGION}:digdag-pg`;
const SA = `digdag@${PROJECT}.iam.gserviceaccount.com`;
/** The instance's "public IP" and the Admin API stand-in: a loopback address of their own. */
const INSTANCE_IP = '127.0.0.79';

const skip = cloudSqlProxyMissing();
const runner = new ShellRunner(false, () => {});

/** A test that reports SKIPPED with the reason (counted as skipped, never a pass) when the proxy is not built. */
function it(name: string, fn: (t: TestContext) => Promise<void>): void {
  test(name, async (t) => {
    if (skip) return t.skip(`SKIPPED — ${skip}`);
    await fn(t);
  });
}

describe('the Cloud SQL Auth Proxy against the Admin API stand-in and the instance listener', () => {
  let config: Config;
  let dir: string;
  let db: DbEndpoint;
  let authority: TokenAuthority;
  let metadata: MetadataServer;
  let tlsPki: TestPki;
  let admin: FakeSqlAdmin;
  let listener: InstanceListener;
  const procs: ProxyProcess[] = [];

  before(async () => {
    if (skip) return;
    config = testConfig();
    dir = tempDir('digdag-ha-cloudsql-');
    await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
    db = await dbEndpoint(config, readSecrets(config)!.dbPassword);
    await applySql(testCtx(config, runner), db);
    authority = new TokenAuthority();
    authority.register({ email: SA, publicKey: newServiceAccountKey(SA, PROJECT, 'https://oauth2.googleapis.com/token').publicKey });
    metadata = await startMetadataServer({ authority, email: SA, project: PROJECT });
    tlsPki = makeTestPki(path.join(dir, 'pki'), INSTANCE_IP);
    const instancePki = makeCloudSqlInstancePki(path.join(dir, 'instance'), INSTANCE);
    admin = await startFakeSqlAdmin({ tls: tlsPki, authority, connectionName: INSTANCE, instancePki, publicIp: INSTANCE_IP, bind: INSTANCE_IP });
    listener = await startInstanceListener({ pki: instancePki, bind: INSTANCE_IP, upstream: { host: '127.0.0.1', port: db.port } });
  });

  after(async () => {
    for (const p of procs) await p.stop();
    await listener?.close();
    await admin?.close();
    await metadata?.close();
    if (config) {
      await downLocal(testCtx(config, runner), true);
      assert.equal(listProcesses(config).length, 0);
    }
  });

  /** A proxy on a free 127.0.0.1 port, up (it listens before it asks the Admin API anything). */
  async function proxy(over: Partial<ProxyOptions> = {}): Promise<{ p: ProxyProcess; port: number }> {
    const port = await pickFreePort();
    const p = startCloudSqlProxy({
      instance: INSTANCE, port, adminApi: admin.url, caFile: tlsPki.caPem, metadataHostPort: metadata.hostPort,
      home: path.join(dir, `home-${procs.length}`), ...over,
    });
    procs.push(p);
    await waitForLine(p, /ready for new connections/);
    return { p, port };
  }

  const viaProxy = (port: number, sql: string) => queryAsApp(runner, config, { ...db, host: '127.0.0.1', port }, sql);

  it('psql through the proxy reaches PostgreSQL as Digdag\'s role; the Admin API saw both calls with the pod identity\'s token', async () => {
    const before = admin.requests.length;
    const { p, port } = await proxy();
    assert.equal(await viaProxy(port, "SELECT current_user || ' ' || current_database() || ' ' || current_setting('port')"), `digdag digdag ${db.port}`);
    // A second connection reuses the cached certificate (no new Admin API round).
    assert.equal(await viaProxy(port, 'SELECT 41 + 1'), '42');
    const calls = admin.requests.slice(before);
    assert.deepEqual(calls.map((r) => r.kind).sort(), ['connectSettings', 'generateEphemeralCert'], 'one refresh for both connections');
    for (const r of calls) {
      assert.equal(r.status, 200, `${r.method} ${r.path}`);
      assert.equal(r.instance, `${PROJECT}:digdag-pg`);
      assert.equal(r.minted?.email, SA, `${r.kind} carried a token minted for ${SA}`);
      assert.equal(r.minted?.via, 'metadata');
      assert.match(r.userAgent, /cloud-sql-proxy/);
    }
    assert.ok(metadata.requests.some((u) => u.startsWith('/computeMetadata/v1/instance/service-accounts/default/token')), metadata.requests.join('\n'));
    // The instance listener saw the proxy's ephemeral certificate and then plain PostgreSQL bytes.
    assert.ok(listener.connections.length >= 2);
    for (const c of listener.connections) {
      assert.match(c.clientSubject, /CN=Google Cloud SQL Client/);
      assert.ok(['SSLRequest', 'StartupMessage'].includes(c.firstMessage), `first bytes ${c.firstBytes}`);
    }
    assert.deepEqual(listener.refused, []);
    assert.ok(!p.lines.some((l) => /"severity":"ERROR"/.test(l)), p.lines.join('\n'));
  });

  it('Digdag itself through the proxy: init-db with DATABASE_URL at the proxy runs Digdag\'s migrations over JDBC', async (t) => {
    const { p, port } = await proxy();
    const url = `postgresql://${db.user}:${encodeURIComponent(db.password)}@127.0.0.1:${port}/${db.database}`;
    const viaProxy = testConfig({ ...runtimeVars, DATABASE_URL: url });
    const unavailable = await prepareRuntime(viaProxy, runner);
    if (unavailable) return t.skip(`no Digdag runtime on this machine: ${unavailable}`);
    const n = listener.connections.length;
    await runSteps([createSecret, initDb], testCtx(viaProxy, runner), { renderer: 'silent' });
    // Straight to PostgreSQL (not through the proxy): the schema Digdag's migrate run made.
    const applied = Number(await queryAsApp(runner, config, db, 'SELECT count(*) FROM schema_migrations'));
    assert.ok(applied > 10, `${applied} migrations applied`);
    assert.ok(await queryAsApp(runner, config, db, "SELECT to_regclass('public.session_attempts') IS NOT NULL") === 't');
    // JDBC (and init-db's psql checks) went through the instance listener with the proxy's certificate.
    const more = listener.connections.slice(n);
    assert.ok(more.length >= 2, `${more.length} connections through the proxy`);
    assert.ok(more.every((c) => /CN=Google Cloud SQL Client/.test(c.clientSubject) && ['SSLRequest', 'StartupMessage'].includes(c.firstMessage)));
    assert.ok(!p.lines.some((l) => /"severity":"ERROR"/.test(l)), p.lines.join('\n'));
  });

  /** The connection fails for psql; the proxy's log names why. */
  async function refused(over: Partial<ProxyOptions>, why: RegExp): Promise<string> {
    const { p, port } = await proxy(over);
    await assert.rejects(viaProxy(port, 'SELECT 1'), /server closed the connection unexpectedly|connection to server .* failed/);
    const line = await waitForLine(p, /failed to connect to instance/);
    assert.match(line, why);
    await p.stop();
    return line;
  }

  it('a wrong instance name: the Admin API answers 404 and the proxy says the instance does not exist', async () => {
    await refused({ instance: `${PROJECT}:${REGION}:no-such-instance` }, /instance does not exist/i);
    assert.ok(admin.requests.some((r) => r.instance === `${PROJECT}:no-such-instance` && r.status === 404));
  });

  it('a region that is not the instance\'s: refused by the proxy itself after connectSettings', async () => {
    await refused({ instance: `${PROJECT}:us-central1:digdag-pg` }, /region was mismatched/);
  });

  it('a token the token authority did not mint: the Admin API answers 401', async () => {
    const bad = 'ya29.not-minted-by-anyone';
    const n = admin.requests.length;
    await refused({ args: [`--token=${bad}`] }, /401|invalid authentication credentials/i);
    // The requests with that token (a request of an earlier case's proxy may still land after n:
    // the proxy asks for connect settings and a certificate at once, and stops at the first refusal).
    const mine = admin.requests.slice(n).filter((r) => r.token === bad);
    assert.ok(mine.length > 0, 'the proxy asked the Admin API with the token');
    assert.deepEqual(mine.map((r) => [r.kind, r.status, r.minted]), mine.map((r) => [r.kind, 401, undefined]));
  });

  it('an Admin API whose certificate the proxy does not trust (another CA in SSL_CERT_DIR): refused before any token is sent', async () => {
    const n = admin.requests.length;
    const foreign = makeTestPki(path.join(dir, 'foreign-pki'), INSTANCE_IP);
    await refused({ caFile: foreign.caPem }, /x509: certificate signed by unknown authority/);
    assert.equal(admin.requests.length, n, 'no request reached the Admin API');
  });

  it('an unreachable Admin API: the proxy names the address it could not reach', async () => {
    const closed = await pickFreePort();
    await refused({ adminApi: `https://127.0.0.1:${closed}` }, new RegExp(`127\\.0\\.0\\.1:${closed}.*connection refused`));
  });
});
