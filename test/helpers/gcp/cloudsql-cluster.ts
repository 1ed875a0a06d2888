// The Cloud SQL Auth Proxy sidecar on the project's own cluster (test only), for kube-e2e's chart
// install: the chart's release reaches "Cloud SQL" exactly as on GKE without Workload Identity —
// every Digdag pod and the migration Job run the real proxy (the binary .ci/install-cloud-sql-proxy
// builds, alone in an image like Google's distroless one) with `--credentials-file` from the key
// Secret; the proxy finds sqladmin.googleapis.com and oauth2.googleapis.com through the release's
// googleApis.address (hostAliases → the "googleapis" edge on the bridge address, edge.ts), trusts
// googleApis.caBundle, gets a token for the key at the edge, asks the Admin API stand-in
// (cloudsql-admin.ts, behind the edge) for the instance's address — the bridge address — and its
// ephemeral certificate, and dials the instance's mutual-TLS listener (cloudsql-listener.ts) on
// bridge:3307, allowed by the chart's cloudSqlProxy.instanceCidrs rule, which pipes to a real
// PostgreSQL on this machine (the local target's own, with Digdag's role and database).
// Nothing here is deployed for a user; the chart values it produces are what a user would set.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { ClusterConfig } from '../../../lib/cluster/config.ts';
import { ctr, ensureCloudSqlProxyImage, loadImage } from '../../../lib/cluster/images.ts';
import type { Config } from '../../../lib/config.ts';
import { authenticatedEndpoint } from '../../../lib/auth.ts';
import { readSecrets, secretsFile } from '../../../lib/credentials.ts';
import { attemptTasks, startAttempt, waitAttempt, workflowId } from '../../../lib/digdag-api.ts';
import { startPortForward } from '../../../lib/kube/port-forward.ts';
import { downLocal } from '../../../lib/local/down.ts';
import { applySql } from '../../../lib/local/init-db.ts';
import { runSteps } from '../../../lib/pipeline.ts';
import { dbEndpoint } from '../../../lib/postgres.ts';
import { pickFreePort } from '../../../lib/ports.ts';
import { stopTracked, waitFor } from '../../../lib/processes.ts';
import { pushProject, SAMPLE_PROJECT, sampleDir } from '../../../lib/push-workflow.ts';
import type { Cmd, Result, Runner } from '../../../lib/runner.ts';
import { createSecret } from '../../../tasks/create-secret.ts';
import { startPostgres } from '../../../tasks/start-postgres.ts';
import { testConfig, testCtx } from '../fixtures.ts';
import { startFakeSqlAdmin, type FakeSqlAdmin } from './cloudsql-admin.ts';
import { startInstanceListener, type InstanceListener } from './cloudsql-listener.ts';
import { cloudSqlProxyBin, cloudSqlProxyMissing } from './cloudsql-proxy.ts';
import type { GoogleApis } from './index.ts';
import { makeCloudSqlInstancePki } from './pki.ts';

/** The Secret of the proxy's own key (cloudSqlProxy.keySecret): Digdag's pods stay keyless (their ADC from the metadata server). */
export const KEY_SECRET = 'cloudsql-proxy-key';

export interface ClusterCloudSql {
  /** PROJECT:REGION:INSTANCE. */
  instance: string;
  admin: FakeSqlAdmin;
  listener: InstanceListener;
  /** The host PostgreSQL's config (local target): its secrets are the release's database and UI/API passwords. */
  db: Config;
  /** The release's values for the proxy (a 0600 file: it holds the passwords): `helm install -f` it. */
  valuesFile: string;
  /** The key Secret the proxy authenticates with, as a manifest for `kubectl apply -f -` (stdin, never argv). */
  keySecret(namespace: string): string;
  stop(): Promise<void>;
}

/** Why the proxy cannot run on the own cluster here (then the chart installs without it), or undefined. */
export const clusterCloudSqlMissing = (gcpMissing: string | undefined): string | undefined =>
  gcpMissing ? `the offline Google APIs: ${gcpMissing}` : cloudSqlProxyMissing();

