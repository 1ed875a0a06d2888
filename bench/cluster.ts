// The bench's cluster mode (npm run bench -- --target cluster): the same burst on the project's
// own cluster with real Digdag, on fixed worker counts and on KEDA scaling the workers on the
// queue, side by side in one run — drain time against the ideal, tasks/s, the scale-out's steps
// and the scale-in, re-runs from Digdag's lock table. Built on the pipeline's steps (the same
// build-image … push-workflow as `up`, apply again per configuration) and KEDA as the cluster's
// add-on (CLUSTER_ADDONS=keda). Brings the cluster up when it is not, and takes down what it
// brought up (also on failure and Ctrl-C) unless --keep.
import fs from 'node:fs';
import path from 'node:path';
import { loadClusterConfig } from '../lib/cluster/config.ts';
import { clusterDown, clusterUpCmd, missingPrerequisites } from '../lib/cluster/lifecycle.ts';
import { makeCtx } from '../lib/cli.ts';
import { loadConfig, type Config } from '../lib/config.ts';
import { attemptTasks, startAttempt, waitAttempt, workflowId, type Attempt, type Task } from '../lib/digdag-api.ts';
import { describeError, UserError } from '../lib/errors.ts';
import { kubectl } from '../lib/kube/kubectl.ts';
import { kubeQueueSource } from '../lib/kube/queue-source.ts';
import { ROOT } from '../lib/paths.ts';
import { runStep, runSteps, type Ctx } from '../lib/pipeline.ts';
import { freePortRange } from '../lib/ports.ts';
import { waitFor } from '../lib/processes.ts';
import { SAMPLE_PROJECT } from '../lib/push-workflow.ts';
import { burstFigures, sampleQueue, startSampling } from '../lib/queue-sampling.ts';
import { ShellRunner } from '../lib/runner.ts';
import { commOf, cpuShares, readMachineCpu, parseProcStat, podCpuShares, podUidOfCgroup, USER_HZ, type CommandTimes } from './measure.ts';
import { ALL_STEPS, kubeTarget, stepOf } from '../tasks/steps.ts';
import { REPLICA_VARIABLE } from '../lib/config/roles.ts';
import { taskRole } from '../lib/roles.ts';
import { clusterLabel, clusterRun, clusterSetups, minWorkers, renderClusterReport, roleOf, rolesLine, setupLayout, taskCount, taskLimitFor, taskTimes, type ClusterBenchOptions, type ClusterRun, type ClusterSetup } from './cluster-report.ts';

type Log = (line: string) => void;

/** Every process's CPU time now, by pid (processes that vanish while read are left out). */
function readCommandTimes(): Map<number, CommandTimes> {
  const out = new Map<number, CommandTimes>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const text = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      out.set(Number(d), { comm: commOf(text), ticks: parseProcStat(text).ticks });
    } catch {
      // gone between readdir and read
    }
  }
  return out;
}

/** Each pod's CPU time so far (ns, by pod uid): cpuacct.usage of the pod cgroups the kubelet makes under its cgroupfs root. */
function readPodUsage(cgroupRoot: string): Map<string, number> {
  const out = new Map<string, number>();
  const mount = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((f) => f[2] === 'cgroup' && (f[3] ?? '').split(',').includes('cpuacct'))?.[1];
  const walk = (dir: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // gone while read
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const uid = podUidOfCgroup(e.name);
      if (!uid) walk(path.join(dir, e.name));
      else {
        try {
          out.set(uid, Number(fs.readFileSync(path.join(dir, e.name, 'cpuacct.usage'), 'utf8')));
        } catch {
          // gone while read
        }
      }
    }
  };
  if (mount) walk(path.join(mount, cgroupRoot));
  return out;
}

/** The namespace's pods by uid → their role (the chart's app.kubernetes.io/component: ui, workflow, agent, postgres, …). */
async function podRoles(ctx: Ctx): Promise<Map<string, string>> {
  const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-o', 'json'), quiet: true, nothrow: true, timeoutMs: 60_000 });
  const items = (JSON.parse(res.stdout || '{"items":[]}') as { items: { metadata: { uid: string; labels?: Record<string, string> } }[] }).items;
  return new Map(items.map((p) => [p.metadata.uid, p.metadata.labels?.['app.kubernetes.io/component'] ?? 'unlabelled']));
}

