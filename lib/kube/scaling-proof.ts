// The queue-driven scaling proof on a Kubernetes deployment with KEDA (AGENT_AUTOSCALING=keda),
// with real Digdag: a burst of attempts × parallel `sh>` tasks must scale the task-running role
// (workers; agents in the split layout) out on Digdag's own queue and back to the minimum after the
// cooldown; every attempt succeeds and no task runs twice, counted from Digdag's own lock table (each
// task's queued_task_locks row, sampled while it exists: a lock taken by a second agent, or a
// retry_count above 0, is a re-run; a re-run's row lives at least one task's length, and the proof
// fails when two samples were further apart than that, so none can be missed). Long tasks submitted
// behind the burst are still running when the queue has drained, so the scale-in has to remove
// instances that hold tasks (the pods holding them are made the cheapest to delete,
// `controller.kubernetes.io/pod-deletion-cost`): an instance marked for deletion while it holds a
// task must finish it itself — the lock released by the same agent, the pod gone only afterwards.
// Reaction, drain and scale-in times are reported, not judged. Run by `tasks/e2e.ts` after verify-ha
// when the deployment autoscales with KEDA, and by the KEDA test (test/integration/suites/keda.ts).
import { UserError } from '../errors.ts';
import type { Ctx } from '../pipeline.ts';
import { burstFigures, sampleQueue, startSampling, type BurstFigures, type QueueSample } from '../queue-sampling.ts';
import { LOCK_LOG_DROP_SQL, startLockLog, type LockLog } from '../lock-log.ts';
import { aRole, taskRole } from '../roles.ts';
import type { Target } from '../target.ts';
import { startAttempt, waitAttempt, workflowId } from '../digdag-api.ts';
import { waitFor } from '../processes.ts';
import { SAMPLE_PROJECT } from '../push-workflow.ts';
import { heldLocks, shTaskIds, type Check } from '../verify.ts';
import { kubectl } from './kubectl.ts';
import { kubeQueueSource } from './queue-source.ts';
import { podOfAgent } from './target.ts';

/** The burst: `attempts` × `tasks` parallel `sleep sleepSeconds` tasks, then `long` attempts of one
 * `sleep longSleepSeconds` task behind it (still running when the burst has drained). */
export interface BurstPlan {
  attempts: number;
  tasks: number;
  sleepSeconds: number;
  long: number;
  longSleepSeconds: number;
}

/** The issue's burst (at least 200 tasks) and long tasks that outlast a scale-in step or two. */
export const SCALING_BURST: BurstPlan = { attempts: 50, tasks: 4, sleepSeconds: 5, long: 4, longSleepSeconds: 60 };

/** An instance scaled in while it held a task lock: how long it kept it, which agents held it. */
export interface HeldThroughScaleIn {
  lock: string;
  pod: string;
  agents: string[];
  heldForMs?: number;
  /** The lock released before the pod was gone, by the one agent that took it. */
  ok: boolean;
}

export interface ScalingProof {
  /** The table's rows (lib/verify.ts renderTable), each a claim that could fail. */
  checks: Check[];
  /** The lines that say what happened, for a log. */
  lines: string[];
  min: number;
  max: number;
  threads: number;
  figures: BurstFigures;
  /** When the first attempt was submitted (epoch ms), and the samples from before it to the end. */
  burstAt: number;
  samples: QueueSample[];
  failedReads: number;
  /** Longest time between two samples before the end (reported: the lock log sees every lock). */
  maxGapMs: number;
  /** Every task lock taken during the proof, from the database's own log. */
  lockLog: LockLog;
  drainMs: number;
  scaleInMs: number;
  backAtMin: boolean;
  /** Attempts of the burst and of the long tasks that did not succeed. */
  failedAttempts: string[];
  /** The pods that held the long tasks (made the first to delete). */
  holders: string[];
  heldThroughScaleIn: HeldThroughScaleIn[];
}

const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const opt = (ms: number | undefined) => (ms === undefined ? 'n/a' : sec(ms));

