// Queue-driven scaling on the project's own cluster with real Digdag, registered by
// kube-e2e.test.ts after its other tests on its deployment (before its purge), so both share one
// cluster bring-up (CLUSTER_ADDONS=keda) and one Digdag deployment (3 database members):
// KEDA, deployed by the cluster's lifecycle as pods from its own config/ (images built here from
// the cached binaries, certificates made by its operator), serves external.metrics.k8s.io through
// the API server's aggregation layer, and its operator's pod runs the queue query against the
// project's PostgreSQL through the chart's NetworkPolicy (namespace keda admitted, as on GKE); the chart's ScaledObject (AGENT_AUTOSCALING=keda, min 2 / max 4 workers of 4
// threads, short polling and cooldown), applied over kube-e2e's deployment (its pods unchanged), scales the workers out
// under a burst of 50 attempts × 4 `sleep 5` tasks and back to the minimum once the queue is
// empty — the proof `tasks/e2e.ts` runs with AGENT_AUTOSCALING=keda (lib/kube/scaling-proof.ts), its
// figures asserted here one by one. Every attempt must succeed and no task may run twice, counted from Digdag's own lock
// table (each task's queued_task_locks row, sampled while it exists: a lock taken by a second
// agent, or a retry_count above 0, is a re-run; a re-run's row lives at least one task's length,
// and the test asserts that no two samples were further apart than that, so none can be missed).
// Four long tasks submitted behind the burst are still running when the queue has drained, so the
// scale-in has to remove workers that hold tasks (the pods holding them are made the cheapest to
// delete, `controller.kubernetes.io/pod-deletion-cost`): a worker marked for deletion while it holds
// a task must finish it itself — the lock released by the same agent, the pod gone only afterwards.
// Reaction, drain and scale-in times are printed, not asserted. Once back at the minimum, `status`'s
// autoscaler view is checked against the live objects. Then scale to zero: the chart's ScaledObject
// rendered with AUTOSCALING_MIN_REPLICAS=0 takes the workers to none, and one submitted attempt
// (queued by the ui's executor loop) brings a worker up and succeeds; its first-task delay is
// printed. Last, the CPU HPA: metrics-server (a pod from its own manifests, CLUSTER_ADDONS=
// metrics-server) serves metrics.k8s.io through the aggregation layer (`kubectl top` works); the
// ScaledObject gives way to the project's own HorizontalPodAutoscaler (AGENT_AUTOSCALING=hpa,
// min 1 / max 2 workers), and the busy-loop tasks of workflows/ha-sample/cpu.dig scale the
// workers out to 2; the time from load start to scale-out is printed. SKIPPED with the reason when
// the cluster is not up, KEDA (or, for the HPA, metrics-server) is not in the cache
// (bash .ci/install-keda, bash .ci/install-metrics-server) or there is no Digdag runtime.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { EXTERNAL_METRICS_API, KEDA_CERTS_SECRET, KEDA_DEPLOYMENTS, KEDA_NAMESPACE, kedaImages } from '../../../lib/cluster/keda.ts';
import { METRICS_API } from '../../../lib/cluster/metrics-server.ts';
import { kubectl as clusterKubectl } from '../../../lib/cluster/addons.ts';
import { clusterUpCmd } from '../../../lib/cluster/lifecycle.ts';
import type { ClusterConfig } from '../../../lib/cluster/config.ts';
import type { Config } from '../../../lib/config.ts';
import { startAttempt, waitAttempt, workflowId } from '../../../lib/digdag-api.ts';
import { applyObjects, kubectl } from '../../../lib/kube/kubectl.ts';
import { renderManifests } from '../../../lib/kube/render.ts';
import { kubeQueueSource } from '../../../lib/kube/queue-source.ts';
import { kubeStatus } from '../../../lib/kube/status.ts';
import { sampleQueue, startSampling, type QueueSample } from '../../../lib/queue-sampling.ts';
import { runSteps, type Ctx } from '../../../lib/pipeline.ts';
import { stopTracked, waitFor } from '../../../lib/processes.ts';
import { SAMPLE_PROJECT } from '../../../lib/push-workflow.ts';
import type { ShellRunner } from '../../../lib/runner.ts';
import { renderTable } from '../../../lib/verify.ts';
import { proveQueueScaling, SCALING_BURST } from '../../../lib/kube/scaling-proof.ts';
import { ALL_STEPS } from '../../../tasks/all.ts';
import { kubeTarget } from '../../../tasks/steps.ts';
import { testConfig, testCtx } from '../../helpers/fixtures.ts';

