// The Kubernetes target on the project's own cluster, for real (a real API server, kubelet and
// containerd): everything that needs no Digdag — server-side dry-run apply and Pod Security
// "restricted" admission of every rendered object (both layouts) and of the chart, secrets,
// PostgreSQL as a StatefulSet (a locally built image) becoming Ready, init-db's SQL through
// `kubectl exec`, a port-forward to PostgreSQL, teardown leaving nothing. With a Digdag runtime
// (DIGDAG_SOURCE/DIGDAG_JAR, test/helpers/runtime.ts) the full pipeline and verify-ha run too;
// without one those steps report SKIPPED with the reason, never pass. Not root or the cluster's
// prerequisites missing → SKIPPED with the reason. With the GCP emulators built (test/helpers/gcp),
// the deployment is pointed at them for its whole life the way a user's air-gapped setup would be
// (GOOGLE_APIS_ADDRESS = the bridge address the edge also answers on, GOOGLE_APIS_CA_FILE = the
// test CA, GCP_SA_KEY_FILE = a key of the test token authority), and the BigQuery sample runs whole
// in the worker pods (bq>, bq_extract>, gcs_wait> and sh> bq as the key's account; a wrong key: the attempt fails by
// itself, the cause in its task error). The
// chart's own release: its database through the Cloud SQL proxy sidecar (the proxy's own key
// Secret, cloudSqlProxy.keySecret), Digdag in it keyless — ADC from the test metadata server on the
// bridge (googleApis.metadataServer), GCS task logs read back through a ui pod, no identity named
// as the cause (test/helpers/gcp/cluster.ts). The database (3 Patroni members): verify-ha kills its leader under an attempt,
// and a short run of the chaos soak (tasks/soak.ts's own code) kills it twice more — once its
// postmaster, once its pod — while attempts are submitted: none may fail or go missing. Then,
// on the same deployment (KEDA and metrics-server come up with the cluster when built), the
// autoscaling tests of suites/keda.ts: KEDA on the queue, then the CPU HPA; then the purge.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import { clusterPaths, loadClusterConfig, type ClusterConfig } from '../../lib/cluster/config.ts';
import { hostLeftovers } from '../../lib/cluster/host.ts';
import { clusterImageHost } from '../../lib/cluster/image-host.ts';
import { docker as clusterDocker, ensureBaseImage, ensureTestImage, loadImage } from '../../lib/cluster/images.ts';
import { clusterDown, clusterUpCmd, missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { CLUSTER_POSTGRES_IMAGE, type Config } from '../../lib/config.ts';
import { requireSecrets } from '../../lib/credentials.ts';
import { buildImage } from '../../lib/kube/build-image.ts';
import { runInitSql } from '../../lib/kube/init-db.ts';
import { clusterKubectl, dbPod, kubectl } from '../../lib/kube/kubectl.ts';
import { startAttempt, waitAttempt, workflowId } from '../../lib/digdag-api.ts';
import { RELEASE, renderManifests } from '../../lib/kube/render.ts';
import { runStep, runSteps, type Ctx } from '../../lib/pipeline.ts';
import { freePortRange, isPortFree } from '../../lib/ports.ts';
import { waitFor } from '../../lib/processes.ts';
import { ShellRunner, type Cmd } from '../../lib/runner.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { prepareRuntime, runtimeVars } from '../helpers/runtime.ts';
import { canConnect, probePod, restrictedNamespace } from '../helpers/cluster-pods.ts';
import { proveBrowserLogin, proveCliLogin } from '../helpers/login.ts';
import { assertNoSecret, imageSecrets, shTaskSees } from '../helpers/leaks.ts';
import { authenticatedEndpoint } from '../../lib/auth.ts';
import { kubeTarget } from '../../tasks/steps.ts';
import { layoutRoles, taskRole } from '../../lib/roles.ts';
import { helmBin } from '../helpers/tools.ts';
import { emulatorsMissing, startGoogleApis, type GoogleApis } from '../helpers/gcp/index.ts';
import { assertExported, assertKeyNotIn, assertOneIdentity, emulatorRows, EXPORT_BUCKET, keylessReleaseValues, proveKeylessRelease, proveWrongKey, runWorkflow, SAMPLE_DIR, SAMPLE_ROWS } from '../helpers/gcp/cluster.ts';
import { clusterCloudSqlMissing, proveThroughProxy, proxyDiagnostics, startClusterCloudSql } from '../helpers/gcp/cloudsql-cluster.ts';
import { pushProject } from '../../lib/push-workflow.ts';
import { soak, soakSummary } from '../../lib/soak.ts';
import { kedaMissing } from '../../lib/cluster/keda.ts';
import { metricsServerMissing } from '../../lib/cluster/metrics-server.ts';
import { kedaTests } from './suites/keda.ts';
import { applyTlsSecret, frontDoor, proveFrontDoor, type FrontDoor } from '../helpers/front-door.ts';

const runner = new ShellRunner(false, () => {});
const log = (l: string) => process.stderr.write(`  [kube-e2e] ${l}\n`);
let skipReason: string | undefined;
let runtimeMissing: string | undefined;
let cc: ClusterConfig;
let config: Config;
let ctx: Ctx;
let state: string;
/** The variables of this file's Digdag deployment (GCP settings included), and whether its pipeline brought it up. */
let deployVars: Record<string, string> = {};
let deployed = false;

const CHART_NS = 'digdag-chart';
/** The short soak's length: kills at a third and two thirds of it. */
const SOAK_SECONDS = 45;
/** The offline Google Cloud the deployment uses (undefined: emulators not built, see gcpMissing). */
let gcp: GoogleApis | undefined;
let gcpMissing: string | undefined;
/** Why the KEDA suite skips (KEDA not built), or undefined: KEDA comes up with the cluster. */
let kedaWhy: string | undefined;
/** Why the CPU HPA test skips (metrics-server not built), or undefined: it comes up with the cluster. */
let metricsWhy: string | undefined;
/** The front door: Traefik serving the release's Ingress (test/helpers/front-door.ts). */
let door: FrontDoor;
const GCP_TEST_PROJECT = 'digdag-ha-test';
const KEY_SA = `digdag-key@${GCP_TEST_PROJECT}.iam.gserviceaccount.com`;
/** The account the metadata server on the bridge serves the chart's keyless release (ADC), and its log bucket. */
const ADC_SA = `digdag-wi@${GCP_TEST_PROJECT}.iam.gserviceaccount.com`;
const LOG_BUCKET = 'digdag-ha-release-logs';

before(async () => {
  state = tempDir('dh-kube-e2e-');
  const port = await freePortRange(1, 61000);
  // Agent lock timings shorter than the Kubernetes defaults (10/60/10 s): verify-ha's failover
  // waits out the killed worker's lock retention, and the test proves the behaviour, not the
  // default's length (the defaults' render is covered by the unit tests).
  const lockTimings = { AGENT_HEARTBEAT_INTERVAL: '5', AGENT_LOCK_RETENTION_TIME: '15', LOCK_EXPIRE_INTERVAL: '5' };
  // KEDA comes up with the cluster when it is in the cache: the autoscaling tests (suites/keda.ts)
  // run on this cluster after the rest, instead of bringing up one of their own.
  const base = { DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_STATE_DIR: state, RESOURCE_PROFILE: 'small', PORT_FORWARD_PORT: String(port), DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), ...lockTimings, ...runtimeVars };
  const keda = kedaMissing(loadClusterConfig(testConfig({ ...base, CLUSTER_ADDONS: 'keda' })));
  kedaWhy = keda.length ? `KEDA is not in the cache: ${keda.join('; ')}` : undefined;
  // metrics-server too (the CPU HPA test, last in suites/keda.ts).
  const metrics = metricsServerMissing(loadClusterConfig(testConfig({ ...base, CLUSTER_ADDONS: 'metrics-server' })));
  metricsWhy = metrics.length ? `metrics-server is not in the cache: ${metrics.join('; ')}` : undefined;
  const addons = [...(kedaWhy ? [] : ['keda']), ...(metricsWhy ? [] : ['metrics-server'])];
  const vars: Record<string, string> = { ...base, ...(addons.length ? { CLUSTER_ADDONS: addons.join(',') } : {}) };
  // The front door (Traefik) joins the add-ons when it is in the cache.
  door = frontDoor(loadClusterConfig(testConfig(vars)));
  Object.assign(vars, door.vars);
  config = testConfig(vars);
  deployVars = vars;
  cc = loadClusterConfig(config);
  const missing = missingPrerequisites(cc);
  if (missing.length) {
    skipReason = `test cluster cannot run here — missing: ${missing.join('; ')}`;
    return;
  }
  // The offline Google Cloud and the images come up beside the add-ons (most of KEDA's start is
  // waiting for its pods; loading an image is mostly disk).
  const up = await clusterUpCmd(runner, cc, log, { alongside: () => prepareAlongside(vars) });
  if (up.alreadyUp) {
    skipReason = 'a test cluster is already up on the fixed ports (another checkout\'s?); not touching it';
    return;
  }
  log(`cluster up (with the GCP edge and the images) in ${up.seconds.toFixed(1)} s`);
});

