// The project's own test cluster, for real: up (and up again), Pod Security admission, Service
// DNS between pods, NetworkPolicy enforcement, a PersistentVolumeClaim binding, pods without a
// route off the machine, and a down that leaves nothing behind. SKIPPED (with the reason) where
// it cannot run: not root, or prerequisites missing (bash .ci/install-cluster).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, test, type TestContext } from 'node:test';
import { kubectl, STORAGE_CLASS } from '../../lib/cluster/addons.ts';
import { BINARIES } from '../../lib/cluster/build.ts';
import { UserError } from '../../lib/errors.ts';
import { loadClusterConfig, type ClusterConfig } from '../../lib/cluster/config.ts';
import { hostLeftovers, leftoverMounts } from '../../lib/cluster/host.ts';
import { ensureTestImage, loadImage } from '../../lib/cluster/images.ts';
import { clusterDown, clusterRssMiB, clusterStatus, clusterUpCmd, missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { listProcesses, waitFor } from '../../lib/processes.ts';
import { ShellRunner, type Cmd } from '../../lib/runner.ts';
import { canConnect, probePod, restrictedNamespace } from '../helpers/cluster-pods.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const runner = new ShellRunner(false, () => {});
const log = (l: string) => process.stderr.write(`  [cluster] ${l}\n`);
let cc: ClusterConfig;
let skipReason: string | undefined;
let upSeconds = 0;

const NS = 'cluster-test';
const PSA_NS = 'psa-restricted';
const API_NS = 'api-from-pods';

before(async () => {
  const state = tempDir('dh-cluster-');
  cc = loadClusterConfig(testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c') }));
  const missing = missingPrerequisites(cc);
  if (missing.length) {
    skipReason = `test cluster cannot run here — missing: ${missing.join('; ')}`;
    return;
  }
  const r = await clusterUpCmd(runner, cc, log);
  upSeconds = r.seconds;
  log(`up in ${r.seconds.toFixed(1)} s, ${clusterRssMiB(cc)} MiB resident`);
  await ensureTestImage(runner, cc);
  await loadImage(runner, cc, cc.testImage);
});

after(async () => {
  if (skipReason || !cc) return;
  await clusterDown(runner, cc, { purge: true }, log);
});

const skipped = (t: TestContext) => {
  if (skipReason) t.skip(skipReason);
  return !!skipReason;
};

const k = (args: string[], extra: Partial<Cmd> = {}) => runner.run({ argv: kubectl(cc, ...args), quiet: true, timeoutMs: 60_000, ...extra });
const apply = (obj: unknown) => k(['apply', '-f', '-'], { input: JSON.stringify(obj) });

const pod = (name: string, ns: string, labels: Record<string, string>, args: string[]) => probePod(cc, name, ns, labels, args);

const waitReady = (ns: string, ...pods: string[]) => k(['wait', '-n', ns, '--for=condition=Ready', '--timeout=120s', ...pods.map((p) => `pod/${p}`)], { timeoutMs: 130_000 });

/** Fetches the web Service by its DNS name from inside a client pod; true when it answered. */
async function fetchWeb(client: string): Promise<boolean> {
  // busybox-static's own `wget -T` crashes (exit 139); bound it with `timeout` instead.
  const r = await k(['exec', '-n', NS, client, '--', 'busybox', 'timeout', '3', 'busybox', 'wget', '-q', '-O', '-', `http://web.${NS}.svc.cluster.local/`], { nothrow: true, timeoutMs: 20_000 });
  return r.code === 0 && r.stdout.includes('hello-from-web');
}

test('up starts every component and the node becomes Ready; up again says so at once', async (t) => {
  if (skipped(t)) return;
  const node = await k(['get', 'node', 'localhost', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
  assert.equal(node.stdout, 'True');
  const version = await k(['version', '-o', 'json']);
  assert.equal((JSON.parse(version.stdout) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion, 'v1.31.3');
  const again = await clusterUpCmd(runner, cc, log);
  assert.equal(again.alreadyUp, true);
  assert.ok(again.seconds < 5, `second up took ${again.seconds} s`);
  const status = await clusterStatus(runner, cc);
  assert.equal(status.up, true, status.lines.join('\n'));
  log(`cold-or-warm up ${upSeconds.toFixed(1)} s; second up ${again.seconds.toFixed(2)} s`);
});

test('a Pod Security "restricted" namespace rejects a privileged pod and admits a compliant one', async (t) => {
  if (skipped(t)) return;
  await restrictedNamespace(k, PSA_NS);
  const bad = pod('privileged', PSA_NS, {}, ['sleep', '3600']);
  // Privileged and nothing else (privileged with allowPrivilegeEscalation=false is invalid anyway).
  (bad.spec.containers[0] as { securityContext: unknown }).securityContext = { privileged: true };
  const refused = await k(['apply', '-f', '-'], { input: JSON.stringify(bad), nothrow: true });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /violates PodSecurity "restricted:latest": privileged/);
  await apply(pod('compliant', PSA_NS, {}, ['sleep', '3600']));
  await waitReady(PSA_NS, 'compliant');
});

test('a pod reaches another pod through its Service by DNS name', async (t) => {
  if (skipped(t)) return;
  await restrictedNamespace(k, NS);
  await apply(pod('web', NS, { app: 'web' }, ['sh', '-c', 'mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && exec busybox httpd -f -p 8080 -h /tmp/www']));
  await apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } });
  await apply(pod('client', NS, { role: 'client' }, ['sleep', '3600']));
  await apply(pod('stranger', NS, { role: 'stranger' }, ['sleep', '3600']));
  await waitReady(NS, 'web', 'client', 'stranger');
  // Bounded: the Service's endpoints reach kube-proxy a moment after the pod is Ready.
  assert.ok(await waitFor(() => fetchWeb('client'), 30_000, 500), 'client reaches http://web.cluster-test.svc.cluster.local/');
  assert.ok(await fetchWeb('stranger'));
});

test('NetworkPolicy is enforced: default-deny blocks the connection, an allow rule re-permits it', async (t) => {
  if (skipped(t)) return;
  await apply({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'default-deny', namespace: NS }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
  assert.ok(await waitFor(async () => !(await fetchWeb('client')), 30_000, 500), 'default-deny blocks client → web');
  assert.equal(await fetchWeb('stranger'), false);
  await apply({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'allow-client-to-web', namespace: NS },
    spec: {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }], ports: [{ port: 8080, protocol: 'TCP' }] }],
    },
  });
  assert.ok(await waitFor(() => fetchWeb('client'), 30_000, 500), 'the allow rule re-permits client → web');
  assert.equal(await fetchWeb('stranger'), false, 'a pod the rule does not select stays blocked');
});