/** The variables of one configuration: its layout, the counts of its task-running role (workers, or
 * agents in split, where WORKFLOW_REPLICAS runs the executor loops), autoscaling. The KEDA runs hold in
 * both layouts: the ScaledObject (chart/digdag-ha) and the bench's sampling (lib/kube/queue-source.ts)
 * both take the layout's task role (lib/roles.ts taskRole). */
export function configOverrides(o: ClusterBenchOptions, setup: ClusterSetup, base: Record<string, string>): Record<string, string> {
  const layout = setupLayout(setup);
  const replicas = REPLICA_VARIABLE[taskRole(layout)];
  return {
    ...base,
    DIGDAG_HA_LAYOUT: layout,
    ...(layout === 'split' ? { [REPLICA_VARIABLE.workflow]: String(setup.executors ?? 1) } : {}),
    AGENT_MAX_TASK_THREADS: String(o.threads),
    // A wide fan-out is more tasks per attempt than Digdag allows by default (Too many tasks. Limit: 1000).
    ...(taskLimitFor(o.tasksPerAttempt) ? { WORKFLOW_MAX_TASKS: taskLimitFor(o.tasksPerAttempt)! } : {}),
    ...(setup.mode === 'fixed'
      ? { AGENT_AUTOSCALING: 'none', [replicas]: String(setup.workers) }
      : {
          AGENT_AUTOSCALING: 'keda',
          [replicas]: String(Math.max(1, setup.min)),
          ...(setup.min === 0 ? { AUTOSCALING_MIN_REPLICAS: '0' } : {}),
          AGENT_MAX_REPLICAS: String(setup.max),
          AUTOSCALING_POLLING_SECONDS: String(o.pollingSeconds),
          AUTOSCALING_COOLDOWN_SECONDS: String(o.cooldownSeconds),
          AUTOSCALING_SCALE_DOWN_PERIOD_SECONDS: String(o.scaleDownPeriodSeconds),
        }),
  };
}

/** The deployment for one configuration (configOverrides on top of the environment). */
export const configFor = (o: ClusterBenchOptions, setup: ClusterSetup, base: Record<string, string>): Config =>
  loadConfig({ root: ROOT, env: process.env, overrides: configOverrides(o, setup, base) });

/** Session times must differ per attempt of a workflow: one second apart, a day in the past. */
let sessions = 0;
const sessionBase = Math.floor(Date.now() / 1000) * 1000 - 86_400_000;
const nextSessionTime = () => new Date(sessionBase - ++sessions * 1000);

const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The workers (agents) settled at `n` (none being removed) and the queue empty: a clean start for a burst. */
async function settle(ctx: Ctx, setup: ClusterSetup, n: number, log: Log): Promise<void> {
  const t0 = Date.now();
  const src = kubeQueueSource(ctx);
  const ok = await waitFor(async () => {
    const s = await sampleQueue(src).catch(() => undefined);
    return !!s && s.replicas === n && s.ready === n && s.terminating === 0 && s.waiting + s.running === 0;
  }, 300_000, 1000);
  if (!ok) throw new Error(`the ${roleOf(setup)}s did not settle at ${n} Ready with an empty queue within 300 s`);
  log(`  settled at ${taskCount(setup, n)}, queue empty, in ${sec(Date.now() - t0)}`);
}

