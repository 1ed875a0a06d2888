// Kubernetes tasks under the recording runner (no cluster or Docker engine here): the exact
// commands on minikube and gke, and the failure paths. `helm template` runs for real.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { UserError } from '../../lib/errors.ts';
import { runStep, runSteps } from '../../lib/pipeline.ts';
import { freePortRange } from '../../lib/ports.ts';
import { listProcesses } from '../../lib/processes.ts';
import { RecordingRunner, ShellRunner, type Cmd, type Result } from '../../lib/runner.ts';
import { cacheDir } from '../../lib/digdag.ts';
import { monitoringCacheDir, obtainJmxExporter } from '../../lib/metrics.ts';
import { LAYOUT_ROLES, LAYOUTS } from '../../lib/roles.ts';
import { JMX_EXPORTER_SHA256, JMX_EXPORTER_VERSION } from '../../lib/versions.ts';
import { clusterPaths, loadClusterConfig } from '../../lib/cluster/config.ts';
import { clusterImageHost } from '../../lib/cluster/image-host.ts';
import { DIGDAG_PATCH_CLASSES } from '../../lib/digdag-patches.ts';
import { builtImageId, valuesFromConfig } from '../../lib/kube/values.ts';
import { sha256File } from '../../lib/digdag.ts';
import { buildArgv, buildImage as buildImageOn, imagesToBuild } from '../../lib/kube/build-image.ts';
import { namespaceLeft, stopDigdagFirst, volumeFate, waitNamespaceGone } from '../../lib/kube/down.ts';
import { kubeTargetWith } from '../../lib/kube/target.ts';
import type { ImageHost } from '../../lib/image-host.ts';
import { ROOT } from '../../lib/paths.ts';
import { kubeTarget } from '../../tasks/steps.ts';
import { recoverStuckStatefulSet, stuckPods } from '../../lib/kube/kubectl.ts';
import { apply } from '../../tasks/apply.ts';
import { buildImage } from '../../tasks/build-image.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { e2e, e2eConfig } from '../../tasks/e2e.ts';
import { parseFlags } from '../../lib/cli.ts';
import { initDb } from '../../tasks/init-db.ts';
import { portForward } from '../../tasks/port-forward.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { CHART } from '../helpers/chart.ts';
import { helmBin } from '../helpers/tools.ts';
import { fakeSdk } from '../helpers/fake-sdk.ts';

type Answer = Partial<Result> | undefined;

/** A cluster that answers: kubectl version says there is a server; helm template runs for real. */
function cluster(extra: (argv: readonly string[], cmd: Cmd) => Answer = () => undefined) {
  return (argv: readonly string[], cmd: Cmd): Answer => {
    const own = extra(argv, cmd);
    if (own) return own;
    if (argv[0] === 'helm') {
      const r = spawnSync(helmBin(), argv.slice(1), { encoding: 'utf8' });
      return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
    }
    if (argv[0] === 'kubectl' && argv.includes('version')) return { stdout: '{"clientVersion":{},"serverVersion":{"gitVersion":"v1.31.0"}}' };
    if (argv.includes('create') && argv.includes('--dry-run=client')) return { stdout: 'apiVersion: v1\nkind: Secret\n' };
    return undefined;
  };
}

const mk = (vars: Record<string, string> = {}) => testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars });
const K = (c: Config) => `kubectl --context ${c.k8s.context} -n ${c.k8s.namespace}`;
/** The render: the chart through helm template with the config's values from the state dir. */
const H = (c: Config) => `helm template digdag ${CHART} --namespace ${c.k8s.namespace} --skip-tests -f ${path.join(c.stateDir, 'helm', 'values.yaml')}`;

/** The real agent jar in this config's runtime cache (fetched once with real Maven into the shared monitoring cache). */
async function seedJmxAgent(config: Config): Promise<string> {
  const shared = await obtainJmxExporter(monitoringCacheDir(), config.digdag.mavenRepoUrl, new ShellRunner(false, () => {}));
  const dir = path.join(cacheDir(config), 'jmx-exporter');
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(shared, path.join(dir, path.basename(shared)));
  return dir;
}

/** A Digdag runtime build-image can hold without a download: a jar of our own with its checksum. */
function fakeJar(): Record<string, string> {
  const jar = path.join(tempDir('jar-'), 'digdag-0.10.5.1.jar');
  fs.writeFileSync(jar, 'not really a jar');
  // digdag-ha's patches cannot compile against it: off here, on (with javac answered) below.
  // The image's Google Cloud CLI from a small stand-in SDK (lib/kube/gcloud-sdk.ts has its own tests).
  return { DIGDAG_SOURCE: 'jar', DIGDAG_JAR: jar, DIGDAG_JAR_SHA256: sha256File(jar), DIGDAG_PATCHES: 'false', GCLOUD_SDK: fakeSdk() };
}

