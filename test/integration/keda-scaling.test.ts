// Queue-driven scaling on the project's own cluster with real Digdag: KEDA started by the
// cluster's lifecycle (CLUSTER_ADDONS=keda) serves external.metrics.k8s.io through the API
// server's aggregation layer; the chart's ScaledObject (AGENT_AUTOSCALING=keda, min 1 / max 3
// workers, short polling and cooldown) scales the workers out under a burst of attempts and
// back to the minimum once the queue is empty. Every attempt must succeed and no task may run
// twice, counted from Digdag's own lock table (each task's queued_task_locks row, sampled while
// it exists: a lock taken by a second agent, or a retry_count above 0, is a re-run). Reaction,
// drain and scale-in times are printed, not asserted. Once back at the minimum, `status`'s
// autoscaler view is checked against the live objects. Then scale to zero: the chart's ScaledObject
// rendered with AUTOSCALING_MIN_REPLICAS=0 takes the workers to none, and one submitted attempt
// (queued by the ui's executor loop) brings a worker up and succeeds; its first-task delay is printed.
// SKIPPED with the reason without root, the cluster's prerequisites, KEDA in the cache
// (bash .ci/install-keda) or a Digdag runtime.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { EXTERNAL_METRICS_API } from '../../lib/cluster/keda.ts';
import { clusterImageHost } from '../../lib/cluster/image-host.ts';
import { ensureBaseImage, loadImage } from '../../lib/cluster/images.ts';
import { clusterDown, clusterUpCmd, missingPrerequisites } from '../../lib/cluster/lifecycle.ts';
import { hostLeftovers } from '../../lib/cluster/host.ts';
import { loadClusterConfig, type ClusterConfig } from '../../lib/cluster/config.ts';
import { CLUSTER_POSTGRES_IMAGE, type Config } from '../../lib/config.ts';
import { startAttempt, waitAttempt, workflowId } from '../../lib/digdag-api.ts';
import { buildImage } from '../../lib/kube/build-image.ts';
import { applyObjects, kubectl } from '../../lib/kube/kubectl.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { kubeQueueSource } from '../../lib/kube/queue-source.ts';
import { kubeStatus } from '../../lib/kube/status.ts';
import { ROOT } from '../../lib/paths.ts';
import { runSteps, type Ctx } from '../../lib/pipeline.ts';
import { freePortRange } from '../../lib/ports.ts';
import { waitFor } from '../../lib/processes.ts';
import { burstFigures, sampleQueue, startSampling } from '../../lib/queue-sampling.ts';
import { SAMPLE_PROJECT } from '../../lib/push-workflow.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { kubeTarget } from '../../tasks/steps.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { prepareRuntime, runtimeVars } from '../helpers/runtime.ts';

const MIN = 1;
const MAX = 3;
const THREADS = 4;
const ATTEMPTS = 30;
const TASKS = 4;
const SLEEP = 5;
const COOLDOWN = 30;
const SCALE_DOWN_PERIOD = 15;

const runner = new ShellRunner(false, () => {});
const log = (l: string) => process.stderr.write(`  [keda] ${l}\n`);
let skipReason: string | undefined;
let runtimeMissing: string | undefined;
let cc: ClusterConfig;
let config: Config;
let ctx: Ctx;
let vars: Record<string, string>;
let started = 0;
/** Set when the burst left the workers at the minimum: the scale-to-zero test starts from there. */
let backAtMinimum = false;