export async function startClusterCloudSql(o: { gcp: GoogleApis; cc: ClusterConfig; runner: Runner; dir: string; keyFile: string; log: (l: string) => void }): Promise<ClusterCloudSql> {
  const { gcp, cc, runner } = o;
  const instance = `${gcp.project}:asia-northeast1:digdag-pg`;
  const stops: (() => Promise<unknown>)[] = [];
  try {
    o.log(await ensureCloudSqlProxyImage(runner, cc, cloudSqlProxyBin()));
    await loadImage(runner, cc, cc.cloudSqlProxyImage);
    // The instance's PostgreSQL: the local target's own (initdb, Digdag's role, database, uuid-ossp).
    const db = testConfig({ DIGDAG_HA_STATE_DIR: path.join(o.dir, 'db') });
    await runSteps([createSecret, startPostgres], testCtx(db, runner), { renderer: 'silent' });
    stops.push(() => downLocal(testCtx(db, runner), true));
    const secrets = readSecrets(db)!;
    const pg = await dbEndpoint(db, secrets.dbPassword);
    await applySql(testCtx(db, runner), pg);
    const instancePki = makeCloudSqlInstancePki(path.join(o.dir, 'instance'), instance);
    // Plain HTTP on loopback behind the TLS edge, which answers for sqladmin.googleapis.com.
    const admin = await startFakeSqlAdmin({ authority: gcp.authority, connectionName: instance, instancePki, publicIp: cc.net.bridgeIp, bind: '127.0.0.1' });
    stops.push(admin.close);
    gcp.edge.upstreams.sqladmin = admin.url;
    stops.push(async () => { delete gcp.edge.upstreams.sqladmin; });
    const listener = await startInstanceListener({ pki: instancePki, bind: cc.net.bridgeIp, upstream: { host: '127.0.0.1', port: pg.port } });
    stops.push(listener.close);
    const values = {
      database: { external: { enabled: true, host: '127.0.0.1', port: 5432 } },
      secrets: { dbPassword: secrets.dbPassword },
      auth: { user: db.security.authUser, password: secrets.apiPassword },
      cloudSqlProxy: { instance, image: cc.cloudSqlProxyImage, pullPolicy: 'IfNotPresent', credentials: 'keySecret', keySecret: KEY_SECRET, instanceCidrs: [`${cc.net.bridgeIp}/32`] },
      googleApis: { address: cc.net.bridgeIp, caBundle: fs.readFileSync(gcp.pki.caPem, 'utf8') },
    };
    const valuesFile = path.join(o.dir, 'cloudsql-values.yaml');
    fs.writeFileSync(valuesFile, stringify(values), { mode: 0o600 });
    const key = fs.readFileSync(o.keyFile, 'utf8');
    return {
      instance, admin, listener, db, valuesFile,
      keySecret: (namespace) => JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: KEY_SECRET, namespace }, type: 'Opaque', stringData: { 'key.json': key } }),
      stop: async () => {
        for (const s of stops.reverse()) await s().catch(() => undefined);
      },
    };
  } catch (err) {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    throw err;
  }
}

type Kubectl = (args: string[], extra?: Partial<Cmd>) => Promise<Result>;

export interface ProxyContainer {
  pod: string;
  podIp: string;
  /** containerd's id of the running proxy container. */
  containerId: string;
  restarts: number;
  ready: boolean;
}