test('build-image on minikube: the held runtime copied into the context (checksums listed), digdag-ha\'s patches compiled into it, docker build, then minikube image load', async () => {
  const config = mk({ ...fakeJar(), DIGDAG_PATCHES: 'true' });
  await seedJmxAgent(config);
  let patchInContext = false;
  const r = new RecordingRunner(cluster((argv) => {
    if (argv[0] === 'java' && argv[1] === '-version') return { stderr: 'openjdk version "17.0.15" 2025-04-15\n' };
    if (argv.includes('inspect') && argv.includes('{{.Id}}')) return { stdout: `sha256:${'b'.repeat(64)}\n` };
    // javac: the compiled classes where -d says (the real compile is in test/unit/digdag-patches.test.ts).
    if (argv[0]!.endsWith('javac')) {
      for (const c of DIGDAG_PATCH_CLASSES) {
        const out = path.join(argv[argv.indexOf('-d') + 1]!, `${c}.class`);
        fs.mkdirSync(path.dirname(out), { recursive: true });
        fs.writeFileSync(out, 'class');
      }
      return { stdout: '' };
    }
    // The context exists while docker build runs: the jar and its SHA256SUMS are in it.
    if (argv.includes('build')) {
      const ctxDir = argv.at(-1)!;
      const sums = fs.readFileSync(path.join(ctxDir, 'digdag', 'SHA256SUMS'), 'utf8');
      assert.equal(sums, `${sha256File(config.digdag.jar)}  digdag-0.10.5.1.jar\n`);
      assert.ok(fs.existsSync(path.join(ctxDir, 'entrypoint.sh')));
      assert.ok(fs.existsSync(path.join(ctxDir, 'jmx-exporter', `jmx_prometheus_javaagent-${JMX_EXPORTER_VERSION}.jar`)));
      assert.ok(fs.existsSync(path.join(ctxDir, 'jmx-exporter', 'config.yaml')));
      patchInContext = DIGDAG_PATCH_CLASSES.every((c) => fs.existsSync(path.join(ctxDir, 'digdag-patches', `${c}.class`)));
      // The SDK's core, not its other components or settings.
      assert.ok(fs.existsSync(path.join(ctxDir, 'google-cloud-sdk', 'bin', 'gcloud')));
      assert.ok(!fs.existsSync(path.join(ctxDir, 'google-cloud-sdk', 'bin', 'kubectl')));
      assert.doesNotMatch(fs.readFileSync(path.join(ctxDir, 'google-cloud-sdk', 'properties'), 'utf8'), /account/);
    }
    return undefined;
  }));
  await runStep(buildImage, testCtx(config, r));
  const context = path.join(config.stateDir, 'image-context');
  assert.ok(patchInContext, 'the compiled patches are in the context\'s digdag-patches/ (the Dockerfile copies them)');
  const cmds = r.commands().filter((c) => !c.startsWith('java -version') && !c.includes('image inspect'));
  // The built image's ID, for the pods' annotation (a rebuild under the same tag rolls them).
  assert.equal(builtImageId(config), `sha256:${'b'.repeat(64)}`);
  assert.equal((valuesFromConfig(config) as { image: { buildId: string } }).image.buildId, `sha256:${'b'.repeat(64)}`);
  assert.match(cmds[1]!, new RegExp(`^javac --release 8 -nowarn -encoding UTF-8 -cp ${config.digdag.jar} -d ${context}/digdag-patches\\.tmp-\\d+ .*/docker/digdag-patches/io/digdag/core/agent/InProcessTaskCallbackApi\\.java .*/docker/digdag-patches/io/digdag/core/agent/MultiThreadAgent\\.java .*/docker/digdag-patches/io/digdag/standards/operator/gcp/GcpCredentialProvider\\.java$`));
  assert.deepEqual([cmds[0], ...cmds.slice(2)], [
    'docker info --format {{.ServerVersion}}',
    `docker build -f ${context}/Dockerfile -t digdag-ha:0.10.5.1 --build-arg INSTALL_GCLOUD=true --build-arg TZ=Asia/Tokyo --build-arg LANG=ja_JP.UTF-8 ${context}`,
    'minikube -p digdag-ha image load digdag-ha:0.10.5.1',
  ]);
  assert.equal(fs.existsSync(context), false, 'the context (a copy of the jar) is removed after the build');
});

test('build-image with BASE_IMAGE passes it as a build arg; the cluster target builds PostgreSQL too, through its own dockerd with the host network', async () => {
  const base = mk({ ...fakeJar(), BASE_IMAGE: 'mirror.example.com/debian:bookworm' });
  await seedJmxAgent(base);
  const r = new RecordingRunner(cluster());
  await runStep(buildImage, testCtx(base, r));
  assert.match(r.commands()[1]!, / --build-arg BASE_IMAGE=mirror\.example\.com\/debian:bookworm /);
  const own = testConfig({ DIGDAG_HA_TARGET: 'cluster', ...fakeJar() });
  assert.deepEqual(imagesToBuild(own).map((i) => i.image), ['digdag-ha:0.10.5.1', 'digdag-ha.local/postgres:15']);
  assert.equal(own.k8s.installGcloud, true, 'the own cluster\'s image has gcloud too (from an installed SDK)');
  assert.equal(own.k8s.baseImage, 'digdag-ha-base:bookworm');
  const cc = loadClusterConfig(own);
  const argv = buildArgv(own, clusterImageHost(own), 'digdag-ha.local/postgres:15', '/x/Dockerfile', '/x');
  assert.deepEqual(argv.slice(1), ['-H', `unix://${clusterPaths(cc).dockerSock}`, 'build', '-f', '/x/Dockerfile', '-t', 'digdag-ha.local/postgres:15', '--network', 'host', '--build-arg', 'BASE_IMAGE=digdag-ha-base:bookworm', '/x']);
  assert.deepEqual(imagesToBuild(testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_IMAGE: 'mirror.example.com/postgres:15' })).map((i) => i.image), ['digdag-ha:0.10.5.1'], 'a user-given PostgreSQL image is not built');
});