/** One burst on the configuration deployed now, sampled from before the first submission to the end (KEDA: back at the minimum). */
async function burst(ctx: Ctx, o: ClusterBenchOptions, setup: ClusterSetup, cgroupRoot: string, log: Log): Promise<ClusterRun> {
  const sampling = startSampling(kubeQueueSource(ctx), { everyMs: o.sampleEveryMs });
  try {
    // One sample before the burst: the workers it starts from.
    if (!(await waitFor(() => sampling.samples.length > 0, 60_000, 100))) throw new Error(`no sample of the ${roleOf(setup)}s and the queue within 60 s: ${sampling.failures.at(-1) ?? 'no reason'}`);
    const endpoint = await kubeTarget.endpoint(ctx);
    const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
    // The own cluster runs on this machine: its CPU over the burst, and the JVMs' and PostgreSQL's shares.
    const [cpu0, procs0, pods0] = [readMachineCpu(), readCommandTimes(), readPodUsage(cgroupRoot)];
    const burstAt = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < o.attempts; i++) ids.push(await startAttempt(endpoint, wf, nextSessionTime(), { tasks: o.tasksPerAttempt, sleep_seconds: o.sleepSeconds }));
    log(`  ${o.attempts} attempts submitted in ${sec(Date.now() - burstAt)}`);
    const timeoutMs = (o.attempts * o.tasksPerAttempt * (o.sleepSeconds + 2) + 300) * 1000;
    const attempts: Attempt[] = [];
    for (const id of ids) attempts.push(await waitAttempt(await kubeTarget.endpoint(ctx), id, timeoutMs));
    const failed = attempts.filter((a) => !a.success);
    if (failed.length) throw new Error(`${failed.length} of ${o.attempts} attempts failed on ${clusterLabel(setup)} (e.g. attempt ${failed[0]!.id})`);
    // Digdag's own end of the last attempt (the polling above sees it up to half a second late).
    const drainedAt = Math.max(...attempts.map((a) => (a.finishedAt ? Date.parse(a.finishedAt) : Date.now())));
    const [cpu1, procs1, pods1] = [readMachineCpu(), readCommandTimes(), readPodUsage(cgroupRoot)];
    const roles = podCpuShares(pods0, pods1, await podRoles(ctx), (cpu1.total - cpu0.total) / USER_HZ);
    const cpu = { ...cpuShares(cpu0, cpu1, procs0, procs1), roles };
    const pct = (x: number) => `${Math.round(x * 100)}%`;
    log(`  drained in ${sec(drainedAt - burstAt)}; CPU ${pct(cpu.busy)} busy: Digdag's JVMs (with their tasks) ${pct(cpu.java)}, PostgreSQL ${pct(cpu.postgres)}; by pod role: ${rolesLine(roles)}`);
    let minAt: number | undefined;
    if (setup.mode === 'keda') {
      const budget = (o.cooldownSeconds + (setup.max - setup.min) * o.scaleDownPeriodSeconds + 180) * 1000;
      const back = await waitFor(() => {
        const last = sampling.samples.at(-1);
        return !!last && last.at > drainedAt && last.replicas === setup.min && last.terminating === 0;
      }, budget, 500);
      if (!back) throw new Error(`KEDA did not bring the ${roleOf(setup)}s back to ${setup.min} within ${budget / 1000} s of the drain`);
      minAt = sampling.samples.find((s) => s.at > drainedAt && s.replicas === setup.min)!.at;
      log(`  back at ${taskCount(setup, setup.min)} ${sec(minAt - drainedAt)} after the drain`);
    }
    const samples = await sampling.stop();
    const f = burstFigures(samples, burstAt, minWorkers(setup) * o.threads);
    // Digdag's own records of every task: where the time went (the fan-out's expansion, the starts' spread, one task's run).
    const tasks: Task[] = [];
    for (const id of ids) tasks.push(...(await attemptTasks(await kubeTarget.endpoint(ctx), id)));
    const times = taskTimes(tasks, burstAt);
    if (times) log(`  ${times.tasks} tasks (${times.leaves} leaves): first started ${sec(times.firstStartS * 1000)}, last started ${sec(times.lastStartS * 1000)}, last done ${sec(times.lastDoneS * 1000)} after the first submission; median start → done ${times.medianToDoneS.toFixed(0)} s`);
    const run = { ...clusterRun(o, setup, burstAt, drainedAt, samples, f, minAt, times), cpu };
    if (sampling.failures.length) log(`  ${sampling.failures.length} samples could not be taken (e.g. ${sampling.failures[0]})`);
    if (f.reruns.length || f.retried) log(`  RE-RUNS: ${[...f.reruns, ...(f.retried ? [`${f.retried} tasks with retry_count > 0`] : [])].join('; ')}`);
    return run;
  } finally {
    await sampling.stop();
  }
}