/** The autoscaling bounds the proof needs, from the configuration; a UserError naming the fix otherwise. */
export function scalingBounds(ctx: Ctx): { min: number; max: number; threads: number } {
  const c = ctx.config;
  const role = taskRole(c.layout);
  if (c.k8s.autoscaling !== 'keda') throw new UserError(`the scaling proof needs KEDA scaling the ${role}s (AGENT_AUTOSCALING=${c.k8s.autoscaling})`, 'set AGENT_AUTOSCALING=keda (and CLUSTER_ADDONS=keda on the own cluster)');
  const min = c.k8s.autoscalingMinReplicas ?? c.replicas[role];
  const max = c.k8s.agentMaxReplicas;
  if (min < 1 || max <= min) throw new UserError(`the scaling proof needs room to scale: ${role}s min ${min}, max ${max}`, 'set AUTOSCALING_MIN_REPLICAS (or the role\'s replicas) to 1 or more and AGENT_MAX_REPLICAS above it, e.g. 1 and 4');
  return { min, max, threads: c.agent.maxTaskThreads };
}

/**
 * Runs the burst on the deployment `ctx` describes (KEDA's ScaledObject applied, the sample project
 * pushed) and watches it to the end: the role back at its minimum with none left terminating.
 * `onHolders` runs once the long tasks are all running, with the pods that hold them.
 */