test('the own cluster keeps built images across clusters: the same build is loaded, a changed context or base builds again', async () => {
  const own = testConfig({ DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_CACHE_DIR: tempDir() });
  const cc = loadClusterConfig(own);
  const context = tempDir();
  fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM x\n');
  fs.writeFileSync(path.join(context, 'entrypoint.sh'), 'echo 1\n');
  let layers = '["sha256:aaa"]';
  const engine = (argv: readonly string[]) => {
    if (argv.includes('inspect')) return { stdout: layers };
    // `docker save -o F`: the engine writes the file.
    const o = argv.indexOf('-o');
    if (argv.includes('save') && o > 0) fs.writeFileSync(argv[o + 1]!, 'image');
    return undefined;
  };
  const r = new RecordingRunner(engine);
  const host = clusterImageHost(own);
  const build = () => buildImageOn(r, own, host, 'digdag-ha.local/postgres:15', path.join(context, 'Dockerfile'), context);
  const verbs = () => r.commands().map((c) => c.split(' ').find((w) => ['build', 'save', 'load'].includes(w))).filter(Boolean);
  assert.equal(await build(), 'built');
  assert.equal(await build(), 'loaded from the image cache');
  assert.deepEqual(verbs(), ['build', 'save', 'load']);
  // Another cluster (its own dockerd socket) and another state dir's copy of the context: the same build.
  const elsewhere = testConfig({ DIGDAG_HA_TARGET: 'cluster', DIGDAG_HA_CACHE_DIR: cc.cacheDir, DIGDAG_HA_CLUSTER_DIR: tempDir() });
  const copy = tempDir();
  for (const f of fs.readdirSync(context)) fs.copyFileSync(path.join(context, f), path.join(copy, f));
  assert.notEqual(clusterImageHost(elsewhere).docker()[2], host.docker()[2], 'the two clusters have different engine sockets');
  assert.equal(await buildImageOn(r, elsewhere, clusterImageHost(elsewhere), 'digdag-ha.local/postgres:15', path.join(copy, 'Dockerfile'), copy), 'loaded from the image cache');
  fs.writeFileSync(path.join(context, 'entrypoint.sh'), 'echo 2\n');
  assert.equal(await build(), 'built', 'a changed context file builds again');
  layers = '["sha256:bbb"]';
  assert.equal(await build(), 'built', 'another base builds again');
  assert.equal(fs.readdirSync(path.join(cc.cacheDir, 'images')).length, 1, 'only the newest build of an image is kept');
  // A damaged file is dropped and the image built instead.
  const failing = new RecordingRunner((argv) => {
    if (argv.includes('load')) return { code: 1, stderr: 'unexpected EOF' };
    return engine(argv);
  });
  assert.equal(await buildImageOn(failing, own, host, 'digdag-ha.local/postgres:15', path.join(context, 'Dockerfile'), context), 'built');
  assert.equal(await build(), 'loaded from the image cache', 'the rebuilt image replaced the damaged file');
});

test('build-image on gke pushes to the registry; without a Docker engine it stops with the fix', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'gke', IMAGE: 'asia-northeast1-docker.pkg.dev/p/r/digdag-ha:1', ...fakeJar() });
  await seedJmxAgent(config);
  const r = new RecordingRunner(cluster());
  await runStep(buildImage, testCtx(config, r));
  assert.deepEqual(r.commands().slice(-2), ['docker push asia-northeast1-docker.pkg.dev/p/r/digdag-ha:1', 'docker image inspect --format {{.Id}} asia-northeast1-docker.pkg.dev/p/r/digdag-ha:1']);
  const none = new RecordingRunner((argv) => (argv[0] === 'docker' ? { code: 1, stderr: 'Cannot connect to the Docker daemon' } : undefined));
  await assert.rejects(runStep(buildImage, testCtx(config, none)), (e: unknown) => e instanceof UserError && /no Docker engine answers/.test(e.message));
  assert.deepEqual(none.commands(), ['docker info --format {{.ServerVersion}}']);
});

test('build-image on the own cluster goes through the image host the tasks layer hands the Kubernetes target; without one it refuses', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'cluster', ...fakeJar() });
  await seedJmxAgent(config);
  const loaded: string[] = [];
  const host: ImageHost = {
    docker: (...args) => ['own-docker', ...args],
    buildOnHostNetwork: true,
    noEngineHint: 'start the own dockerd',
    prepare: async () => 'base: present',
    load: async (_runner, image) => void loaded.push(image),
  };
  const r2 = new RecordingRunner(cluster());
  await kubeTargetWith({ ownClusterImages: () => host }).steps['build-image'].run(testCtx(config, r2));
  const context = path.join(config.stateDir, 'image-context');
  assert.deepEqual(r2.commands(), [
    'own-docker info --format {{.ServerVersion}}',
    `own-docker build -f ${context}/Dockerfile -t digdag-ha:0.10.5.1 --network host --build-arg BASE_IMAGE=digdag-ha-base:bookworm --build-arg INSTALL_GCLOUD=true --build-arg TZ=Asia/Tokyo --build-arg LANG=ja_JP.UTF-8 ${context}`,
    // The built Digdag image's ID, for the pods' annotation.
    'own-docker image inspect --format {{.Id}} digdag-ha:0.10.5.1',
    `own-docker build -f ${path.join(ROOT, 'docker', 'postgres', 'Dockerfile')} -t digdag-ha.local/postgres:15 --network host --build-arg BASE_IMAGE=digdag-ha-base:bookworm ${path.join(ROOT, 'docker', 'postgres')}`,
  ]);
  assert.deepEqual(loaded, ['digdag-ha:0.10.5.1', 'digdag-ha.local/postgres:15']);
  await assert.rejects(kubeTargetWith({}).steps['build-image'].run(testCtx(config, new RecordingRunner(cluster()))), /without the own cluster's image host/);
});