test('pods have no route off the machine (only the pod subnet and the Service range)', async (t) => {
  if (skipped(t)) return;
  const routes = (await k(['exec', '-n', NS, 'client', '--', 'busybox', 'ip', 'route'])).stdout;
  assert.doesNotMatch(routes, /^default/m);
  assert.match(routes, new RegExp(`^${cc.net.serviceCidr.replace(/\./g, '\\.')} via ${cc.net.bridgeIp.replace(/\./g, '\\.')}`, 'm'));
});

test('the node fence: a pod reaches a host listener on the node address', async (t) => {
  if (skipped(t)) return;
  // On the node address, not every interface: nothing of a test listens off the machine.
  const control = await new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer((c) => c.end());
    s.once('error', reject);
    s.listen(0, cc.net.bridgeIp, () => resolve(s));
  });
  try {
    assert.equal(await canConnect(k, NS, 'stranger', cc.net.bridgeIp, (control.address() as net.AddressInfo).port), true, 'a pod reaches the node on an ordinary port');
  } finally {
    control.close();
  }
});

/** The API server's certificate as a pod sees it, fetched on the bridge address. */
function apiServerCertificate(): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: cc.net.bridgeIp, port: cc.ports.apiserver, ca: fs.readFileSync(path.join(cc.dir, 'pki', 'ca.crt')), servername: 'kubernetes.default.svc' }, () => {
      resolve(s.getPeerCertificate());
      s.end();
    });
    s.on('error', reject);
  });
}