/** The GCP emulators (the edge answers on the bridge, which exists once the node is up) and the images. */
async function prepareAlongside(vars: Record<string, string>): Promise<void> {
  gcpMissing = emulatorsMissing();
  if (!gcpMissing) {
    const t0 = Date.now();
    // The edge also answers on the bridge address: the only host address pods reach (the fence).
    gcp = await startGoogleApis({ dir: path.join(state, 'gcp'), project: GCP_TEST_PROJECT, accounts: [KEY_SA, ADC_SA], buckets: [EXPORT_BUCKET], edgeIps: [cc.net.bridgeIp] });
    deployVars = { ...vars, GCP_PROJECT: GCP_TEST_PROJECT, GCP_SA_KEY_FILE: gcp.keyFile(KEY_SA), GOOGLE_APIS_ADDRESS: cc.net.bridgeIp, GOOGLE_APIS_CA_FILE: gcp.pki.caPem };
    config = testConfig(deployVars);
    log(`GCP emulators and the edge (127.0.0.77, ${cc.net.bridgeIp}) up in ${since(t0)} s`);
  }
  ctx = testCtx(config, runner);
  // The images, side by side (mostly disk: docker load and containerd's import of each): the
  // PostgreSQL stand-in, built from the debootstrapped base (apt reaches Debian's mirror), busybox
  // probe pods for the NetworkPolicy tests, and the Digdag image.
  log(await ensureBaseImage(runner, cc));
  const t0 = Date.now();
  await Promise.all([
    (async () => {
      const pg = await buildImage(runner, config, clusterImageHost(config), CLUSTER_POSTGRES_IMAGE, path.join(ROOT, 'docker', 'postgres', 'Dockerfile'), path.join(ROOT, 'docker', 'postgres'));
      await loadImage(runner, cc, CLUSTER_POSTGRES_IMAGE);
      log(`${CLUSTER_POSTGRES_IMAGE}: ${pg}, in containerd, ${since(t0)} s`);
    })(),
    (async () => {
      await ensureTestImage(runner, cc);
      await loadImage(runner, cc, cc.testImage);
      log(`${cc.testImage} in containerd, ${since(t0)} s`);
    })(),
    (async () => {
      runtimeMissing = Object.keys(runtimeVars).length ? await prepareRuntime(config, runner) : 'no Digdag runtime configured (set DIGDAG_SOURCE=jar DIGDAG_JAR=… or a reachable MAVEN_REPO_URL)';
      log(`the Digdag image: ${runtimeMissing ?? 'in containerd'}, ${since(t0)} s`);
    })(),
  ]);
  log(`images ready in ${since(t0)} s`);
}