test('create-secret: namespace and Secret through kubectl create --dry-run | kubectl apply -f -, values never in argv', async () => {
  const key = path.join(tempDir(), 'key.json');
  fs.writeFileSync(key, '{"type":"service_account","client_email":"x@y"}');
  const config = mk({ GCP_SA_KEY_FILE: key });
  const r = new RecordingRunner(cluster());
  await runStep(createSecret, testCtx(config, r));
  const dir = path.join(config.stateDir, 'secrets');
  assert.deepEqual(r.commands(), [
    H(config),
    `${K(config)} version --request-timeout=10s -o json`,
    `${K(config)} apply -f -`,
    `${K(config)} create secret generic digdag-secrets --from-file=secret.properties=${dir}/.digdag-secrets/secret.properties --from-file=db-password=${dir}/.digdag-secrets/db-password --from-file=postgres-password=${dir}/.digdag-secrets/postgres-password --dry-run=client -o yaml`,
    `${K(config)} apply -f -`,
    `${K(config)} create secret generic digdag-api-credentials --from-file=username=${dir}/.digdag-api-credentials/username --from-file=password=${dir}/.digdag-api-credentials/password --dry-run=client -o yaml`,
    `${K(config)} apply -f -`,
    `${K(config)} create secret generic digdag-gcp-key --from-file=key.json=${dir}/.digdag-gcp-key/key.json --dry-run=client -o yaml`,
    `${K(config)} apply -f -`,
  ]);
  // The one Namespace definition, Pod Security labels included (a later apply keeps them).
  assert.match(r.calls[2]!.input!, /kind: Namespace\n[\s\S]*pod-security.kubernetes.io\/enforce: restricted/);
  assert.doesNotMatch(r.calls[2]!.input!, /kind: (?!Namespace)/);
  const s = ensureSecrets(config).secrets;
  for (const c of r.calls) for (const v of [s.dbPassword, s.encryptionKey, s.postgresPassword, s.apiPassword]) assert.ok(!c.argv.join(' ').includes(v));
  assert.ok(r.lines.some((l) => l.includes('get secret digdag-api-credentials')), 'says how to read the password');
  assert.equal(fs.existsSync(path.join(dir, '.digdag-secrets')), false, 'the 0600 staging files are removed');
});

test('create-secret with a DATABASE_URL without a password (as tasks/gcp.ts writes it) puts the generated one into the Secret', async () => {
  const config = mk({ DATABASE_URL: 'postgresql://digdag@127.0.0.1:5432/digdag', CLOUDSQL_INSTANCE: 'my-project:asia-northeast1:digdag-pg' });
  const staged: string[] = [];
  const answer = cluster();
  const r = new RecordingRunner((argv, cmd) => {
    const from = argv.find((a) => a.startsWith('--from-file=db-password='));
    if (from) staged.push(fs.readFileSync(from.slice('--from-file=db-password='.length), 'utf8'));
    return answer(argv, cmd);
  });
  await runStep(createSecret, testCtx(config, r));
  assert.deepEqual(staged, [ensureSecrets(config).secrets.dbPassword]);
});

test('create-secret with EDGE_AUTH=nginx-basic adds the htpasswd Secret; AUTH=none creates no API credentials and says so', async () => {
  const edge = mk({ EDGE_AUTH: 'nginx-basic' });
  const r = new RecordingRunner(cluster());
  await runStep(createSecret, testCtx(edge, r));
  const dir = path.join(edge.stateDir, 'secrets');
  assert.ok(r.commands().includes(`${K(edge)} create secret generic digdag-edge-auth --from-file=auth=${dir}/.digdag-edge-auth/auth --dry-run=client -o yaml`));
  const none = mk({ AUTH: 'none' });
  const n = new RecordingRunner(cluster());
  await runStep(createSecret, testCtx(none, n));
  assert.ok(!n.commands().some((c) => c.includes('digdag-api-credentials') || c.includes('digdag-edge-auth')));
  assert.ok(n.lines.some((l) => /WARNING: AUTH=none/.test(l)));
});

test('an unreachable cluster stops the task before any change, naming the fix', async () => {
  const config = mk();
  const r = new RecordingRunner((argv) => (argv.includes('version') ? { code: 1, stderr: 'Unable to connect to the server: dial tcp 192.168.49.2:8443: connect: no route to host' } : undefined));
  await assert.rejects(runStep(apply, testCtx(config, r)), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /cluster \(context digdag-ha\) does not answer/);
    assert.match(e.fix!, /minikube start -p digdag-ha/);
    assert.match(e.detail!, /no route to host/);
    return true;
  });
  assert.ok(r.calls.every((c) => !c.mutates), 'nothing was changed');
});

for (const layout of LAYOUTS) test(`apply (layout ${layout}): render, validate, kubectl apply on stdin, then rollout status per role`, async () => {
  const config = mk({ DIGDAG_HA_LAYOUT: layout });
  const r = new RecordingRunner(cluster());
  await runStep(apply, testCtx(config, r));
  assert.deepEqual(r.commands(), [
    `${K(config)} version --request-timeout=10s -o json`,
    H(config),
    `${K(config)} apply -f -`,
    ...LAYOUT_ROLES[layout].map((role) => `${K(config)} rollout status deployment/digdag-${role} --timeout=300s`),
  ]);
  const applied = r.calls[2]!.input!;
  assert.match(applied, /kind: Deployment/);
  assert.doesNotMatch(applied, /kind: Job/, 'the migration Job is init-db\'s');
});