/** The cloud-sql-proxy sidecar of each pod matching `selector` that has one (not the helm test pod). */
export async function proxyContainers(k: Kubectl, ns: string, selector: string): Promise<ProxyContainer[]> {
  const r = await k(['get', 'pods', '-n', ns, '-l', selector, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const pods = (JSON.parse(r.stdout) as { items: { metadata: { name: string }; status: { podIP?: string; initContainerStatuses?: { name: string; containerID?: string; restartCount: number; ready: boolean; started?: boolean }[] } }[] }).items;
  return pods.flatMap((p) => {
    const s = (p.status.initContainerStatuses ?? []).find((c) => c.name === 'cloud-sql-proxy');
    return s ? [{ pod: p.metadata.name, podIp: p.status.podIP ?? '', containerId: (s.containerID ?? '').replace(/^containerd:\/\//, ''), restarts: s.restartCount, ready: s.ready }] : [];
  });
}

/** SIGKILLs the proxy process of each container (containerd's task kill: the image has no shell to
 * exec into, as Google's has none), then waits until the kubelet has restarted each and it is ready. */
export async function killProxies(runner: Runner, cc: ClusterConfig, k: Kubectl, ns: string, victims: ProxyContainer[], timeoutMs = 120_000): Promise<ProxyContainer[]> {
  for (const v of victims) {
    const r = await runner.run({ argv: ctr(cc, 'task', 'kill', '-s', 'SIGKILL', v.containerId), nothrow: true, quiet: true });
    assert.equal(r.code, 0, `ctr task kill ${v.pod}/cloud-sql-proxy: ${r.stderr}`);
  }
  let now: ProxyContainer[] = [];
  const back = await waitFor(async () => {
    now = (await proxyContainers(k, ns, 'app.kubernetes.io/name=digdag')).filter((c) => victims.some((v) => v.pod === c.pod));
    return now.length === victims.length && now.every((c) => c.ready && c.restarts > victims.find((v) => v.pod === c.pod)!.restarts);
  }, timeoutMs, 500);
  assert.ok(back, `the killed proxies restarted and became ready: ${JSON.stringify(now)}`);
  return now;
}

export interface ProxyProof {
  /** Seconds from the kill to every killed proxy ready again. */
  restartSeconds: number;
  killed: string[];
  attempts: { before: number; during: number; after: number };
  connections: number;
  adminCalls: number;
}

/**
 * What kube-e2e asserts about a release installed with `sql`'s values in `ns`: the migration Job and
 * every Digdag pod reached the database through their own proxy (the listener saw each pod's
 * address), the proxy authenticated with the key (tokens minted at the edge, reached from the
 * bridge); sample attempts succeed before, while and after the proxies of every worker and the
 * scheduler are SIGKILLed mid-attempt, the kubelet restarts them, and no Digdag container restarts.
 */
export async function proveThroughProxy(o: {
  sql: ClusterCloudSql; gcp: GoogleApis; cc: ClusterConfig; runner: Runner; k: Kubectl; ns: string; keySa: string; vars: Record<string, string>; log: (l: string) => void;
}): Promise<ProxyProof> {
  const { sql, gcp, cc, runner, k, ns } = o;
  // The release's UI/API through a port-forward, with the passwords the values file gave it.
  const chart = testConfig({ ...o.vars, DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_CLUSTER_DIR: cc.dir, K8S_NAMESPACE: ns, PORT_FORWARD_PORT: String(await pickFreePort()) });
  fs.mkdirSync(path.dirname(secretsFile(chart)), { recursive: true, mode: 0o700 });
  fs.copyFileSync(secretsFile(sql.db), secretsFile(chart));
  const ctx = testCtx(chart, runner);
  try {
    const endpoint = authenticatedEndpoint(chart, await startPortForward(ctx));
    await pushProject(ctx, endpoint, { name: SAMPLE_PROJECT, dir: sampleDir() });
    const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
    let session = Date.UTC(2002, 0, 1);
    const submit = (sleep: number) => startAttempt(endpoint, wf, new Date((session += 1000)), { tasks: 2, sleep_seconds: sleep });
    const succeeded = async (ids: string[], what: string) => {
      for (const id of ids) {
        const a = await waitAttempt(endpoint, id, 240_000);
        const tasks = a.success ? '' : (await attemptTasks(endpoint, id)).map((t) => `${t.fullName}: ${t.state}`).join(', ');
        assert.equal(a.success, true, `${what} attempt ${id} failed: ${tasks}`);
      }
    };
    const before = [await submit(0)];
    await succeeded(before, 'before');

    // Every Digdag pod's proxy, and the migration Job's, dialled the instance from the pod's address.
    const proxies = await proxyContainers(k, ns, 'app.kubernetes.io/name=digdag,app.kubernetes.io/component!=migrate');
    const migrate = (await proxyContainers(k, ns, 'app.kubernetes.io/component=migrate')).map((p) => p.podIp).filter(Boolean);
    const from = new Set(sql.listener.connections.map((c) => c.remoteAddress));
    for (const p of proxies) {
      assert.ok(from.has(p.podIp), `${p.pod} (${p.podIp}) reached the instance: the listener saw ${[...from].join(', ')}`);
      assert.equal(p.restarts, 0, `${p.pod}'s proxy has not restarted yet`);
    }
    assert.ok(migrate.length > 0 && migrate.every((ip) => from.has(ip)), `the migration Job's pod (${migrate.join(', ') || 'no address'}) reached the instance`);
    for (const c of sql.listener.connections) {
      assert.match(c.clientSubject, /CN=Google Cloud SQL Client/, 'a client certificate from generateEphemeralCert');
      assert.match(c.firstMessage, /^(SSLRequest|StartupMessage)$/, 'the client\'s own PostgreSQL bytes, nothing of the proxy\'s');
    }
    assert.deepEqual(sql.listener.refused, [], 'no handshake refused');
    // The proxies got their certificates with the key's tokens, through the edge on the bridge.
    const calls = sql.admin.requests.filter((r) => r.kind === 'generateEphemeralCert');
    assert.ok(calls.length >= proxies.length + 1, `an ephemeral certificate per proxy: ${calls.length}`);
    for (const r of sql.admin.requests) {
      assert.equal(r.status, 200, `${r.method} ${r.path}: ${r.status}`);
      assert.equal(r.minted?.email, o.keySa, `${r.path} ran as ${r.minted?.email ?? 'nobody'}`);
      assert.equal(r.minted?.via, 'key', `${r.path}: a token for the key, not ${r.minted?.via}`);
    }
    for (const r of gcp.edge.requests.filter((e) => e.service === 'sqladmin')) {
      assert.equal(r.edgeIp, cc.net.bridgeIp, `${r.path} came from a pod through the bridge`);
      assert.match(r.userAgent, /cloud-sql-proxy/i, r.userAgent);
    }

    // Kill every worker's and the scheduler's proxy while an attempt runs; submit while they restart.
    const restartsBefore = await digdagRestarts(k, ns);
    const during = [await submit(8)];
    assert.ok(await waitFor(async () => (await attemptTasks(endpoint, during[0]!).catch(() => [])).some((t) => t.state === 'running'), 60_000, 250), 'a task runs');
    const victims = proxies.filter((p) => /-(worker|scheduler)-/.test(p.pod));
    const workers = victims.filter((v) => /-worker-/.test(v.pod));
    assert.ok(workers.length >= 1 && victims.length > workers.length, `every worker's and the scheduler's pods: ${proxies.map((p) => p.pod).join(', ')}`);
    const killedAt = Date.now();
    const restarted = killProxies(runner, cc, k, ns, victims);
    during.push(await submit(0));
    await restarted;
    const restartSeconds = Number(((Date.now() - killedAt) / 1000).toFixed(1));
    const after = [await submit(0)];
    await succeeded(during, 'while the proxies restarted:');
    await succeeded(after, 'after');
    assert.ok(sql.listener.connections.some((c) => workers.some((w) => w.podIp === c.remoteAddress) && c.at > killedAt), 'the workers reconnected through their restarted proxies');
    assert.deepEqual(await digdagRestarts(k, ns), restartsBefore, 'no Digdag container restarted: Digdag recovered by itself');
    return { restartSeconds, killed: victims.map((v) => v.pod), attempts: { before: before.length, during: during.length, after: after.length }, connections: sql.listener.connections.length, adminCalls: sql.admin.requests.length };
  } finally {
    await stopTracked(chart, 5000);
  }
}

/** Restart counts of the digdag containers (the roles' pods), by pod. */
async function digdagRestarts(k: Kubectl, ns: string): Promise<Record<string, number>> {
  const r = await k(['get', 'pods', '-n', ns, '-l', 'app.kubernetes.io/name=digdag', '-o', 'json']);
  const pods = (JSON.parse(r.stdout) as { items: { metadata: { name: string }; status: { containerStatuses?: { name: string; restartCount: number }[] } }[] }).items;
  return Object.fromEntries(pods.flatMap((p) => (p.status.containerStatuses ?? []).filter((c) => c.name === 'digdag').map((c) => [p.metadata.name, c.restartCount])));
}

/** For a failure message: each pod's proxy log tail, what the Admin API and the edge answered, what the listener saw. */
export async function proxyDiagnostics(sql: ClusterCloudSql, gcp: GoogleApis, k: Kubectl, ns: string): Promise<string> {
  const pods = (await k(['get', 'pods', '-n', ns, '-o', 'jsonpath={.items[*].metadata.name}'])).stdout.trim().split(/\s+/).filter(Boolean);
  const logs = await Promise.all(pods.map(async (p) => `--- ${p}/cloud-sql-proxy\n${(await k(['logs', '-n', ns, p, '-c', 'cloud-sql-proxy', '--tail=15'])).stdout.trim()}`));
  const admin = sql.admin.requests.map((r) => `${r.method} ${r.path} ${r.status} ${r.minted?.email ?? 'no token'}`).join('\n');
  const edge = gcp.edge.requests.filter((r) => r.service === 'sqladmin' || r.service === 'token' || r.service === 'other').map((r) => `${r.edgeIp} ${r.method} ${r.path} ${r.status} ${r.userAgent}`).join('\n');
  const conns = sql.listener.connections.map((c) => `${c.remoteAddress} ${c.firstMessage}`).join(', ');
  return `${logs.join('\n')}\n--- Admin API\n${admin || 'no request'}\n--- edge (token/sqladmin/other)\n${edge || 'none'}\n--- listener: ${conns || 'no connection'}; refused: ${sql.listener.refused.join(', ') || 'none'}`;
}