after(async () => {
  await gcp?.stop();
  await kedaSuite.stop();
  if (skipReason || !cc) return;
  await clusterDown(runner, cc, { purge: true }, log);
  assert.deepEqual(await hostLeftovers(runner, cc), [], 'down leaves nothing on the host');
});

const skipped = (t: TestContext) => {
  if (skipReason) t.skip(skipReason);
  return !!skipReason;
};
const k = (args: string[], input?: string) => runner.run({ argv: kubectl(config, ...args), quiet: true, timeoutMs: 120_000, nothrow: true, ...(input ? { input } : {}) });

test('every rendered object (both layouts) passes server-side apply and Pod Security "restricted" admission', async (t) => {
  if (skipped(t)) return;
  for (const layout of ['worker', 'split']) {
    const c = testConfig({ DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_STATE_DIR: path.join(state, layout), DIGDAG_HA_CLUSTER_DIR: cc.dir, DIGDAG_HA_LAYOUT: layout });
    const { objects, yaml } = await renderManifests(c, runner);
    const ns = objects.filter((o) => o.kind === 'Namespace');
    await runner.run({ argv: clusterKubectl(config, 'apply', '-f', '-'), input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: ns }), quiet: true });
    const r = await runner.run({ argv: kubectl(c, 'apply', '--server-side', '--dry-run=server', '-f', '-'), input: yaml, quiet: true, nothrow: true });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /would violate PodSecurity/, `${layout}: ${r.stderr}`);
    assert.equal(r.stdout.trim().split('\n').length, objects.length, `${layout}: every object answered`);
  }
  // A pod that breaks "restricted" is refused by the same namespace: admission is really on.
  const bad = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'privileged' }, spec: { containers: [{ name: 'c', image: CLUSTER_POSTGRES_IMAGE, securityContext: { privileged: true } }] } };
  const refused = await k(['apply', '--dry-run=server', '-f', '-'], JSON.stringify(bad));
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /violates PodSecurity "restricted/);
});

test('the chart renders objects the API server admits under Pod Security "restricted" in its own namespace', async (t) => {
  if (skipped(t)) return;
  const r = spawnSync(helmBin(), ['template', 'dd', path.join(ROOT, 'chart', 'digdag-ha'), '--namespace', CHART_NS, '--set', `postgres.image=${CLUSTER_POSTGRES_IMAGE}`, '--set', 'ingress.enabled=false'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const nsYaml = JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: CHART_NS, labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } });
  await runner.run({ argv: clusterKubectl(config, 'apply', '-f', '-'), input: nsYaml, quiet: true });
  const res = await runner.run({ argv: clusterKubectl(config, '-n', CHART_NS, 'apply', '--server-side', '--dry-run=server', '-f', '-'), input: r.stdout, quiet: true, nothrow: true });
  assert.equal(res.code, 0, res.stderr);
  assert.doesNotMatch(res.stderr, /would violate PodSecurity/);
  await runner.run({ argv: clusterKubectl(config, 'delete', 'namespace', CHART_NS, '--wait=false'), quiet: true });
});

test('create-secret, PostgreSQL as a StatefulSet becoming Ready, init-db\'s SQL through kubectl exec, idempotent', async (t) => {
  if (skipped(t)) return;
  await runStep(createSecret, ctx);
  assert.equal((await k(['get', 'secret', 'digdag-secrets', 'digdag-api-credentials', '-o', 'name'])).stdout.trim().split('\n').length, 2);
  const labels = JSON.parse((await k(['get', 'namespace', config.k8s.namespace, '-o', 'json'])).stdout).metadata.labels;
  assert.equal(labels['pod-security.kubernetes.io/enforce'], 'restricted');
  await runStep(startPostgres, ctx);
  await runInitSql(ctx);
  await runInitSql(ctx); // idempotent
  const q = await k(['exec', await dbPod(ctx), '-c', 'postgres', '--', 'psql', '-X', '-At', '-U', 'postgres', '-d', 'digdag', '-c', "select r.rolsuper, d.datname, e.extname from pg_roles r, pg_database d, pg_extension e where r.rolname='digdag' and d.datname='digdag' and e.extname='uuid-ossp'"]);
  assert.equal(q.stdout.trim(), 'f|digdag|uuid-ossp', q.stderr);
});