test('a rollout that times out shows the FailedScheduling cause, the crashed container\'s previous log, events and pod state', async () => {
  const config = mk({ DIGDAG_HA_LAYOUT: 'split' });
  const pods = { items: [
    { metadata: { name: 'digdag-workflow-1' }, status: { containerStatuses: [{ name: 'digdag', restartCount: 3 }] } },
    // Running for a while, never ready, never restarted: only its current log says why.
    { metadata: { name: 'digdag-workflow-3' }, status: { containerStatuses: [{ name: 'digdag', restartCount: 0, ready: false, state: { running: {} } }] } },
    { metadata: { name: 'digdag-workflow-4' }, status: { containerStatuses: [{ name: 'digdag', restartCount: 0, ready: true, state: { running: {} } }] } },
  ] };
  const r = new RecordingRunner(cluster((argv) => {
    if (argv.includes('rollout') && argv.includes('deployment/digdag-workflow')) return { code: 1, stderr: 'error: timed out waiting for the condition' };
    if (argv.includes('reason=FailedScheduling')) return { stdout: 'digdag-workflow-2  0/1 nodes are available: 1 Insufficient cpu' };
    if (argv.includes('reason=ProvisioningFailed')) return { stdout: 'data-digdag-postgres-0  failed to provision volume with StorageClass "standard": insufficient capacity' };
    if (argv.includes('pods') && argv.includes('json')) return { stdout: JSON.stringify(pods) };
    if (argv.includes('--previous')) return { stdout: 'Exception in thread "main" java.lang.reflect.InaccessibleObjectException' };
    if (argv.includes('logs') && argv.includes('digdag-workflow-3')) return { stdout: 'FATAL: password authentication failed for user "digdag"' };
    if (argv.includes('events')) return { stdout: 'Warning  BackOff  pod/digdag-workflow-1' };
    if (argv.includes('describe')) return { stdout: 'Status: Pending' };
    return undefined;
  }));
  await assert.rejects(runStep(apply, testCtx(config, r)), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /deployment\/digdag-workflow did not become ready within 300s/);
    assert.match(e.detail!, /FailedScheduling:\n.*Insufficient cpu/);
    assert.match(e.detail!, /logs digdag-workflow-1 -c digdag --previous \(restarted 3x\):\n.*InaccessibleObjectException/);
    assert.match(e.detail!, /ProvisioningFailed:\n.*insufficient capacity/);
    assert.match(e.detail!, /logs digdag-workflow-3 -c digdag \(running, not ready\):\n.*password authentication failed/);
    assert.doesNotMatch(e.detail!, /digdag-workflow-4 -c/, 'a ready pod is not asked');
    return true;
  });
  assert.ok(r.commands().includes(`${K(config)} logs digdag-workflow-1 -c digdag --previous --tail=20`));
});

test('rollout: NotFound and forbidden are reported as such, not as a timeout; --dry-run waits for nothing', async () => {
  for (const [stderr, want] of [
    ['Error from server (NotFound): deployments.apps "digdag-ui" not found', /does not exist in namespace digdag/],
    ['Error from server (Forbidden): deployments.apps "digdag-ui" is forbidden: User "x" cannot get resource', /not allowed to read deployment\/digdag-ui/],
  ] as const) {
    const r = new RecordingRunner(cluster((argv) => (argv.includes('rollout') ? { code: 1, stderr } : undefined)));
    await assert.rejects(runStep(apply, testCtx(mk(), r)), (e: unknown) => e instanceof UserError && want.test(e.message) && !/within/.test(e.message));
  }
  const dry = new RecordingRunner(cluster(), true);
  await runStep(apply, testCtx(mk(), dry));
  assert.ok(!dry.commands().some((c) => c.includes('rollout status')), 'no rollout status for a dry run');
  assert.ok(dry.lines.some((l) => l.includes('[dry-run] kubectl rollout status deployment/digdag-ui')));
});

test('a StatefulSet pod stuck on an old, never-ready revision is deleted so the fixed template rolls out', async () => {
  const sts = { spec: { replicas: 1 }, status: { currentRevision: 'digdag-postgres-old', updateRevision: 'digdag-postgres-new', readyReplicas: 0 } };
  const stuck = { metadata: { name: 'digdag-postgres-0', labels: { 'controller-revision-hash': 'digdag-postgres-old' } }, status: { conditions: [{ type: 'Ready', status: 'False' }] } };
  assert.deepEqual(stuckPods(sts, [stuck]), ['digdag-postgres-0']);
  assert.deepEqual(stuckPods(sts, [{ ...stuck, status: { conditions: [{ type: 'Ready', status: 'True' }] } }]), [], 'a ready old pod is the controller\'s to replace');
  assert.deepEqual(stuckPods({ ...sts, status: { ...sts.status, updateRevision: 'digdag-postgres-old', readyReplicas: 1 } }, [stuck]), []);
  const r = new RecordingRunner(cluster((argv) => {
    if (argv.includes('statefulset') && argv.includes('json')) return { stdout: JSON.stringify(sts) };
    if (argv.includes('pods') && argv.includes('json')) return { stdout: JSON.stringify({ items: [stuck] }) };
    return undefined;
  }));
  const config = mk();
  await recoverStuckStatefulSet(testCtx(config, r), 'digdag-postgres', 'app.kubernetes.io/component=postgres');
  assert.equal(r.commands().at(-1), `${K(config)} delete pod digdag-postgres-0 --wait=false`);
});

test('down --purge deletes the generated secrets and says what happens to each volume (Retain is kept)', async () => {
  const config = mk();
  ensureSecrets(config);
  const pvs = { items: [
    { metadata: { name: 'pv-1' }, spec: { claimRef: { namespace: 'digdag', name: 'data-digdag-postgres-0' }, persistentVolumeReclaimPolicy: 'Retain' } },
    { metadata: { name: 'pv-2' }, spec: { claimRef: { namespace: 'other', name: 'x' }, persistentVolumeReclaimPolicy: 'Delete' } },
  ] };
  const r = new RecordingRunner(cluster((argv) => (argv.includes('pv') ? { stdout: JSON.stringify(pvs) } : undefined)));
  const lines = await kubeTarget.down(testCtx(config, r), true);
  assert.ok(lines.some((l) => /volume pv-1 \(claim data-digdag-postgres-0\) has reclaim policy Retain: it and the database on it are kept/.test(l)), lines.join('\n'));
  assert.ok(!lines.some((l) => l.includes('pv-2')));
  assert.ok(!lines.some((l) => /database volume included/.test(l)));
  assert.equal(fs.existsSync(path.join(config.stateDir, 'secrets')), false);
  assert.ok(lines.some((l) => l.startsWith('deleted the generated secrets')));
  assert.match(volumeFate({ pv: 'p', claim: 'c', policy: 'Delete' }), /deletes it with the claim/);
});