/** kube-e2e's deployment runs 2 workers (WORKER_REPLICAS' default): KEDA's minimum. */
const MIN = 2;
const MAX = 4;
const THREADS = 4;
/** The burst e2e's proof runs (lib/kube/scaling-proof.ts: also its long tasks, still running when it has
 * drained, so the scale-in must remove workers holding them). */
const { attempts: ATTEMPTS, tasks: TASKS } = SCALING_BURST;
const COOLDOWN = 20;
const SCALE_DOWN_PERIOD = 10;
/** KEDA's polling interval in the test (AUTOSCALING_POLLING_SECONDS). */
const POLLING = 5;
/** The CPU HPA test: its bounds, and its load (cpu.dig: tasks × seconds of busy loop). */
const HPA_MIN = 1;
const HPA_MAX = 2;
const CPU_TASKS = 2;
const CPU_SECONDS = 30;

/** What the file registering these tests shares: its runner, cluster and state, once its `before` ran. */
export interface ClusterSuiteEnv {
  runner: ShellRunner;
  /** Why the file's tests skip (no cluster here), or undefined. */
  skipReason(): string | undefined;
  /** Why the Digdag tests skip (no runtime), or undefined. */
  runtimeMissing(): string | undefined;
  /** Why KEDA did not come up with the cluster (not in the cache), or undefined. */
  kedaMissing(): string | undefined;
  /** Why metrics-server did not come up with the cluster (not in the cache), or undefined. */
  metricsServerMissing(): string | undefined;
  cluster(): ClusterConfig;
  /** The variables of the file's own Digdag deployment (its namespace, state dir, port-forward,
   * GCP settings), once its pipeline ran; undefined while it has not come up. */
  deployment(): Record<string, string> | undefined;
}