// Probe pods around the release: where the ingress controller would run (its namespace and
// labels, INGRESS_CONTROLLER_*), an impostor there with other labels, and a namespace of its own.
const INGRESS_NS = 'ingress-nginx';
const OUTSIDER_NS = 'outsider';

/** kubectl without the release's namespace: the probes live in several. */
const kcmd = (args: string[], extra: Partial<Cmd> = {}) => runner.run({ argv: clusterKubectl(config, ...args), quiet: true, timeoutMs: 120_000, nothrow: true, ...extra });
const kc = (args: string[], input?: string) => kcmd(args, input ? { input } : {});

/** The first pod matching a selector in a namespace: its name and address. */
async function firstPod(ns: string, selector: string): Promise<{ name: string; ip: string }> {
  const r = await kc(['get', 'pods', '-n', ns, '-l', selector, '-o', 'jsonpath={.items[0].metadata.name} {.items[0].status.podIP}']);
  const [name = '', ip = ''] = r.stdout.trim().split(' ');
  return { name, ip };
}

async function probes(): Promise<void> {
  for (const ns of [INGRESS_NS, OUTSIDER_NS]) await restrictedNamespace(kcmd, ns);
  const want = [
    probePod(cc, 'controller', INGRESS_NS, { 'app.kubernetes.io/name': 'ingress-nginx' }),
    probePod(cc, 'impostor', INGRESS_NS, { 'app.kubernetes.io/name': 'not-the-controller' }),
    probePod(cc, 'outsider', OUTSIDER_NS, {}),
    // In the release's namespace: one a Digdag pod's labels would admit to PostgreSQL, one without.
    probePod(cc, 'db-client-probe', config.k8s.namespace, { 'app.kubernetes.io/name': 'digdag', 'app.kubernetes.io/instance': RELEASE, 'digdag-ha/db-client': 'true' }),
    probePod(cc, 'unlabelled-probe', config.k8s.namespace, {}),
  ];
  const r = await kc(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: want }));
  assert.equal(r.code, 0, r.stderr);
  for (const p of want) {
    const w = await kc(['wait', '-n', p.metadata.namespace, '--for=condition=Ready', '--timeout=120s', `pod/${p.metadata.name}`]);
    assert.equal(w.code, 0, `${p.metadata.namespace}/${p.metadata.name}: ${w.stderr}`);
  }
}

const podIp = async (name: string) => (await k(['get', 'pod', name, '-o', 'jsonpath={.status.podIP}'])).stdout.trim();
const from = (ns: string, pod: string) => (host: string, port: number) => canConnect(kcmd, ns, pod, host, port);

test('NetworkPolicies enforced on the real cluster: PostgreSQL only from Digdag pods', async (t) => {
  if (skipped(t)) return;
  // The rendering's policies, as apply applies them (start-postgres applies only PostgreSQL's).
  const { objects } = await renderManifests(config, runner);
  const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
  assert.ok(policies.some((p) => p.metadata.name === 'digdag-default-deny'));
  assert.equal((await k(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: policies }))).code, 0);
  await probes();
  const pg = await podIp('digdag-postgres-0');
  const client = from(config.k8s.namespace, 'db-client-probe');
  // Bounded: kube-router programs a new pod's rules a moment after it is Ready.
  assert.ok(await waitFor(() => client(pg, 5432), 30_000, 500), 'a pod with the Digdag db-client labels reaches PostgreSQL');
  assert.equal(await from(config.k8s.namespace, 'unlabelled-probe')(pg, 5432), false, 'an unlabelled pod in the namespace does not');
  assert.equal(await from(OUTSIDER_NS, 'outsider')(pg, 5432), false, 'a pod in another namespace does not');
  assert.equal(await from(INGRESS_NS, 'controller')(pg, 5432), false, 'the ingress controller does not');
});

test('no generated secret in the PostgreSQL image\'s layers or in the namespace\'s ConfigMaps', async (t) => {
  if (skipped(t)) return;
  assert.deepEqual(await imageSecrets(clusterDocker(cc, 'save', CLUSTER_POSTGRES_IMAGE), config), [], `${CLUSTER_POSTGRES_IMAGE} layers`);
  const cms = await k(['get', 'configmaps', '-o', 'json']);
  assert.equal(cms.code, 0, cms.stderr);
  assertNoSecret(config, 'the ConfigMaps', cms.stdout);
});

test('a port-forward reaches PostgreSQL, and the digdag role logs in with the generated password', async (t) => {
  if (skipped(t)) return;
  const port = await freePortRange(1, 61100);
  const logFile = path.join(state, 'pf.log');
  const pid = await runner.spawnBackground({ argv: kubectl(config, 'port-forward', '--address', '127.0.0.1', 'pod/digdag-postgres-0', `${port}:5432`), logFile });
  try {
    assert.ok(await waitFor(async () => !(await isPortFree(port)), 20_000, 300), fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : 'no log');
    const psql = ['/usr/bin/psql', ...fs.readdirSync('/usr/lib/postgresql').map((v) => `/usr/lib/postgresql/${v}/bin/psql`)].find((p) => fs.existsSync(p));
    if (!psql) return t.skip('no psql client on this machine');
    const r = spawnSync(psql, ['-X', '-At', '-h', '127.0.0.1', '-p', String(port), '-U', 'digdag', '-d', 'digdag', '-c', 'select current_user'], { encoding: 'utf8', env: { ...process.env, PGPASSWORD: requireSecrets(config).dbPassword, PGCONNECT_TIMEOUT: '10' } });
    assert.equal(r.stdout.trim(), 'digdag', r.stderr);
  } finally {
    process.kill(pid, 'SIGTERM');
  }
});