test('down --purge waits for the namespace to go and, when it does not, names what holds it', async () => {
  const config = mk();
  const ns = JSON.stringify({ status: { phase: 'Terminating', conditions: [
    { type: 'NamespaceDeletionDiscoveryFailure', status: 'True', message: 'Discovery failed for some groups: external.metrics.k8s.io/v1beta1' },
    { type: 'NamespaceContentRemaining', status: 'False' },
  ] } });
  const pods = JSON.stringify({ items: [{ metadata: { name: 'digdag-worker-0', deletionTimestamp: '2026-12-03T10:00:00Z' }, spec: { terminationGracePeriodSeconds: 900 } }] });
  const left = namespaceLeft(ns, pods);
  assert.match(left, /NamespaceDeletionDiscoveryFailure: Discovery failed for some groups: external\.metrics/);
  assert.doesNotMatch(left, /NamespaceContentRemaining/);
  assert.match(left, /digdag-worker-0 \(terminating since 2026-12-03T10:00:00Z, grace 900 s\)/);
  assert.equal(namespaceLeft('', '{"items":[]}'), 'nothing listed yet');
  // Gone on the third look: two looks at a terminating namespace, then none.
  let looks = 0;
  const r = new RecordingRunner((argv) => (argv.includes('namespace') && argv.includes('get') ? { stdout: ++looks < 3 ? ns : '' } : argv.includes('pods') ? { stdout: pods } : undefined));
  await waitNamespaceGone(testCtx(config, r), 10_000);
  assert.equal(looks, 3);
  // Never gone: the wait ends, naming what holds it and the fix.
  const stuck = new RecordingRunner((argv) => (argv.includes('namespace') && argv.includes('get') ? { stdout: ns } : argv.includes('pods') ? { stdout: pods } : undefined));
  await assert.rejects(waitNamespaceGone(testCtx(config, stuck), 1), (e: unknown) => e instanceof UserError && /still being deleted after \d+ s: NamespaceDeletionDiscoveryFailure/.test(e.message) && /kubectl get namespace/.test(e.fix ?? ''));
});

test('down --purge stops Digdag\'s workloads first and waits for their pods, not the database\'s, before the namespace goes', async () => {
  const config = mk();
  const pod = (name: string, component: string, terminating = false, owner = 'ReplicaSet') => ({ metadata: { name, labels: { 'app.kubernetes.io/component': component }, ownerReferences: owner ? [{ kind: owner }] : [], ...(terminating ? { deletionTimestamp: '2026-12-03T10:00:00Z' } : {}) }, spec: { terminationGracePeriodSeconds: component === 'worker' ? 900 : 30 } });
  let looks = 0;
  const r = new RecordingRunner((argv) => {
    if (!(argv.includes('get') && argv.includes('pods'))) return undefined;
    looks++;
    // The selector leaves out the database's pods and whatever else runs there (a user's probe pod).
    assert.equal(argv[argv.indexOf('-l') + 1], 'app.kubernetes.io/part-of=digdag-ha,app.kubernetes.io/component!=postgres');
    // A bare pod with Digdag's labels (kube-e2e's db-client probe) is nobody's to delete here: not waited for.
    const probe = pod('db-client-probe', 'worker', false, '');
    return { stdout: JSON.stringify({ items: looks < 2 ? [pod('digdag-worker-1', 'worker', true), probe] : [probe] }) };
  });
  await stopDigdagFirst(testCtx(config, r), 10_000);
  assert.equal(looks, 2, 'waited while the worker was there');
  assert.equal(r.commands()[0], `${K(config)} delete deployments,jobs --all --ignore-not-found --wait=false`);
  // A worker that never goes (a task longer than its grace): the wait ends naming it and the fix.
  const stuck = new RecordingRunner((argv) => (argv.includes('pods') && argv.includes('get') ? { stdout: JSON.stringify({ items: [pod('digdag-worker-1', 'worker', true)] }) } : undefined));
  await assert.rejects(stopDigdagFirst(testCtx(config, stuck), 1), (e: unknown) => e instanceof UserError && /digdag-worker-1 \(terminating since 2026-12-03T10:00:00Z, grace 900 s\)/.test(e.message) && /AGENT_TERMINATION_GRACE_SECONDS/.test(e.fix ?? ''));
});

test('init-db on Kubernetes: sql/*.sql into psql over kubectl exec stdin, then a fresh migration Job', async () => {
  const config = mk();
  ensureSecrets(config);
  const r = new RecordingRunner(cluster());
  await runStep(initDb, testCtx(config, r));
  const exec = `${K(config)} exec -i digdag-postgres-0 -c postgres -- psql -X -q -v ON_ERROR_STOP=1 -U postgres -d postgres -f -`;
  assert.deepEqual(r.commands(), [
    `${K(config)} version --request-timeout=10s -o json`,
    exec, exec, exec,
    H(config),
    `${K(config)} delete job digdag-migrate --ignore-not-found --wait=true`,
    `${K(config)} apply -f -`,
    `${K(config)} wait --for=condition=complete job/digdag-migrate --timeout=300s`,
  ]);
  assert.match(r.calls[1]!.input!, /\\set db_password '\*\*\*'/);
});