/** Runs every configuration; returns the runs (what ran until a failure is in `runs` too). */
export async function clusterBench(o: ClusterBenchOptions, runs: ClusterRun[], log: Log): Promise<void> {
  const runner = new ShellRunner(false, () => {});
  const stateDir = process.env.DIGDAG_HA_STATE_DIR || path.join(ROOT, '.state', 'bench-cluster');
  const base: Record<string, string> = {
    DIGDAG_HA_TARGET: 'cluster',
    DIGDAG_HA_STATE_DIR: stateDir,
    DIGDAG_HA_CLUSTER_DIR: process.env.DIGDAG_HA_CLUSTER_DIR || path.join(stateDir, 'c'),
    ...(o.keda ? { CLUSTER_ADDONS: 'keda' } : {}),
    // One 2-vCPU node's profile, and one PostgreSQL (the database's HA is the soak's subject): the node is left to the workers.
    RESOURCE_PROFILE: process.env.RESOURCE_PROFILE || 'small',
    POSTGRES_MEMBERS: process.env.POSTGRES_MEMBERS || '1',
    PORT_FORWARD_PORT: String(await freePortRange(1, 61200)),
  };
  const setups = clusterSetups(o);
  // Every configuration checked before anything starts (a bad combination is refused here).
  const configs = setups.map((s) => configFor(o, s, base));
  const ctx = makeCtx(configs[0]!, runner);
  const cc = loadClusterConfig(ctx.config);
  const missing = missingPrerequisites(cc);
  if (missing.length) throw new UserError(`the own cluster cannot run here; missing: ${missing.join('; ')}`, 'bash .ci/install-cluster (as root); for KEDA bash .ci/install-keda');
  let startedHere = false;
  let stopping: Promise<void> | undefined;
  const teardown = () =>
    (stopping ??= (async () => {
      if (o.keep) {
        log(`kept the cluster and the deployment (--keep); take them down with: DIGDAG_HA_STATE_DIR=${stateDir} DIGDAG_HA_CLUSTER_DIR=${base.DIGDAG_HA_CLUSTER_DIR} npx tsx tasks/down.ts --target cluster --purge && npx tsx tasks/cluster.ts down`);
        return;
      }
      for (const l of await kubeTarget.down(ctx, true).catch((e: unknown) => [`namespace teardown failed: ${describeError(e)}`])) log(`  ${l}`);
      if (startedHere) for (const l of await clusterDown(runner, cc, { purge: true }, () => {})) log(`  ${l}`);
      else log('  the cluster was up before the bench: left running');
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    log(`\n${sig}: taking down what the bench started`);
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const t0 = Date.now();
    const up = await clusterUpCmd(runner, cc, (l) => log(`  [cluster] ${l}`));
    startedHere = !up.alreadyUp;
    for (const l of up.lines) log(`  ${l}`);
    await runSteps(ALL_STEPS.filter((s) => ['build-image', 'create-secret', 'start-postgres', 'init-db', 'apply', 'port-forward', 'push-workflow'].includes(s.name)), ctx, { renderer: 'silent' });
    log(`cluster up and Digdag deployed (${clusterLabel(setups[0]!)}) in ${sec(Date.now() - t0)}`);
    const apply = stepOf('apply');
    for (const [i, setup] of setups.entries()) {
      log(`${clusterLabel(setup)}:`);
      if (i > 0) {
        ctx.config = configs[i]!;
        const t1 = Date.now();
        await apply.preflight?.(ctx);
        await runStep(apply, ctx);
        log(`  applied in ${sec(Date.now() - t1)}`);
      }
      if (setup.mode === 'keda') {
        const k = (...args: string[]) => runner.run({ argv: kubectl(ctx.config, ...args), quiet: true, nothrow: true, timeoutMs: 60_000 });
        const ready = await waitFor(async () => (await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')).stdout === 'True', 120_000, 1000);
        if (!ready) throw new Error(`the ScaledObject never became Ready: ${(await k('get', 'scaledobject', 'digdag-autoscaler', '-o', 'jsonpath={.status.conditions}')).stdout}`);
      }
      await settle(ctx, setup, minWorkers(setup), log);
      runs.push(await burst(ctx, o, setup, cc.cgroupRoot, log));
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await teardown();
  }
  log(`\n${renderClusterReport(o, runs)}`);
}