test('Digdag on the cluster: the whole pipeline (image build, migration, rollouts, push) and verify-ha', async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime: ${runtimeMissing}`);
  await applyTlsSecret(config, path.join(state, 'front-door'), k); // INGRESS_TLS=existingSecret
  await runSteps(ALL_STEPS, ctx, { renderer: 'silent' });
  deployed = true;
  const summary = ctx.facts.summary ?? '';
  log(summary);
  assert.doesNotMatch(summary, /\bFAIL\b/);
});

test('BigQuery from the worker pods, key mode: the whole sample (bq_ddl>, bq>, sh> bq, bq_extract> to GCS, gcs_wait>) reaches the emulator by Google\'s host names (hostAliases → the edge on the bridge, the test CA in the JVM and the CLI), every request with a token of the key\'s account; a wrong key fails the attempt by itself, naming the cause', { timeout: 600_000 }, async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime: ${runtimeMissing}`);
  if (!gcp) return t.skip(`SKIPPED — ${gcpMissing}`);
  const t0 = Date.now();
  const endpoint = authenticatedEndpoint(config, kubeTarget.apiUrl(ctx));
  // push-workflow's path: the key becomes the project's gcp.credential secret through the API.
  await pushProject(ctx, endpoint, { name: 'bigquery-sample', dir: SAMPLE_DIR });
  const run = await runWorkflow(endpoint, gcp, 'bigquery-sample', 'bigquery', { gcp_project: GCP_TEST_PROJECT, dataset: 'sample_cluster', export_bucket: EXPORT_BUCKET });
  if (!run.success) assert.fail(`${await run.explain()}\n${(await k(['logs', '-l', `app.kubernetes.io/component=${taskRole(config.layout)}`, '--tail=60', '--prefix'])).stdout.slice(-4000)}`);
  assert.deepEqual(await emulatorRows(gcp, 'sample_cluster', 'orders'), SAMPLE_ROWS.orders);
  assert.deepEqual(await emulatorRows(gcp, 'sample_cluster', 'orders_by_region'), SAMPLE_ROWS.orders_by_region);
  const n = assertOneIdentity(run.requests, KEY_SA, 'key', cc.net.bridgeIp);
  // The key reached the pods as a mounted Secret and a Digdag secret: never a log or a ConfigMap.
  const podLogs = async () => (await k(['logs', '-l', 'app.kubernetes.io/name=digdag', '--all-containers', '--tail=-1', '--max-log-requests=20'])).stdout;
  assertKeyNotIn(config.gcp.saKeyFile, 'the pods\' logs', await podLogs());
  assertKeyNotIn(config.gcp.saKeyFile, 'the ConfigMaps', (await k(['get', 'configmaps', '-o', 'json'])).stdout);
  const exported = await assertExported(gcp, 'sample_cluster', run.requests, KEY_SA);
  log(`BigQuery sample in the worker pods: ${n.java} requests from bq>/bq_extract>/gcs_wait>, ${n.cli} from sh> bq, all as ${KEY_SA} (key), ${since(t0)} s; ${exported}`);
  const t1 = Date.now();
  const logsSince = async (time: string) => (await k(['logs', '-l', `app.kubernetes.io/component=${taskRole(config.layout)}`, `--since-time=${time}`, '--tail=-1', '--max-log-requests=20'])).stdout;
  log(`wrong key: ${await proveWrongKey({ endpoint, gcp, account: KEY_SA, logsSince, push: (dir, name) => pushProject(ctx, endpoint, { name, dir }) })} (${since(t1)} s)`);
});

/** Seconds since t0, one decimal. */
function since(t0: number): number {
  return Number(((Date.now() - t0) / 1000).toFixed(1));
}