test('a port-forward that never answers fails, and the run stops it again', async () => {
  // A free port: a developer's own forward or local stack may hold the default one.
  const port = await freePortRange(1, 61000);
  const config = mk({ PORT_FORWARD_PORT: String(port) });
  const ctx = testCtx(config, new RecordingRunner(cluster()));
  await assert.rejects(runSteps([portForward], ctx, { renderer: 'silent' }), /port-forward to svc\/digdag-ui did not come up/);
  const r = ctx.runner as RecordingRunner;
  // (After the chart's preflight render.)
  assert.equal(r.commands().filter((c) => !c.startsWith('helm '))[1], `${K(config)} port-forward --address 127.0.0.1 svc/digdag-ui ${port}:65432 &`);
  assert.deepEqual(listProcesses(config), [], 'nothing left registered');
});

test('e2e stops at preflight with every missing tool named, before starting anything', async () => {
  const config = mk();
  const r = new RecordingRunner((argv) => (argv[0] === 'minikube' ? { code: 127, stderr: 'minikube: command not found' } : argv[0] === 'docker' ? { code: 1, stderr: 'Cannot connect to the Docker daemon' } : { stdout: '{"clientVersion":{"gitVersion":"v1.32.4"}}' }));
  await assert.rejects(e2e(testCtx(config, r), false), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /docker: install Docker/);
    assert.match(e.message, /minikube: install minikube/);
    assert.doesNotMatch(e.message, /kubectl: install/);
    return true;
  });
  assert.ok(!r.commands().some((c) => c.startsWith('minikube start') || c.startsWith('minikube delete')), 'nothing started, nothing deleted');
});

test('e2e picks minikube where it answers, else the project\'s own cluster with the small resource profile', () => {
  const flags = parseFlags(['--set', 'DIGDAG_HA_STATE_DIR=' + tempDir()]);
  const env = { HOME: process.env.HOME };
  assert.equal(e2eConfig(flags, () => true, env).target, 'minikube');
  const own = e2eConfig(flags, () => false, env);
  assert.equal(own.target, 'cluster');
  assert.equal(own.k8s.resourceProfile, 'small');
  assert.equal(e2eConfig(parseFlags(['--target', 'cluster', '--set', 'RESOURCE_PROFILE=default']), () => true, env).k8s.resourceProfile, 'default');
  assert.throws(() => e2eConfig(parseFlags(['--target', 'gke']), () => true, env), /minikube or the project's test cluster, not gke/);
});

test('e2e with AGENT_AUTOSCALING=keda: the own cluster brings KEDA up; bounds without room to scale are refused before anything starts', async () => {
  const env = { HOME: process.env.HOME };
  const state = tempDir();
  const keda = e2eConfig(parseFlags(['--target', 'cluster', '--set', `DIGDAG_HA_STATE_DIR=${state}`, '--set', 'AGENT_AUTOSCALING=keda', '--set', 'CLUSTER_ADDONS=traefik']), () => false, env);
  assert.deepEqual([...keda.cluster.addons].sort(), ['keda', 'traefik']);
  assert.deepEqual(e2eConfig(parseFlags(['--target', 'cluster', '--set', `DIGDAG_HA_STATE_DIR=${state}`]), () => false, env).cluster.addons, [], 'no autoscaling: no add-on asked for');
  // min 2 = max 2: nothing to scale; refused at once, naming the fix, nothing run.
  const fixed = e2eConfig(parseFlags(['--target', 'cluster', '--set', `DIGDAG_HA_STATE_DIR=${state}`, '--set', 'AGENT_AUTOSCALING=keda', '--set', 'WORKER_REPLICAS=2', '--set', 'AGENT_MAX_REPLICAS=2']), () => false, env);
  const r = new RecordingRunner();
  await assert.rejects(e2e(testCtx(fixed, r), false, { renderer: 'silent' }), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /the scaling proof needs room to scale: workers min 2, max 2/);
    assert.match(e.fix ?? '', /AGENT_MAX_REPLICAS above it/);
    return true;
  });
  assert.deepEqual(r.commands(), [], 'nothing ran');
});

test('e2e deletes its minikube profile even when the pipeline fails (unless --keep)', async () => {
  const config = mk();
  const r = new RecordingRunner((argv) => {
    if (argv[0] === 'docker' && argv[1] === 'version') return { stdout: '28.2.2' };
    if (argv[0] === 'minikube' && argv[1] === 'version') return { stdout: 'v1.36.0' };
    if (argv[0] === 'kubectl' && argv.includes('--client')) return { stdout: '{"clientVersion":{"gitVersion":"v1.32.4"}}' };
    if (argv[0] === 'docker' && argv[1] === 'info') return { code: 1, stderr: 'engine went away' };
    return undefined;
  });
  await assert.rejects(e2e(testCtx(config, r), false, { renderer: 'silent' }), /no Docker engine answers/);
  const cmds = r.commands();
  assert.ok(cmds.includes('minikube start -p digdag-ha --cpus 2 --memory 6g --addons ingress'));
  assert.equal(cmds.at(-1), 'minikube delete -p digdag-ha');
});