export async function proveQueueScaling(ctx: Ctx, target: Target, plan: BurstPlan, log: (l: string) => void, onHolders?: (pods: string[]) => Promise<void>): Promise<ScalingProof> {
  const { min, max, threads } = scalingBounds(ctx);
  const c = ctx.config;
  const role = taskRole(c.layout);
  const k = (...args: string[]) => ctx.runner.run({ argv: kubectl(c, ...args), quiet: true, nothrow: true, timeoutMs: 60_000 });
  const src = kubeQueueSource(ctx);
  const lockLog = await startLockLog((sql) => target.query(ctx, sql));
  const sampling = startSampling(src);
  const samples = sampling.samples;
  try {
    const endpoint = await target.endpoint(ctx);
    const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
    // Session times of their own, in the past and one second apart: never one an earlier run used.
    const base = Math.floor(Date.now() / 1000) * 1000 - 2 * 86_400_000;
    const burstAt = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < plan.attempts; i++) ids.push(await startAttempt(endpoint, wf, new Date(base + i * 1000), { tasks: plan.tasks, sleep_seconds: plan.sleepSeconds }));
    const longIds: string[] = [];
    for (let i = 0; i < plan.long; i++) longIds.push(await startAttempt(endpoint, wf, new Date(base + (plan.attempts + i) * 1000), { tasks: 1, sleep_seconds: plan.longSleepSeconds }));
    log(`${plan.attempts} attempts × ${plan.tasks} sh> tasks of ${plan.sleepSeconds} s and ${plan.long} of one ${plan.longSleepSeconds}-s task submitted in ${sec(Date.now() - burstAt)}; ${role}s min ${min}, max ${max}, ${threads} threads each`);
    const query = (sql: string) => target.query(ctx, sql);
    // The long tasks, once running, and the pods of the agents holding them: those are made the
    // cheapest to delete, so the scale-in that follows the drain removes an instance that holds one.
    const longTaskIds = longIds.map((id) => shTaskIds(endpoint, id));
    const heldLong = async () => (await Promise.all(longIds.map(async (id, i) => {
      const sh = await longTaskIds[i]!();
      return (await heldLocks(query, id)).filter((l) => sh.has(l.taskId));
    }))).flat();
    let holding: { taskId: string; agent: string }[] = [];
    const longBudgetMs = (plan.attempts * plan.tasks * (plan.sleepSeconds + 2) + 300) * 1000;
    if (!(await waitFor(async () => (holding = await heldLong().catch(() => [])).length === plan.long, longBudgetMs, 1000))) {
      throw new UserError(`the ${plan.long} long tasks never all ran within ${longBudgetMs / 1000} s of the burst`, `see the ${role}s' logs (kubectl logs -l app.kubernetes.io/component=${role})`);
    }
    const holders = [...new Set(holding.map((l) => podOfAgent(l.agent)))];
    for (const pod of holders) {
      const r = await k('annotate', 'pod', pod, '--overwrite', 'controller.kubernetes.io/pod-deletion-cost=-1000');
      if (r.code !== 0) throw new Error(`annotating ${pod} with its deletion cost failed: ${r.stderr.trim()}`);
    }
    log(`long tasks held by ${holders.join(', ')} (made the first to delete)`);
    await onHolders?.(holders);
    const failedAttempts: string[] = [];
    for (const id of ids) if (!(await waitAttempt(await target.endpoint(ctx), id, longBudgetMs)).success) failedAttempts.push(id);
    const drainedAt = Date.now();
    for (const id of longIds) if (!(await waitAttempt(await target.endpoint(ctx), id, (plan.longSleepSeconds + 300) * 1000)).success) failedAttempts.push(id);
    // Back to the minimum after the cooldown, one instance per scale-down period, and none left
    // terminating (a scaled-in instance finishing its tasks is a pod being deleted).
    const backBudgetMs = (c.k8s.autoscalingCooldownSeconds + (max - min) * c.k8s.autoscalingScaleDownPeriodSeconds + plan.longSleepSeconds) * 1000 + 180_000;
    const backAtMin = await waitFor(async () => {
      const s = await sampleQueue(src).catch(() => undefined);
      return s?.replicas === min && s.terminating === 0;
    }, backBudgetMs, 1000);
    const minAt = Date.now();
    await sampling.stop();
    const logged = await lockLog.read();

    const f = burstFigures(samples, burstAt, min * threads);
    const agentsOf = new Map<string, Set<string>>();
    for (const s of samples) for (const l of s.locks) if (l.agent) agentsOf.set(l.id, (agentsOf.get(l.id) ?? new Set()).add(l.agent));
    for (const [id, agents] of logged.agentsOf) for (const a of agents) agentsOf.set(id, (agentsOf.get(id) ?? new Set()).add(a));
    const gaps = samples.slice(1).map((s, i) => s.at - samples[i]!.at).filter((_, i) => samples[i + 1]!.at <= minAt);
    const maxGapMs = Math.max(0, ...gaps);
    // Scaled in while holding a task: a sample where the pod is being deleted and its agent holds a
    // lock; then the lock released, then the pod gone — never the lock with another agent.
    const firstDeleting = new Map<string, { pod: string; at: number }>();
    for (const s of samples) {
      const deleting = new Set(s.workers.filter((w) => w.terminating).map((w) => w.name));
      for (const l of s.locks) if (l.agent && deleting.has(l.instance) && !firstDeleting.has(l.id)) firstDeleting.set(l.id, { pod: l.instance, at: s.at });
    }
    const heldThroughScaleIn = [...firstDeleting].map(([lock, { pod, at }]): HeldThroughScaleIn => {
      const released = samples.find((s) => s.at > at && !s.locks.some((l) => l.id === lock))?.at;
      const gone = samples.find((s) => s.at > at && !s.workers.some((w) => w.name === pod))?.at;
      const agents = [...(agentsOf.get(lock) ?? [])];
      const times = logged.agentsOf.get(lock)?.length ?? 0;
      return { lock, pod, agents, ...(released ? { heldForMs: released - at } : {}), ok: !!released && !!gone && released <= gone && agents.length === 1 && times === 1 };
    });
    const ideal = (plan.attempts * plan.tasks * plan.sleepSeconds) / (max * threads);
    const drainMs = drainedAt - burstAt;
    const lines = [
      `${samples.length} samples (longest gap ${sec(maxGapMs)}; ${sampling.failures.length} failed reads); peak ${role}s ${f.peak}; task locks seen ${f.locksSeen}; task locks taken (the database's log) ${logged.locks}`,
      `scale-out reaction (queue above ${min * threads} → first task on a new ${role}): ${opt(f.reactionMs)} (after the burst: queue above ${opt(f.overThresholdMs)}, new pod ${opt(f.scaledOutMs)}, Ready ${opt(f.newReadyMs)}, its first task ${opt(f.newWorkerTaskMs)})`,
      `drain: ${sec(drainMs)} for ${plan.attempts * plan.tasks} × ${plan.sleepSeconds} s tasks (ideal at ${max} ${role}s × ${threads} threads: ${ideal.toFixed(0)} s, ${(drainMs / 1000 / ideal).toFixed(2)}×)`,
      `scale-in to ${min}: ${sec(minAt - drainedAt)} after the burst drained (cooldown ${c.k8s.autoscalingCooldownSeconds} s, one ${role} per ${c.k8s.autoscalingScaleDownPeriodSeconds} s, ${plan.long} tasks of ${plan.longSleepSeconds} s still running)`,
      ...heldThroughScaleIn.map((h) => `scaled in while holding task lock ${h.lock}: pod ${h.pod} kept it ${h.heldForMs ? sec(h.heldForMs) : '?'} after its deletion began, agents ${h.agents.join(', ')}`),
    ];
    const wanted = plan.attempts * plan.tasks;
    const checks: Check[] = [
      { role, what: `scaled out on the queue (min ${min}, max ${max})`, ok: f.peak > min && f.peak <= max, detail: `peak ${f.peak}; queue above ${min * threads} after ${opt(f.overThresholdMs)}, new pod after ${opt(f.scaledOutMs)}` },
      { role, what: `a task ran on ${aRole(role)} the autoscaler added`, ok: f.newWorkerTaskMs !== undefined, detail: `first task on a new ${role} ${opt(f.newWorkerTaskMs)} after the burst; reaction ${opt(f.reactionMs)}` },
      { role, what: `every attempt succeeded (${plan.attempts} of the burst, ${plan.long} long)`, ok: failedAttempts.length === 0, detail: failedAttempts.length ? `failed: ${failedAttempts.join(', ')}` : `drain ${sec(drainMs)} (${(drainMs / 1000 / ideal).toFixed(2)}× the ideal ${ideal.toFixed(0)} s)` },
      {
        role,
        what: 'no task ran twice (queued_task_locks: no lock taken twice, none retried)',
        ok: logged.locks >= wanted && logged.reruns.length === 0 && logged.retried.length === 0 && f.reruns.length === 0 && f.retried === 0,
        detail: `${logged.locks} task locks taken (≥ ${wanted}), each once by the database's log${logged.reruns.length ? ` — NOT: ${logged.reruns.join('; ')}` : ''}; retried: ${logged.retried.length}; samples: ${f.locksSeen} locks seen, re-runs ${f.reruns.length ? f.reruns.join('; ') : 'none'}, retried ${f.retried}, at most ${sec(maxGapMs)} apart`,
      },
      {
        role,
        what: `${aRole(role)} scaled in while holding a task finished it before its pod went`,
        ok: heldThroughScaleIn.length > 0 && heldThroughScaleIn.every((h) => h.ok),
        detail: heldThroughScaleIn.length ? heldThroughScaleIn.map((h) => `${h.pod} kept lock ${h.lock} ${h.heldForMs ? sec(h.heldForMs) : '?'}${h.ok ? '' : ' NOT finished by itself'}`).join('; ') : `no ${role} was scaled in while it held a task`,
      },
      { role, what: `back at ${min} after the cooldown`, ok: backAtMin, detail: backAtMin ? `${sec(minAt - drainedAt)} after the drain` : `not back within ${backBudgetMs / 1000} s of the long tasks` },
    ];
    return { checks, lines, min, max, threads, figures: f, burstAt, samples, failedReads: sampling.failures.length, maxGapMs, lockLog: logged, drainMs, scaleInMs: minAt - drainedAt, backAtMin, failedAttempts, holders, heldThroughScaleIn };
  } finally {
    await sampling.stop().catch(() => {});
    await lockLog.drop().catch((e) => log(`the lock log could not be dropped (${e instanceof Error ? e.message.split('\n')[0] : e}): drop it with: ${LOCK_LOG_DROP_SQL}`));
  }
}