test('a short chaos soak on the database: the leader\'s PostgreSQL SIGKILLed, then the leader pod deleted, while attempts are submitted — a replica takes over each time, nothing committed is lost, every submitted attempt ends, the old leader rejoins', { timeout: 900_000 }, async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime: ${runtimeMissing}`);
  if (config.db.members < 2) return t.skip(`POSTGRES_MEMBERS=${config.db.members}: no replica to fail over to`);
  const t0 = Date.now();
  const endpoint = authenticatedEndpoint(config, kubeTarget.apiUrl(ctx));
  const wf = await workflowId(endpoint, 'ha-sample', 'parallel');
  const params = { tasks: 1, sleep_seconds: 0 };
  let session = Date.UTC(2001, 0, 1);
  const submit = () => startAttempt(endpoint, wf, new Date((session += 1000)), params);
  const patronictl = (pod: string, ...args: string[]) => k(['exec', pod, '-c', 'postgres', '--', 'patronictl', '-c', '/etc/patroni/patroni.yml', ...args]);
  const leader = await dbPod(ctx);

  // What synchronous replication costs: attempt latency (submit → success) and a commit, each mode.
  const attemptSeconds = async () => {
    const out: number[] = [];
    for (let i = 0; i < 3; i++) {
      const s = Date.now();
      assert.equal((await waitAttempt(endpoint, await submit(), 120_000)).success, true);
      out.push(since(s));
    }
    return out;
  };
  const commitMs = async () => {
    const r = await k(['exec', leader, '-c', 'postgres', '--', 'sh', '-c', 'psql -X -q -U postgres -d postgres -c "create table if not exists sync_probe (x int)" && s=$(date +%s%N) && for i in $(seq 200); do echo "insert into sync_probe values ($i);"; done | psql -X -q -U postgres -d postgres && echo $(( ($(date +%s%N) - s) / 2000000 ))']);
    assert.equal(r.code, 0, r.stderr);
    // 200 autocommitted inserts through one psql: hundredths of a millisecond per commit.
    return Number(r.stdout.trim().split('\n').at(-1)) / 100;
  };
  const sync = { attempts: await attemptSeconds(), commitMs: await commitMs() };
  assert.equal((await patronictl(leader, 'edit-config', '--force', '-s', 'synchronous_mode=false')).code, 0);
  assert.ok(await waitFor(async () => !/Sync Standby/.test((await patronictl(leader, 'list')).stdout), 30_000, 500), 'asynchronous now');
  const async_ = { attempts: await attemptSeconds(), commitMs: await commitMs() };
  assert.equal((await patronictl(leader, 'edit-config', '--force', '-s', 'synchronous_mode=true')).code, 0);
  assert.ok(await waitFor(async () => /Sync Standby/.test((await patronictl(leader, 'list')).stdout), 60_000, 500), 'a synchronous standby again');
  log(`replication cost: synchronous attempts ${sync.attempts.join('/')} s, ${sync.commitMs} ms/commit; asynchronous attempts ${async_.attempts.join('/')} s, ${async_.commitMs} ms/commit`);

  // The soak task's own code (tasks/soak.ts), short: two kills of the leader, one of each kind.
  const report = await soak(ctx, kubeTarget, {
    durationMs: SOAK_SECONDS * 1000, killEveryMs: (SOAK_SECONDS / 3) * 1000, submitEveryMs: 2000, kills: ['db-postgres', 'db-pod'], order: 'cycle',
    seed: 1, settleMs: 240_000, recoverMs: 240_000, fanout: 2, log,
  });
  for (const line of soakSummary(report)) log(line);
  assert.equal(report.kills.length, 2, 'two kills');
  for (const kill of report.kills) {
    assert.notEqual(kill.recoveredS, null, `after kill ${kill.n} (${kill.kind} ${kill.victim}) every member is back and ready with one leader`);
    assert.notEqual(kill.newLeader, kill.victim, `a replica took over from ${kill.victim}`);
    assert.notEqual(kill.firstWriteS, null, `writes were accepted again after kill ${kill.n}`);
  }
  assert.ok(report.submitted >= 20, `attempts were submitted throughout: ${report.submitted}`);
  assert.equal(report.lost, 0, 'every attempt whose id came back is in the database');
  assert.equal(report.unfinished, 0, 'every submitted attempt ended');
  assert.equal(report.failed, 0, `no attempt failed: ${report.failures.join('; ')}`);
  // Every victim is back in the cluster, Ready and following or leading (the first one rejoined as
  // a replica; the second kill may have promoted it again, which Patroni's synchronous mode allows
  // only for a standby that had caught up).
  const list = (await patronictl(await dbPod(ctx), 'list')).stdout;
  for (const victim of new Set(report.kills.map((kill) => kill.victim))) {
    const label = (await k(['get', 'pod', victim, '-o', 'jsonpath={.metadata.labels.role} {.status.conditions[?(@.type=="Ready")].status}'])).stdout.trim();
    assert.match(label, /^(replica|master|primary) True$/, `${victim} rejoined: ${list}`);
  }
  assert.doesNotMatch(list, /stopped|crashed|start failed/, list);
  log(`database soak test ${since(t0)} s in all`);
});

test('Digdag on the cluster is closed to the wrong pods and to requests without credentials; open with them (browser, CLI)', { timeout: 600_000 }, async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime: ${runtimeMissing}`);
  // verify-ha tried every role's pod without, with a wrong and with the generated credentials.
  const checks = ctx.facts.checks;
  assert.ok(checks, 'verify-ha recorded its checks');
  for (const role of layoutRoles(config)) assert.ok(checks.some((c) => c.ok && c.role === role && /\b401\b/.test(c.what)), `no passing authentication check for ${role}`);
  const ip = (role: string) => firstPod(config.k8s.namespace, `app.kubernetes.io/component=${role}`);
  const ui = await ip('ui');
  const worker = await ip(taskRole(config.layout));
  const scheduler = await ip('scheduler');
  const controller = from(INGRESS_NS, 'controller');
  assert.ok(await waitFor(() => controller(ui.ip, 65432), 30_000, 500), 'the ingress controller reaches the UI/API pods');
  assert.equal(await controller(worker.ip, 65432), false, `the ingress controller does not reach ${worker.name}`);
  assert.equal(await controller(scheduler.ip, 65432), false, `the ingress controller does not reach ${scheduler.name}`);
  assert.equal(await from(INGRESS_NS, 'impostor')(ui.ip, 65432), false, 'a pod in the controller\'s namespace with other labels does not reach the UI');
  assert.equal(await from(OUTSIDER_NS, 'outsider')(ui.ip, 65432), false, 'a pod in another namespace does not reach the UI');
  assert.equal(await from(OUTSIDER_NS, 'outsider')(worker.ip, 65432), false, 'nor a worker');
  // From inside a task-running pod (where users' sh> code runs): PostgreSQL yes, the UI no.
  const fromWorker = async (host: string, port: number) => {
    const r = await k(['exec', worker.name, '-c', 'digdag', '--', 'bash', '-c', `if timeout 3 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>/dev/null; then echo CONNECTED; else echo BLOCKED; fi`]);
    assert.match(r.stdout.trim(), /^(CONNECTED|BLOCKED)$/, `probe from ${worker.name} did not run: ${r.stderr}`);
    return r.stdout.trim() === 'CONNECTED';
  };
  assert.equal(await fromWorker(await podIp('digdag-postgres-0'), 5432), true, `${worker.name} reaches PostgreSQL`);
  assert.equal(await fromWorker(ui.ip, 65432), false, `${worker.name} (sh> tasks) cannot call the UI/API pods`);
  // Secrets: not in what a sh> task sees, the Digdag image's layers, any pod's log, any ConfigMap.
  // No log server on Kubernetes: the task also writes its dump to its pod's /tmp (an emptyDir).
  const dumpFile = `/tmp/leak-probe-${Date.now()}.txt`;
  const readDump = async () => {
    const names = (await k(['get', 'pods', '-l', `app.kubernetes.io/component=${taskRole(config.layout)}`, '-o', 'jsonpath={.items[*].metadata.name}'])).stdout.trim().split(/\s+/);
    const dumps = await Promise.all(names.map(async (n) => (await k(['exec', n, '-c', 'digdag', '--', 'sh', '-c', `cat ${dumpFile} 2>/dev/null || true`])).stdout));
    return dumps.join('');
  };
  assertNoSecret(config, 'a sh> task\'s environment or parent command line', await shTaskSees(ctx, authenticatedEndpoint(config, kubeTarget.apiUrl(ctx)), { path: dumpFile, read: readDump }));
  assert.deepEqual(await imageSecrets(clusterDocker(cc, 'save', config.k8s.image), config), [], `${config.k8s.image} layers`);
  const logs = await k(['logs', '-l', 'app.kubernetes.io/name=digdag', '--all-containers', '--prefix', '--tail=-1', '--max-log-requests=20']);
  assert.equal(logs.code, 0, logs.stderr);
  assertNoSecret(config, 'the pods\' logs', logs.stdout);
  assertNoSecret(config, 'the ConfigMaps', (await k(['get', 'configmaps', '-o', 'json'])).stdout);
  // A person: the web UI and the CLI through the port-forward (kubelet probes and port-forward
  // are not subject to NetworkPolicy; the pods being Ready shows the probes pass).
  const url = kubeTarget.apiUrl(ctx);
  const noBrowser = await proveBrowserLogin(config, url);
  await proveCliLogin(config, runner, url);
  if (noBrowser) t.skip(`browser part SKIPPED: ${noBrowser} (the rest ran)`);
});