test('pods reach the API server through the kubernetes Service with their token, only where a NetworkPolicy allows it', async (t) => {
  if (skipped(t)) return;
  const serviceIp = cc.net.serviceCidr.replace(/0\/\d+$/, '1');
  // The Service's Endpoints: the bridge address (the apiserver's own reconciler keeps them).
  const ep = await k(['get', 'endpoints', 'kubernetes', '-n', 'default', '-o', 'jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}']);
  assert.equal(ep.stdout, `${cc.net.bridgeIp}:${cc.ports.apiserver}`);
  // It listens on the bridge (or loopback) only, never on an interface beyond the machine.
  const listen = await runner.run({ argv: ['ss', '-Hltn', `sport = :${cc.ports.apiserver}`], quiet: true });
  const addrs = listen.stdout.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3]!.replace(/:\d+$/, ''));
  assert.ok(addrs.length > 0, listen.stdout);
  for (const a of addrs) assert.ok(a === cc.net.bridgeIp || a.startsWith('127.'), `API server listens on ${a}`);
  // Its certificate names what pods use: the Service IP and the kubernetes.default.svc names.
  const cert = await apiServerCertificate();
  for (const name of ['kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', serviceIp, cc.net.bridgeIp]) {
    assert.equal(tls.checkServerIdentity(name, cert), undefined, `certificate covers ${name}`);
  }

  await restrictedNamespace(k, API_NS);
  await apply({
    apiVersion: 'v1',
    kind: 'List',
    items: [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'lister', namespace: API_NS } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'lister', namespace: API_NS }, rules: [{ apiGroups: [''], resources: ['endpoints'], verbs: ['list'] }] },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'lister', namespace: API_NS },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'lister' },
        subjects: [{ kind: 'ServiceAccount', name: 'lister', namespace: API_NS }],
      },
      // Default deny out; the API server only for pods labelled as its clients — the shape the
      // chart's apiserver egress policy has (the policy sees the endpoint, not the Service IP).
      { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-egress', namespace: API_NS }, spec: { podSelector: {}, policyTypes: ['Egress'] } },
      {
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: 'apiserver-egress', namespace: API_NS },
        spec: {
          podSelector: { matchLabels: { 'apiserver-client': 'true' } },
          policyTypes: ['Egress'],
          egress: [{ to: [{ ipBlock: { cidr: `${cc.net.bridgeIp}/32` } }], ports: [{ port: cc.ports.apiserver, protocol: 'TCP' }] }],
        },
      },
    ],
  });
  const withToken = (name: string, labels: Record<string, string>) => {
    const p = pod(name, API_NS, labels, ['sleep', '3600']);
    Object.assign(p.spec, { serviceAccountName: 'lister', automountServiceAccountToken: true });
    return p;
  };
  await apply(withToken('member', { 'apiserver-client': 'true' }));
  await apply(withToken('other', {}));
  await waitReady(API_NS, 'member', 'other');
  // busybox's wget does not verify certificates; the names were checked above.
  const list = (p: string) =>
    k(['exec', '-n', API_NS, p, '--', 'busybox', 'sh', '-c', `busybox timeout 5 busybox wget -q -O - --no-check-certificate --header "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)" https://${serviceIp}/api/v1/namespaces/${API_NS}/endpoints`], { nothrow: true, timeoutMs: 20_000 });
  let answer = '';
  assert.ok(await waitFor(async () => ((answer = (await list('member')).stdout), answer.includes('"EndpointsList"')), 30_000, 500), `the allowed pod lists endpoints with its token: ${answer}`);
  assert.equal(await canConnect(k, API_NS, 'member', serviceIp, 443), true);
  assert.equal(await canConnect(k, API_NS, 'other', serviceIp, 443), false, 'a pod no policy allows cannot reach the API server');
  assert.equal(await canConnect(k, API_NS, 'other', cc.net.bridgeIp, cc.ports.apiserver), false, 'nor its endpoint directly');
  assert.doesNotMatch((await list('other')).stdout, /EndpointsList/);
});