test('the Kubernetes target\'s primitives for verify-ha: pods as instances, SIGKILL as a forced delete, a role stopped by scaling to 0, psql through kubectl exec', async () => {
  const config = mk();
  let scaledToZero = false;
  const podList = (role: string) => ({
    items: scaledToZero && role === 'worker' ? [] : [
      { metadata: { name: `digdag-${role}-a` }, spec: { containers: [{ args: ['server', `--for-${role}`] }] }, status: { conditions: [{ type: 'Ready', status: 'True' }] } },
      { metadata: { name: `digdag-${role}-old`, deletionTimestamp: 'now' }, spec: { containers: [{}] }, status: {} },
    ],
  });
  const r = new RecordingRunner((argv) => {
    if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
    const l = argv.indexOf('-l');
    if (argv.includes('pods') && l > 0) return { stdout: JSON.stringify(podList(argv[l + 1]!.split('=')[1]!)) };
    if (argv.includes('scale')) scaledToZero = argv.includes('--replicas=0');
    if (argv.includes('psql')) return { stdout: '12|7@digdag-worker-a\n' };
    return undefined;
  });
  const ctx = testCtx(config, r);
  const insts = await kubeTarget.instances(ctx);
  assert.deepEqual(insts.map((i) => [i.name, i.role, i.ready, i.args.join(' ')]), [
    ['digdag-ui-a', 'ui', true, 'server --for-ui'],
    ['digdag-scheduler-a', 'scheduler', true, 'server --for-scheduler'],
    ['digdag-worker-a', 'worker', true, 'server --for-worker'],
  ]);
  assert.equal(kubeTarget.instanceOfAgent('7@digdag-worker-a'), 'digdag-worker-a');
  r.calls.length = 0;
  await kubeTarget.kill(ctx, insts[2]!);
  await kubeTarget.stop(ctx, insts[0]!);
  assert.equal(await kubeTarget.stopRole(ctx, 'worker'), 'digdag-worker (scaled to 0)');
  assert.equal(await kubeTarget.query(ctx, 'SELECT 1'), '12|7@digdag-worker-a');
  assert.deepEqual(r.commands(), [
    `${K(config)} delete pod digdag-worker-a --grace-period=0 --force --wait=false`,
    `${K(config)} delete pod digdag-ui-a --wait=false`,
    `${K(config)} scale deployment/digdag-worker --replicas=0`,
    `${K(config)} get pods -l app.kubernetes.io/component=worker -o json`,
    `${K(config)} exec digdag-postgres-0 -c postgres -- psql -X -At -U postgres -d digdag -c SELECT 1`,
  ]);
  const b = kubeTarget.budgets(config);
  assert.equal(b.failoverMs(30), (30 + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + config.k8s.rolloutTimeoutSeconds) * 1000, 'the failover budget comes from the lock retention and the rollout timeout');
});

test('verify-ha\'s stop of a role KEDA scales pauses its ScaledObject at 0 (KEDA would bring the minimum back), and restore resumes it; other roles are scaled', async () => {
  const config = mk({ AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '2', AGENT_MAX_REPLICAS: '4' });
  const r = new RecordingRunner((argv) => (argv.includes('pods') ? { stdout: '{"items":[]}' } : argv.includes('version') ? { stdout: '{"serverVersion":{}}' } : undefined));
  const ctx = testCtx(config, r);
  assert.equal(await kubeTarget.stopRole(ctx, 'worker'), 'digdag-worker (KEDA paused at 0: autoscaling.keda.sh/paused-replicas)');
  assert.equal(await kubeTarget.stopRole(ctx, 'ui'), 'digdag-ui (scaled to 0)');
  await kubeTarget.restore(ctx).catch(() => {}); // the port-forward it starts last does not answer here
  const cmds = r.commands();
  assert.deepEqual(cmds.slice(0, 5), [
    `${K(config)} annotate scaledobject digdag-autoscaler --overwrite autoscaling.keda.sh/paused-replicas=0`,
    `${K(config)} get pods -l app.kubernetes.io/component=worker -o json`,
    `${K(config)} scale deployment/digdag-ui --replicas=0`,
    `${K(config)} get pods -l app.kubernetes.io/component=ui -o json`,
    `${K(config)} annotate scaledobject digdag-autoscaler --overwrite autoscaling.keda.sh/paused-replicas-`,
  ]);
  // Without KEDA (hpa: an HPA leaves a Deployment at 0 alone) the role is scaled like any other.
  const hpa = new RecordingRunner((argv) => (argv.includes('pods') ? { stdout: '{"items":[]}' } : undefined));
  assert.equal(await kubeTarget.stopRole(testCtx(mk({ AGENT_AUTOSCALING: 'hpa', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '2' }), hpa), 'worker'), 'digdag-worker (scaled to 0)');
});

test('apply with AGENT_AUTOSCALING=keda onto a cluster without KEDA\'s CRDs stops before any change, naming the fix', async () => {
  const config = mk({ AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '3' });
  const none = new RecordingRunner(cluster((argv) => (argv.includes('crd') ? { code: 1, stderr: 'Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "scaledobjects.keda.sh" not found' } : undefined)));
  await assert.rejects(runStep(apply, testCtx(config, none)), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /AGENT_AUTOSCALING=keda renders a ScaledObject, but this cluster has no KEDA: CRD scaledobjects.keda.sh, triggerauthentications.keda.sh not found/);
    assert.match(e.fix!, /install KEDA .*or set AGENT_AUTOSCALING=none or hpa/);
    return true;
  });
  assert.ok(none.calls.every((c) => !c.mutates), 'nothing was applied');
  const own = mk({ DIGDAG_HA_TARGET: 'cluster', AGENT_AUTOSCALING: 'keda', WORKER_REPLICAS: '1', AGENT_MAX_REPLICAS: '3' });
  await assert.rejects(runStep(apply, testCtx(own, new RecordingRunner(cluster()))), (e: unknown) => e instanceof UserError && /CLUSTER_ADDONS=keda npx tsx tasks\/cluster.ts up/.test(e.fix!));
  const crds = 'customresourcedefinition.apiextensions.k8s.io/scaledobjects.keda.sh\ncustomresourcedefinition.apiextensions.k8s.io/triggerauthentications.keda.sh\n';
  const withKeda = new RecordingRunner(cluster((argv) => (argv.includes('crd') ? { stdout: crds } : undefined)));
  await runStep(apply, testCtx(config, withKeda));
  assert.ok(withKeda.commands().includes(`${K(config)} get crd scaledobjects.keda.sh triggerauthentications.keda.sh -o name`));
  assert.match(withKeda.calls.find((c) => c.argv.includes('apply'))!.input!, /kind: ScaledObject/);
});