before(async () => {
  started = Date.now();
  const state = tempDir('dh-keda-');
  vars = {
    DIGDAG_HA_TARGET: 'cluster',
    DIGDAG_HA_STATE_DIR: state,
    DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'),
    CLUSTER_ADDONS: 'keda',
    RESOURCE_PROFILE: 'small',
    // The database's own HA is kube-e2e's subject; here one member leaves the node to the workers.
    POSTGRES_MEMBERS: '1',
    PORT_FORWARD_PORT: String(await freePortRange(1, 61100)),
    AGENT_AUTOSCALING: 'keda',
    WORKER_REPLICAS: String(MIN),
    AGENT_MAX_REPLICAS: String(MAX),
    AGENT_MAX_TASK_THREADS: String(THREADS),
    AUTOSCALING_POLLING_SECONDS: '5',
    AUTOSCALING_COOLDOWN_SECONDS: String(COOLDOWN),
    AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS: String(SCALE_DOWN_PERIOD),
    ...runtimeVars,
  };
  config = testConfig(vars);
  cc = loadClusterConfig(config);
  const missing = missingPrerequisites(cc);
  if (missing.length) {
    skipReason = `the test cluster with KEDA cannot run here — missing: ${missing.join('; ')}`;
    return;
  }
  const up = await clusterUpCmd(runner, cc, log);
  if (up.alreadyUp) {
    skipReason = 'a test cluster is already up on the fixed ports (another checkout\'s?); not touching it';
    return;
  }
  for (const l of up.lines) log(l);
  ctx = testCtx(config, runner);
  runtimeMissing = Object.keys(runtimeVars).length ? await prepareRuntime(config, runner) : 'no Digdag runtime configured (set DIGDAG_SOURCE=jar DIGDAG_JAR=… or a reachable MAVEN_REPO_URL)';
});

after(async () => {
  if (skipReason || !cc) return;
  await clusterDown(runner, cc, { purge: true }, log);
  assert.deepEqual(await hostLeftovers(runner, cc), [], 'down leaves nothing on the host');
  log(`whole suite (cluster up with KEDA → down): ${((Date.now() - started) / 1000).toFixed(0)} s`);
});

const skipped = (t: TestContext, needsDigdag = false) => {
  if (skipReason) t.skip(skipReason);
  else if (needsDigdag && runtimeMissing) t.skip(`no Digdag runtime: ${runtimeMissing}`);
  return !!skipReason || (needsDigdag && !!runtimeMissing);
};
const k = (...args: string[]) => runner.run({ argv: kubectl(config, ...args), quiet: true, nothrow: true, timeoutMs: 60_000 });

test('KEDA started with the cluster: the API server serves external.metrics.k8s.io through its adapter', async (t) => {
  if (skipped(t)) return;
  const api = await k('get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}');
  assert.equal(api.stdout, 'True', api.stderr);
  const raw = await k('get', '--raw', '/apis/external.metrics.k8s.io/v1beta1');
  assert.equal(raw.code, 0, raw.stderr);
  assert.equal((JSON.parse(raw.stdout) as { groupVersion: string }).groupVersion, 'external.metrics.k8s.io/v1beta1');
  const crds = await k('get', 'crd', 'scaledobjects.keda.sh', 'triggerauthentications.keda.sh', '-o', 'name');
  assert.equal(crds.stdout.trim().split('\n').length, 2, crds.stderr);
  // up again: KEDA is part of "up", so a second up finds it there.
  const again = await clusterUpCmd(runner, cc, log);
  assert.equal(again.alreadyUp, true);
  assert.ok(again.lines.some((l) => /KEDA v2\.16\.1: already up/.test(l)), again.lines.join('\n'));
});

/** The workers and Digdag's lock table, now (lib/queue-sampling.ts). */
const sample = () => sampleQueue(kubeQueueSource(ctx));

/** status's autoscaler view of the live cluster, and its problem lines about the autoscaler. */
async function autoscalerNow() {
  const report = await kubeStatus(ctx, async () => []);
  log(`status autoscaler view: ${JSON.stringify(report.autoscaler)}`);
  return { view: report.autoscaler, problems: report.problems.filter((p) => p.startsWith('autoscaler:')) };
}