/** Registers the KEDA tests; the returned stop() ends what they started on the host (the port-forward). */
export function kedaTests(env: ClusterSuiteEnv): { stop(): Promise<void> } {
  const { runner } = env;
  const log = (l: string) => process.stderr.write(`  [keda] ${l}\n`);
  let vars: Record<string, string> | undefined;
  let config: Config;
  let ctx: Ctx;
  /** Set when the burst left the workers at the minimum: the scale-to-zero test starts from there. */
  let backAtMinimum = false;

  const skipped = (t: TestContext, needsDigdag = false) => {
    const why = env.skipReason() ?? env.kedaMissing() ?? (needsDigdag ? env.runtimeMissing() ?? (env.deployment() ? undefined : 'kube-e2e\'s Digdag deployment did not come up (see its pipeline test)') : undefined);
    if (why) t.skip(why);
    return !!why;
  };
  const k = (...args: string[]) => runner.run({ argv: kubectl(config, ...args), quiet: true, nothrow: true, timeoutMs: 60_000 });

  /** kube-e2e's deployment with KEDA's ScaledObject: the same secrets, database and pods (the pod
   * templates do not change with AGENT_AUTOSCALING, so apply restarts nothing). */
  function setUp(): void {
    if (vars) return;
    const base = env.deployment();
    if (!base) throw new Error('kube-e2e\'s deployment did not come up (see its pipeline test)');
    vars = {
      ...base,
      AGENT_AUTOSCALING: 'keda',
      WORKER_REPLICAS: String(MIN),
      AGENT_MAX_REPLICAS: String(MAX),
      AGENT_MAX_TASK_THREADS: String(THREADS),
      AUTOSCALING_POLLING_SECONDS: String(POLLING),
      AUTOSCALING_COOLDOWN_SECONDS: String(COOLDOWN),
      AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS: String(SCALE_DOWN_PERIOD),
    };
    config = testConfig(vars);
    ctx = testCtx(config, runner);
  }

  /** The workers (terminating ones included) and Digdag's lock table, now; undefined when a read failed. */
  const sample = (): Promise<QueueSample | undefined> => sampleQueue(kubeQueueSource(ctx)).catch(() => undefined);

  /** status's autoscaler view of the live cluster, and its problem lines about the autoscaler. */
  async function autoscalerNow() {
    const report = await kubeStatus(ctx, async () => []);
    log(`status autoscaler view: ${JSON.stringify(report.autoscaler)}`);
    return { view: report.autoscaler, problems: report.problems.filter((p) => p.startsWith('autoscaler:')) };
  }

  test('KEDA started with the cluster as pods from its own config/: its Deployments Available, certificates made by its operator, the API server serving external.metrics.k8s.io through the adapter pod', async (t) => {
    if (skipped(t)) return;
    // Cluster-wide objects and KEDA's namespace: the cluster's own kubeconfig (no deployment needed).
    const kc = (...args: string[]) => runner.run({ argv: clusterKubectl(env.cluster(), ...args), quiet: true, nothrow: true, timeoutMs: 60_000 });
    // KEDA's three Deployments, on the images built here, in KEDA's own namespace.
    const deps = await kc('get', 'deployments', '-n', KEDA_NAMESPACE, '-o', 'json');
    assert.equal(deps.code, 0, deps.stderr);
    const items = (JSON.parse(deps.stdout) as { items: { metadata: { name: string }; spec: { template: { spec: { containers: { image: string }[] } } }; status: { availableReplicas?: number } }[] }).items;
    assert.deepEqual(items.map((d) => d.metadata.name).sort(), [...KEDA_DEPLOYMENTS].sort());
    for (const d of items) assert.equal(d.status.availableReplicas, 1, `${d.metadata.name} Available`);
    assert.deepEqual(items.flatMap((d) => d.spec.template.spec.containers.map((c) => c.image)).sort(), kedaImages().map((i) => i.image).sort());
    // The certificates: made by KEDA's operator, in the Secret its pods mount; its CA injected into
    // the APIService and the webhooks, none from the cluster's PKI.
    const secret = await kc('get', 'secret', '-n', KEDA_NAMESPACE, KEDA_CERTS_SECRET, '-o', 'jsonpath={.data.ca\\.crt}');
    assert.equal(secret.code, 0, secret.stderr);
    const kedaCa = secret.stdout.trim();
    assert.ok(kedaCa.length > 0, 'the operator wrote its CA');
    assert.equal((await kc('get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.spec.caBundle}')).stdout.trim(), kedaCa);
    const hooks = (await kc('get', 'validatingwebhookconfiguration', 'keda-admission', '-o', 'jsonpath={.webhooks[*].clientConfig.caBundle}')).stdout.trim().split(/\s+/);
    assert.ok(hooks.length >= 3 && hooks.every((c) => c === kedaCa), 'the webhooks trust the operator\'s CA');
    const api = await kc('get', 'apiservice', EXTERNAL_METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}');
    assert.equal(api.stdout, 'True', api.stderr);
    const raw = await kc('get', '--raw', '/apis/external.metrics.k8s.io/v1beta1');
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal((JSON.parse(raw.stdout) as { groupVersion: string }).groupVersion, 'external.metrics.k8s.io/v1beta1');
    const crds = await kc('get', 'crd', 'scaledobjects.keda.sh', 'triggerauthentications.keda.sh', '-o', 'name');
    assert.equal(crds.stdout.trim().split('\n').length, 2, crds.stderr);
    // up again: KEDA is part of "up", so a second up finds it there.
    const again = await clusterUpCmd(runner, env.cluster(), log);
    assert.equal(again.alreadyUp, true);
    assert.ok(again.lines.some((l) => /KEDA v2\.16\.1: already up/.test(l)), again.lines.join('\n'));
  });

  test(`a burst of ${ATTEMPTS} attempts × ${TASKS} sh> tasks: workers scale ${MIN}→${MAX} on the queue and back, workers holding tasks are scaled in only after finishing them, every attempt succeeds, no task runs twice`, { timeout: 1_800_000 }, async (t) => {
    if (skipped(t, true)) return;
    setUp();
    const t0 = Date.now();
    // kube-e2e's deployment, applied again with KEDA's ScaledObject (its pods unchanged).
    await runSteps(ALL_STEPS.filter((s) => ['apply', 'port-forward', 'push-workflow'].includes(s.name)), ctx, { renderer: 'silent' });
    log(`the ScaledObject applied to kube-e2e's deployment in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const so = await waitFor(async () => (await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')).stdout === 'True', 90_000, 1000);
    assert.ok(so, `ScaledObject never Ready: ${(await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions}')).stdout}`);
    // KEDA's admission webhook, reached by the API server like a pod's: a second ScaledObject for
    // the same workers (two autoscalers fighting over one Deployment) is refused at admission.
    const mine = JSON.parse((await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'json')).stdout) as { metadata: { namespace: string } };
    const twin = { ...mine, metadata: { name: 'digdag-autoscaler-twin', namespace: mine.metadata.namespace }, status: undefined };
    const refused = await runner.run({ argv: kubectl(config, 'create', '--dry-run=server', '-f', '-'), input: JSON.stringify(twin), quiet: true, nothrow: true, timeoutMs: 60_000 });
    assert.notEqual(refused.code, 0, 'a second ScaledObject for the workers was admitted: KEDA\'s webhook did not answer');
    assert.match(refused.stderr, /admission webhook "vscaledobject\.kb\.io" denied the request: .*already managed by the ScaledObject 'digdag-autoscaler'/);

    // The proof e2e runs too (lib/kube/scaling-proof.ts): its checks, and the figures behind them asserted here.
    const proof = await proveQueueScaling(ctx, kubeTarget, SCALING_BURST, log, async (holders) => {
      // Their JVMs (a new worker's among them) map the image's class-data-sharing archive, the one
      // made for their classpath (docker/entrypoint.sh cds_flag).
      for (const pod of holders) {
        const maps = await k('exec', pod, '-c', 'digdag', '--', 'sh', '-c', 'cat /proc/[0-9]*/maps 2>/dev/null | grep -o "/opt/digdag/cds/[0-9a-f]*\\.jsa" | sort -u');
        assert.match(maps.stdout.trim(), /^\/opt\/digdag\/cds\/[0-9a-f]{16}\.jsa$/, `the JVM of ${pod} maps no class-data-sharing archive: ${maps.stdout}${maps.stderr}`);
      }
    });
    for (const l of proof.lines) t.diagnostic(l);
    const f = proof.figures;
    const samples = proof.samples;
    const burstAt = proof.burstAt;
    const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    log(`timeline (s, replicas/ready, waiting+running): ${samples.filter((_, i) => i % 5 === 0).map((s) => `${((s.at - burstAt) / 1000).toFixed(0)}:${s.replicas}/${s.ready}:${s.waiting}+${s.running}`).join(' ')}`);
    log(`checks:\n${renderTable(proof.checks)}`);
    assert.deepEqual([proof.min, proof.max, proof.threads], [MIN, MAX, THREADS]);
    assert.deepEqual(proof.failedAttempts, [], 'attempts that did not succeed');
    assert.ok(f.peak > MIN, `the workers never scaled out (peak ${f.peak})`);
    assert.ok(f.peak <= MAX, `more workers than the maximum: ${f.peak}`);
    assert.ok(f.newWorkerTaskMs !== undefined, 'no task ever ran on a worker the autoscaler added');
    // Every lock taken, from the database's own log (a trigger): at least one per sh> task, none twice.
    assert.ok(proof.lockLog.locks >= ATTEMPTS * TASKS, `the lock log saw fewer task locks taken than sh> tasks: ${proof.lockLog.locks}`);
    assert.deepEqual(proof.lockLog.reruns, [], 'task locks taken more than once (a task run twice)');
    assert.deepEqual(proof.lockLog.retried, [], 'task locks taken again after they expired');
    assert.ok(f.locksSeen > 0, 'the samples saw no task lock');
    assert.deepEqual(f.reruns, [], 'tasks re-run by a second agent (samples)');
    assert.equal(f.retried, 0, 'task locks with retry_count > 0 (samples)');
    assert.ok(proof.heldThroughScaleIn.length > 0, 'no worker was scaled in while it held a task (the test must see at least one)');
    assert.deepEqual(proof.heldThroughScaleIn.filter((h) => !h.ok), [], 'a worker scaled in while holding a task must finish it before its pod goes');
    assert.ok(proof.backAtMin, `the workers did not return to ${MIN} after the cooldown`);
    assert.deepEqual(proof.checks.filter((c) => !c.ok), [], 'every check of the proof passes');

    // status, once back at the minimum: what KEDA and its HPA say, the queue by KEDA's query, the scale-in as the last step.
    const statusAt = Date.now();
    // KEDA marks its trigger inactive at its first poll after the long tasks end (their attempts
    // have just succeeded): wait that poll out, bounded, rather than read a view one poll old.
    let now = await autoscalerNow();
    await waitFor(async () => (now = await autoscalerNow()).view.active === false, (3 * POLLING + 5) * 1000, 1000);
    const { view, problems } = now;
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
    const none = await waitFor(async () => {
      const s = await sample();
      return s?.replicas === 0 && s.terminating === 0;
    }, (COOLDOWN + 90) * 1000, 1000);
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
    t.diagnostic(`from zero (polling ${vars!.AUTOSCALING_POLLING_SECONDS} s): submitted → worker pod ${podAt ? sec(podAt - submitAt) : 'n/a'} → ready ${readyAt ? sec(readyAt - submitAt) : 'n/a'} → first task on it ${firstTaskAt ? sec(firstTaskAt - submitAt) : 'n/a (the task ran between two samples)'} → attempt succeeded ${sec(finishedAt - submitAt)}`);
    t.diagnostic(`scale-to-zero check in all: ${sec(Date.now() - t0)}`);
  });

  test(`CPU HPA: metrics-server serves metrics.k8s.io; the project's HorizontalPodAutoscaler (AGENT_AUTOSCALING=hpa, min ${HPA_MIN} / max ${HPA_MAX}) scales the workers out under ${CPU_TASKS} busy sh> tasks and back in once they end`, { timeout: 900_000 }, async (t) => {
    const why = env.skipReason() ?? env.metricsServerMissing() ?? env.runtimeMissing() ?? (env.deployment() ? undefined : 'kube-e2e\'s Digdag deployment did not come up (see its pipeline test)');
    if (why) return t.skip(why);
    setUp();
    const t0 = Date.now();
    const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const hpaConfig = testConfig({ ...vars, AGENT_AUTOSCALING: 'hpa', WORKER_REPLICAS: String(HPA_MIN), AGENT_MAX_REPLICAS: String(HPA_MAX) });
    const hctx = testCtx(hpaConfig, runner);
    const json = async <T>(...args: string[]): Promise<T> => {
      const r = await k(...args);
      assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}`);
      return JSON.parse(r.stdout) as T;
    };

    // The metrics API, served by metrics-server through the aggregation layer.
    const api = await k('get', 'apiservice', METRICS_API, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}');
    assert.equal(api.stdout, 'True', `APIService ${METRICS_API} not Available: ${api.stderr}`);
    const nodes = await json<{ items: { metadata: { name: string }; usage: { cpu: string; memory: string } }[] }>('get', '--raw', '/apis/metrics.k8s.io/v1beta1/nodes');
    assert.deepEqual(nodes.items.map((n) => n.metadata.name), ['localhost']);
    assert.match(nodes.items[0]!.usage.cpu, /^\d+n$/);

    // KEDA gives way: its ScaledObject (and the HPA KEDA made for it) deleted, one worker, then the
    // project's own apply with AGENT_AUTOSCALING=hpa (deploying first if nothing is there yet).
    await k('delete', 'scaledobject', 'digdag-autoscaler', '--ignore-not-found', '--timeout=50s');
    assert.ok(await waitFor(async () => (await k('get', 'hpa', 'keda-hpa-digdag-autoscaler', '-o', 'name')).code !== 0, 60_000, 1000), 'KEDA\'s HPA outlived its ScaledObject');
    const deployed = (await k('get', 'deployment', 'digdag-worker', '-o', 'name')).code === 0;
    if (deployed) assert.equal((await k('scale', 'deployment/digdag-worker', `--replicas=${HPA_MIN}`)).code, 0);
    const steps = deployed ? ['apply', 'port-forward', 'push-workflow'] : ['build-image', 'create-secret', 'start-postgres', 'init-db', 'apply', 'port-forward', 'push-workflow'];
    await runSteps(ALL_STEPS.filter((s) => steps.includes(s.name)), hctx, { renderer: 'silent' });
    try {
      type Hpa = { spec: { minReplicas: number; maxReplicas: number; metrics: { resource: { target: { averageUtilization: number } } }[] }; status: { desiredReplicas?: number; currentReplicas?: number; currentMetrics?: { resource?: { current?: { averageUtilization?: number } } }[]; conditions?: { type: string; status: string; reason: string; message: string }[] } };
      const hpa = () => json<Hpa>('get', 'hpa', 'digdag-autoscaler', '-o', 'json');
      const h0 = await hpa();
      assert.deepEqual([h0.spec.minReplicas, h0.spec.maxReplicas], [HPA_MIN, HPA_MAX]);
      const target = h0.spec.metrics[0]!.resource.target.averageUtilization;
      assert.equal((await k('rollout', 'status', 'deployment/digdag-worker', '--timeout=50s')).code, 0, 'the workers did not roll out');
      const replicas = async () => (await json<{ spec: { replicas?: number } }>('get', 'deployment', 'digdag-worker', '-o', 'json')).spec.replicas ?? 0;

      // The worker's metrics through the API and kubectl top, then the HPA reading them: at rest,
      // below its target, one worker wanted — so that what follows is the load's doing.
      let top = '';
      const metricsReady = await waitFor(async () => {
        const pods = await k('get', '--raw', `/apis/metrics.k8s.io/v1beta1/namespaces/${config.k8s.namespace}/pods`);
        const r = await k('top', 'pod', '-l', 'app.kubernetes.io/component=worker', '--no-headers');
        top = r.stdout.trim();
        return pods.code === 0 && (JSON.parse(pods.stdout) as { items: unknown[] }).items.length > 0 && r.code === 0 && /^digdag-worker-\S+\s+\d+m\s+\d+Mi$/m.test(top);
      }, 120_000, 2000);
      assert.ok(metricsReady, `no metrics for the workers within 120 s (kubectl top: ${top})`);
      log(`kubectl top pod (workers): ${top}`);
      let rest: Hpa | undefined;
      const atRest = await waitFor(async () => {
        rest = await hpa();
        const u = rest.status.currentMetrics?.[0]?.resource?.current?.averageUtilization;
        return u !== undefined && u < target && rest.status.desiredReplicas === HPA_MIN && (await replicas()) === HPA_MIN;
      }, 300_000, 2000);
      assert.ok(atRest, `the HPA never settled at ${HPA_MIN} worker below its ${target}% target: ${JSON.stringify(rest?.status)}`);
      const active = rest!.status.conditions?.find((c) => c.type === 'ScalingActive');
      assert.equal(active?.status, 'True', JSON.stringify(active));
      log(`HPA at rest after ${sec(Date.now() - t0)}: ${rest!.status.currentMetrics?.[0]?.resource?.current?.averageUtilization}% of the CPU request (target ${target}%)`);

      // The load: busy-loop tasks on the one worker; the HPA must take the workers to the maximum.
      const endpoint = await kubeTarget.endpoint(hctx);
      const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'cpu');
      const loadAt = Date.now();
      const id = await startAttempt(endpoint, wf, new Date(Date.UTC(2027, 2, 1)), { tasks: CPU_TASKS, seconds: CPU_SECONDS });
      let n = HPA_MIN;
      const out = await waitFor(async () => (n = await replicas()) >= HPA_MAX, (CPU_SECONDS + 30) * 1000, 1000);
      const scaledAt = Date.now();
      const after = await hpa();
      assert.ok(out, `the HPA did not scale the workers out within ${CPU_SECONDS + 30} s of the load: ${n} replica(s), HPA status ${JSON.stringify(after.status)}`);
      assert.equal(n, HPA_MAX, 'not above the maximum');
      const scaleOut = scaledAt - loadAt;
      t.diagnostic(`CPU HPA scale-out ${HPA_MIN}→${HPA_MAX}: ${sec(scaleOut)} from load start (utilization then ${after.status.currentMetrics?.[0]?.resource?.current?.averageUtilization}% of the request, target ${target}%; metric resolution 10 s)`);
      const a = await waitAttempt(await kubeTarget.endpoint(hctx), id, (CPU_SECONDS + 240) * 1000);
      assert.equal(a.success, true, `the cpu attempt ${id} did not succeed`);
      assert.ok((await replicas()) <= HPA_MAX);
      // Scale-in: the load gone, the HPA returns to the minimum after its stabilization window
      // (the cooldown) and one scale-down period; the pod it removes is idle by then.
      const doneAt = Date.now();
      const budget = (COOLDOWN + SCALE_DOWN_PERIOD + 120) * 1000;
      const back = await waitFor(async () => (n = await replicas()) === HPA_MIN, budget, 1000);
      assert.ok(back, `the HPA did not scale the workers back to ${HPA_MIN} within ${budget / 1000} s of the load's end: ${n} replica(s), HPA status ${JSON.stringify((await hpa()).status)}`);
      t.diagnostic(`CPU HPA scale-in ${HPA_MAX}→${HPA_MIN}: ${sec(Date.now() - doneAt)} after the load's attempt finished (stabilization window = cooldown ${COOLDOWN} s)`);
      t.diagnostic(`CPU HPA test in all: ${sec(Date.now() - t0)} (load ${CPU_TASKS} × ${CPU_SECONDS} s, attempt done ${sec(Date.now() - loadAt)} after its start)`);
    } finally {
      // Nothing follows on this namespace: the HPA goes, the workers stay as they are.
      await k('delete', 'hpa', 'digdag-autoscaler', '--ignore-not-found');
    }
  });

  return {
    async stop() {
      if (vars) await stopTracked(config, 5000);
    },
  };
}