test('a PersistentVolumeClaim binds to a volume under the state dir', async (t) => {
  if (skipped(t)) return;
  await apply({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: 'data', namespace: NS }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } });
  assert.ok(await waitFor(async () => (await k(['get', 'pvc', 'data', '-n', NS, '-o', 'jsonpath={.status.phase}'])).stdout === 'Bound', 30_000, 250), 'PVC data Bound');
  const pvc = JSON.parse((await k(['get', 'pvc', 'data', '-n', NS, '-o', 'json'])).stdout) as { spec: { storageClassName: string; volumeName: string } };
  assert.equal(pvc.spec.storageClassName, STORAGE_CLASS, 'the default StorageClass');
  const pv = JSON.parse((await k(['get', 'pv', pvc.spec.volumeName, '-o', 'json'])).stdout) as { spec: { hostPath: { path: string } } };
  assert.ok(pv.spec.hostPath.path.startsWith(`${cc.dir}/`));
});

const processesOf = (dir: string) =>
  fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(`${dir}/`);
      } catch {
        return false;
      }
    });

test('down leaves no process, mount, iptables chain, bridge or network namespace behind', async (t) => {
  if (skipped(t)) return;
  await clusterDown(runner, cc, { purge: false }, log);
  assert.deepEqual(listProcesses({ stateDir: cc.dir } as never), []);
  assert.deepEqual(processesOf(cc.dir), [], 'no process mentions the state dir');
  assert.deepEqual(leftoverMounts(cc), [], 'no mount below the state dir');
  assert.deepEqual(await hostLeftovers(runner, cc), []);
  assert.equal((await clusterStatus(runner, cc)).up, false);
});

test('a component that dies during start-up: up fails naming it with its log, and stops what it started', async (t) => {
  if (skipped(t)) return;
  // The real binaries, but a kube-scheduler that fails at once.
  const state = tempDir('dh-cluster-bad-');
  const cache = path.join(state, 'cache');
  const bad = loadClusterConfig(testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: cache }));
  fs.mkdirSync(bad.binDir, { recursive: true });
  for (const b of BINARIES) fs.symlinkSync(path.join(cc.binDir, b.name), path.join(bad.binDir, b.name));
  // The rest of the cache as it is (the base image, the pause image): not made again here.
  const binTop = path.relative(bad.cacheDir, bad.binDir).split(path.sep)[0];
  for (const e of fs.readdirSync(cc.cacheDir)) if (e !== binTop && !fs.existsSync(path.join(cache, e))) fs.symlinkSync(path.join(cc.cacheDir, e), path.join(cache, e));
  fs.rmSync(path.join(bad.binDir, 'kube-scheduler'));
  fs.writeFileSync(path.join(bad.binDir, 'kube-scheduler'), '#!/bin/sh\necho "simulated scheduler failure" >&2\nexit 1\n', { mode: 0o755 });
  await assert.rejects(clusterUpCmd(runner, bad, log), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /^kube-scheduler exited during start-up/);
    assert.match(err.detail!, /simulated scheduler failure/);
    assert.match(err.fix!, /logs\/kube-scheduler\.log/);
    return true;
  });
  assert.deepEqual(processesOf(bad.dir), [], 'everything it started was stopped');
  assert.deepEqual(await hostLeftovers(runner, bad), []);
  await clusterDown(runner, bad, { purge: true });
});