test(`a burst of ${ATTEMPTS} attempts × ${TASKS} sh> tasks: workers scale ${MIN}→${MAX} on the queue and back, every attempt succeeds, no task runs twice`, { timeout: 1_800_000 }, async (t) => {
  if (skipped(t, true)) return;
  const t0 = Date.now();
  log(await ensureBaseImage(runner, cc));
  log(`${CLUSTER_POSTGRES_IMAGE}: ${await buildImage(runner, config, clusterImageHost(config), CLUSTER_POSTGRES_IMAGE, path.join(ROOT, 'docker', 'postgres', 'Dockerfile'), path.join(ROOT, 'docker', 'postgres'))}`);
  await loadImage(runner, cc, CLUSTER_POSTGRES_IMAGE);
  await runSteps(ALL_STEPS.filter((s) => ['build-image', 'create-secret', 'start-postgres', 'init-db', 'apply', 'port-forward', 'push-workflow'].includes(s.name)), ctx, { renderer: 'silent' });
  log(`deployed with the ScaledObject in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const so = await waitFor(async () => (await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')).stdout === 'True', 90_000, 1000);
  assert.ok(so, `ScaledObject never Ready: ${(await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions}')).stdout}`);

  const sampling = startSampling(kubeQueueSource(ctx));
  const samples = sampling.samples;

  try {
    const endpoint = await kubeTarget.endpoint(ctx);
    const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
    const burstAt = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < ATTEMPTS; i++) ids.push(await startAttempt(endpoint, wf, new Date(Date.UTC(2027, 0, 1, 0, i)), { tasks: TASKS, sleep_seconds: SLEEP }));
    for (const id of ids) {
      const a = await waitAttempt(await kubeTarget.endpoint(ctx), id, 900_000);
      assert.equal(a.success, true, `attempt ${id} did not succeed`);
    }
    const drainedAt = Date.now();
    // Back to the minimum after the cooldown, one worker per scale-down period.
    const backAtMin = await waitFor(async () => {
      const d = await k('get', 'deployment', 'digdag-worker', '-o', 'jsonpath={.status.replicas}');
      return Number(d.stdout) === MIN;
    }, (COOLDOWN + MAX * SCALE_DOWN_PERIOD) * 1000 + 180_000, 1000);
    const minAt = Date.now();
    await sampling.stop();

    // Re-runs from the lock table: a task lock taken by a second agent, or retried.
    const f = burstFigures(samples, burstAt, MIN * THREADS);
    const peak = f.peak;
    const ideal = (ATTEMPTS * TASKS * SLEEP) / (MAX * THREADS);
    const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const opt = (ms: number | undefined) => (ms === undefined ? 'n/a' : sec(ms));
    t.diagnostic(`${samples.length} samples; peak workers ${peak}; task locks seen ${f.locksSeen}`);
    t.diagnostic(`scale-out reaction (queue above ${MIN * THREADS} → first task on a new worker): ${opt(f.reactionMs)} (after the burst: queue above ${opt(f.overThresholdMs)}, new pod ${opt(f.scaledOutMs)}, Ready ${opt(f.newReadyMs)}, its first task ${opt(f.newWorkerTaskMs)})`);
    t.diagnostic(`drain: ${sec(drainedAt - burstAt)} for ${ATTEMPTS * TASKS} × ${SLEEP} s tasks (ideal at ${MAX} workers × ${THREADS} threads: ${ideal.toFixed(0)} s)`);
    t.diagnostic(`scale-in to ${MIN}: ${sec(minAt - drainedAt)} after the last attempt finished (cooldown ${COOLDOWN} s, one worker per ${SCALE_DOWN_PERIOD} s)`);
    log(`timeline (s, replicas/ready, waiting+running): ${samples.filter((_, i) => i % 5 === 0).map((s) => `${((s.at - burstAt) / 1000).toFixed(0)}:${s.replicas}/${s.ready}:${s.waiting}+${s.running}`).join(' ')}`);

    assert.ok(peak > MIN, `the workers never scaled out (peak ${peak})`);
    assert.ok(peak <= MAX, `more workers than the maximum: ${peak}`);
    assert.ok(f.newWorkerTaskMs !== undefined, 'no task ever ran on a worker the autoscaler added');
    assert.ok(f.locksSeen >= ATTEMPTS * TASKS * 0.5, `the sampling saw too few task locks to vouch for re-runs: ${f.locksSeen}`);
    assert.deepEqual(f.reruns, [], 'tasks re-run by a second agent');
    assert.equal(f.retried, 0, 'task locks with retry_count > 0');
    assert.ok(backAtMin, `the workers did not return to ${MIN} after the cooldown`);

    // status, once back at the minimum: what KEDA and its HPA say, the queue by KEDA's query, the scale-in as the last step.
    const statusAt = Date.now();
    const { view, problems } = await autoscalerNow();
    assert.deepEqual(problems, []);
    assert.equal(view.mode, 'keda');
    assert.deepEqual(view.objects, ['ScaledObject/digdag-autoscaler', 'HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler']);
    assert.deepEqual([view.min, view.max, view.current], [MIN, MAX, MIN]);
    assert.equal(view.desired, MIN);
    assert.deepEqual(view.queue, { depth: 0, threadsPerWorker: THREADS, wants: MIN });
    assert.equal(view.metric?.name, 's0-postgresql');
    assert.equal(view.metric?.target, THREADS);
    assert.equal(view.active, false, 'the queue is empty: KEDA\'s trigger is not active');
    assert.equal(view.lastScale?.object, 'HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler');
    assert.match(view.lastScale?.message ?? '', new RegExp(`^New size: ${MIN}; reason: All metrics below target`), 'the last step was the scale-in');
    t.diagnostic(`status (autoscaler view) against the live cluster: ${sec(Date.now() - statusAt)}`);
    backAtMinimum = true;
  } finally {
    await sampling.stop().catch(() => {});
  }
});

test('scale to zero: the chart\'s ScaledObject with AUTOSCALING_MIN_REPLICAS=0 takes the workers to none; one submitted attempt brings a worker up and succeeds', { timeout: 600_000 }, async (t) => {
  if (skipped(t, true)) return;
  if (!backAtMinimum) return t.skip('the burst did not leave the workers at the minimum (see the test before)');
  const t0 = Date.now();
  const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  // The ScaledObject as the chart renders it for min 0; the rest of the deployment is unchanged.
  const zero = testConfig({ ...vars, AUTOSCALING_MIN_REPLICAS: '0' });
  const so = (await renderManifests(zero, runner)).objects.filter((o) => o.kind === 'ScaledObject');
  assert.equal(so[0]?.spec.minReplicaCount, 0);
  await applyObjects(ctx, so);
  // The queue has been empty for longer than the cooldown: KEDA deactivates at its next poll.
  // No worker at all: the Deployment at 0 and its last pod gone (not merely terminating).
  const none = await waitFor(async () => (await sample().catch(() => undefined))?.replicas === 0 && !(await k('get', 'pods', '-l', 'app.kubernetes.io/component=worker', '-o', 'name')).stdout.trim(), (COOLDOWN + 90) * 1000, 1000);
  assert.ok(none, 'KEDA did not scale the workers to zero');
  const zeroAt = Date.now();
  const atZero = await autoscalerNow();
  assert.deepEqual(atZero.problems, [], 'an HPA disabled at zero is no problem');
  assert.deepEqual([atZero.view.min, atZero.view.desired, atZero.view.current], [0, 0, 0]);
  assert.equal(atZero.view.lastScale?.reason, 'KEDAScaleTargetDeactivated');

  const endpoint = await kubeTarget.endpoint(ctx);
  const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
  const submitAt = Date.now();
  const id = await startAttempt(endpoint, wf, new Date(Date.UTC(2027, 1, 1)), { tasks: 1, sleep_seconds: 3 });
  let podAt: number | undefined;
  let readyAt: number | undefined;
  let firstTaskAt: number | undefined;
  const watch = startSampling(kubeQueueSource(ctx), {
    onSample: (s) => {
      podAt ??= s.replicas > 0 ? s.at : undefined;
      readyAt ??= s.ready > 0 ? s.at : undefined;
      firstTaskAt ??= s.running > 0 ? s.at : undefined;
    },
  });
  try {
    const a = await waitAttempt(await kubeTarget.endpoint(ctx), id, 300_000);
    assert.equal(a.success, true, `attempt ${id} did not succeed from zero workers`);
  } finally {
    await watch.stop();
  }
  const finishedAt = Date.now();
  assert.ok(podAt, 'no worker was ever brought up');
  const after = await autoscalerNow();
  assert.ok(['KEDAScaleTargetActivated', 'SuccessfulRescale'].includes(after.view.lastScale?.reason ?? ''), JSON.stringify(after.view.lastScale));
  assert.ok((after.view.current) >= 1);
  t.diagnostic(`to zero: ${sec(zeroAt - t0)} from applying minReplicaCount 0 (queue idle for longer than the ${COOLDOWN} s cooldown)`);
  t.diagnostic(`from zero (polling ${vars.AUTOSCALING_POLLING_SECONDS} s): submitted → worker pod ${podAt ? sec(podAt - submitAt) : 'n/a'} → ready ${readyAt ? sec(readyAt - submitAt) : 'n/a'} → first task on it ${firstTaskAt ? sec(firstTaskAt - submitAt) : 'n/a (the task ran between two samples)'} → attempt succeeded ${sec(finishedAt - submitAt)}`);
  t.diagnostic(`scale-to-zero check in all: ${sec(Date.now() - t0)}`);
});