test('the front door: Traefik serves the Ingress as rendered for nginx — HTTP→HTTPS, the Secret\'s certificate from the test CA, 401 at the edge and at Digdag, 200 with credentials, a session sticking to one of two UI pods, the browser login and digdag push/start through it', { timeout: 600_000 }, async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime: ${runtimeMissing}`);
  if (door.missing) return t.skip(`SKIPPED — no Ingress controller: ${door.missing}`);
  const t0 = Date.now();
  const r = await proveFrontDoor({ ctx, runner, dir: path.join(state, 'front-door'), k, apiUrl: kubeTarget.apiUrl(ctx), log });
  log(`front door ${since(t0)} s`);
  if (r.browserSkipped) t.skip(`browser part SKIPPED: ${r.browserSkipped} (the rest ran)`);
});

// Queue-driven scaling with KEDA (suites/keda.ts), on this file's own deployment — its ScaledObject
// applied over it — before the purge below takes the namespace: KEDA's burst, scale to zero, then
// the CPU HPA.
const kedaSuite = kedaTests({
  runner,
  skipReason: () => skipReason,
  runtimeMissing: () => runtimeMissing,
  kedaMissing: () => kedaWhy,
  metricsServerMissing: () => metricsWhy,
  cluster: () => cc,
  deployment: () => (deployed ? deployVars : undefined),
});

test('down --purge removes the namespace, says what happens to the Retain volume, deletes the local secrets', async (t) => {
  if (skipped(t)) return;
  const lines = await kubeTarget.down(ctx, true);
  assert.ok(lines.some((l) => /reclaim policy Retain: it and the database on it are kept/.test(l)), lines.join('\n'));
  assert.equal(fs.existsSync(path.join(config.stateDir, 'secrets')), false);
  assert.ok(await waitFor(async () => (await k(['get', 'namespace', config.k8s.namespace])).code !== 0, 120_000, 1000), 'namespace gone');
  assert.ok(fs.existsSync(clusterPaths(cc).kubeconfig));
});

test('the chart on the real cluster: installs with its NetworkPolicies into a restricted namespace, becomes ready, passes helm test, admits only the ingress controller; its database is "Cloud SQL" through the real Auth Proxy sidecar, which survives being killed; Digdag in it keyless (ADC) with GCS task logs', { timeout: 900_000 }, async (t) => {
  if (skipped(t)) return;
  if (runtimeMissing) return t.skip(`SKIPPED — needs a Digdag runtime (the chart runs the Digdag image): ${runtimeMissing}`);
  const ns = 'digdag-release';
  await restrictedNamespace(kcmd, ns);
  // Cloud SQL through the proxy sidecar, key-authenticated (test/helpers/gcp/cloudsql-cluster.ts).
  const sqlMissing = clusterCloudSqlMissing(gcpMissing);
  const t1 = Date.now();
  const sql = sqlMissing ? undefined : await startClusterCloudSql({ gcp: gcp!, cc, runner, dir: path.join(state, 'cloudsql'), keyFile: config.gcp.saKeyFile, log });
  if (sql) assert.equal((await kc(['apply', '-f', '-'], sql.keySecret(ns))).code, 0);
  if (sql) log(`Cloud SQL stand-in for the chart (proxy image, PostgreSQL, Admin API, listener) in ${since(t1)} s`);
  const colon = config.k8s.image.lastIndexOf(':');
  const small = ['ui', 'worker', 'scheduler'].flatMap((r) => ['--set', `roles.${r}.resources.requests.cpu=50m`, '--set', `roles.${r}.resources.requests.memory=256Mi`]);
  const helm = (args: string[], timeoutMs = 60_000) => runner.run({ argv: [helmBin(), '--kubeconfig', clusterPaths(cc).kubeconfig, '-n', ns, ...args], quiet: true, nothrow: true, timeoutMs });
  // Digdag keyless: ADC from the metadata server on the bridge (Workload Identity's stand-in), GCS task logs.
  const keyless = gcp && await keylessReleaseValues(gcp, { bridgeIp: cc.net.bridgeIp, account: ADC_SA, bucket: LOG_BUCKET });
  const tInstall = Date.now();
  const install = await helm(['install', 'dd', path.join(ROOT, 'chart', 'digdag-ha'), '--wait', '--timeout', '12m',
    '--set', `image.repository=${config.k8s.image.slice(0, colon)}`, '--set', `image.tag=${config.k8s.image.slice(colon + 1)}`,
    '--set', `postgres.image=${CLUSTER_POSTGRES_IMAGE}`, '--set', 'postgres.storage=1Gi',
    // The test cluster's CoreDNS is a node process: the node's address joins the DNS peers.
    '--set', `networkPolicy.dnsCidrs={169.254.20.10/32,${cc.net.bridgeIp}/32}`, ...small, ...(sql ? ['-f', sql.valuesFile] : []), ...(keyless?.args ?? [])], 13 * 60_000);
  try {
    assert.equal(install.code, 0, `${install.stdout}\n${install.stderr}\n${(await kc(['get', 'pods,events', '-n', ns])).stdout}${sql ? `\n${await proxyDiagnostics(sql, gcp!, kcmd, ns)}` : ''}`);
    log(`chart installed and ready in ${since(tInstall)} s (${sql ? 'Cloud SQL through the proxy sidecar' : 'in-cluster PostgreSQL'})`);
    const policies = (await kc(['get', 'networkpolicies', '-n', ns, '-o', 'name'])).stdout;
    assert.match(policies, /default-deny/, policies);
    const test = await helm(['test', 'dd', '--timeout', '5m'], 6 * 60_000);
    assert.equal(test.code, 0, `${test.stdout}\n${test.stderr}`);
    assert.match(test.stdout, /Phase:\s+Succeeded/);
    const { ip: ui } = await firstPod(ns, 'digdag-ha/api=true');
    const { ip: worker } = await firstPod(ns, 'app.kubernetes.io/component=worker');
    assert.ok(await waitFor(() => from(INGRESS_NS, 'controller')(ui, 65432), 30_000, 500), 'the ingress controller reaches the chart\'s UI pods');
    assert.equal(await from(OUTSIDER_NS, 'outsider')(ui, 65432), false, 'another namespace does not');
    assert.equal(await from(INGRESS_NS, 'controller')(worker, 65432), false, 'nobody reaches the chart\'s workers');
    // Keyless first: its no-identity case needs JVMs that have not yet got a Google credential.
    if (keyless) {
      const t3 = Date.now();
      for (const l of await proveKeylessRelease({ config, runner, kubectl: (...a) => clusterKubectl(config, ...a), ns, gcp: gcp!, metadata: keyless.metadata, account: ADC_SA, bucket: LOG_BUCKET, bridgeIp: cc.net.bridgeIp, log })) log(l);
      log(`keyless release (no identity, ADC sample, GCS task logs): ${since(t3)} s`);
    }
    if (sql) {
      const t2 = Date.now();
      const p = await proveThroughProxy({ sql, gcp: gcp!, cc, runner, k: kcmd, ns, keySa: KEY_SA, vars: runtimeVars, log });
      log(`Cloud SQL Auth Proxy sidecar: ${p.connections} instance connections, ${p.adminCalls} Admin API calls; attempts ${p.attempts.before}/${p.attempts.during}/${p.attempts.after} (before/while/after) succeeded; proxies of ${p.killed.join(', ')} SIGKILLed mid-attempt, ready again in ${p.restartSeconds} s; ${since(t2)} s`);
    }
  } finally {
    await helm(['uninstall', 'dd', '--wait', '--timeout', '3m'], 4 * 60_000);
    await kc(['delete', 'namespace', ns, '--wait=false']);
    await sql?.stop();
  }
  if (sqlMissing) t.skip(`Cloud SQL Auth Proxy part SKIPPED: ${sqlMissing} (the rest ran)`);
});
