// The bench's cluster mode, its pure half: options, what one burst on one configuration found
// (from the attempts and the burst's samples, lib/queue-sampling.ts), the table printed on stdout,
// and the rows its charts are drawn from. bench/cluster.ts runs it.
import type { Task } from '../lib/digdag-api.ts';
import { UserError } from '../lib/errors.ts';
import { LAYOUTS, taskRole, type Layout } from '../lib/roles.ts';
import type { BurstFigures, QueueSample } from '../lib/queue-sampling.ts';
import type { ClusterBarRow, TimelineRow } from './charts.ts';
import { formatTable } from './report.ts';

export interface ClusterBenchOptions {
  /** The burst: attempts × tasks sh> tasks of `sleep sleepSeconds` each, submitted at once. */
  attempts: number;
  tasksPerAttempt: number;
  sleepSeconds: number;
  /** agent.max-task-threads per worker. */
  threads: number;
  /** The role layout: worker (each worker an executor loop + an agent) or split (the fixed and KEDA
   * counts are agents; `executors` workflow processes run the executor loop). */
  layout: Layout;
  /** Split layout: workflow (executor loop) processes, WORKFLOW_REPLICAS. */
  executors: number;
  /** Fixed counts of the task-running role (workers, or agents in split), each a run of its own (AGENT_AUTOSCALING=none). */
  fixed: number[];
  /** KEDA from min to max workers on the queue (AGENT_AUTOSCALING=keda), run last; null: none. */
  keda: { min: number; max: number } | null;
  /** KEDA's burst this many times (a median of the reaction needs several). */
  kedaBursts: number;
  /** KEDA's pollingInterval, cooldownPeriod and the HPA's scale-down period for the KEDA run. */
  pollingSeconds: number;
  cooldownSeconds: number;
  scaleDownPeriodSeconds: number;
  /** One sample of the workers and the lock table at most this often. */
  sampleEveryMs: number;
  /** Leave the cluster and the deployment up afterwards. */
  keep: boolean;
}

/** The issue's burst: 50 attempts × 4 `sleep 5`; 1, 2 and 4 fixed workers and KEDA 1→4, 4 threads each.
 * KEDA's timings as the KEDA test uses them (a scale-in within the run), not the production defaults. */
export const CLUSTER_DEFAULTS: ClusterBenchOptions = {
  attempts: 50,
  tasksPerAttempt: 4,
  sleepSeconds: 5,
  threads: 4,
  layout: 'worker',
  executors: 1,
  fixed: [1, 2, 4],
  keda: { min: 1, max: 4 },
  kedaBursts: 1,
  pollingSeconds: 5,
  cooldownSeconds: 30,
  scaleDownPeriodSeconds: 15,
  sampleEveryMs: 1000,
  keep: false,
};

/** --quick: a quarter of the burst, the same configurations (figures rougher, ~3× shorter). */
export const CLUSTER_QUICK: Partial<ClusterBenchOptions> = { attempts: 12 };

const positive = (flag: string, s: string, min = 1): number => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${flag}=${s}: expected a whole number ≥ ${min}, e.g. --${flag}=${Math.max(min, 4)}`);
  return n;
};

/** Options from parsed flags (strings), on top of the defaults or --quick. */
export function clusterBenchOptions(flags: Record<string, string | boolean | undefined>): ClusterBenchOptions {
  const o: ClusterBenchOptions = { ...CLUSTER_DEFAULTS, ...(flags.quick ? CLUSTER_QUICK : {}) };
  const str = (k: string) => (typeof flags[k] === 'string' ? (flags[k] as string) : undefined);
  const num = (k: string, min = 1) => (str(k) === undefined ? undefined : positive(k, str(k)!, min));
  o.attempts = num('attempts') ?? o.attempts;
  o.tasksPerAttempt = num('tasks') ?? o.tasksPerAttempt;
  o.sleepSeconds = num('sleep', 0) ?? o.sleepSeconds;
  o.threads = num('threads') ?? o.threads;
  o.pollingSeconds = num('polling') ?? o.pollingSeconds;
  o.cooldownSeconds = num('cooldown') ?? o.cooldownSeconds;
  o.scaleDownPeriodSeconds = num('scale-down-period') ?? o.scaleDownPeriodSeconds;
  o.kedaBursts = num('keda-bursts') ?? o.kedaBursts;
  if (str('fixed') !== undefined) o.fixed = str('fixed') === 'none' ? [] : str('fixed')!.split(',').map((x) => positive('fixed', x.trim()));
  const keda = str('keda');
  if (keda !== undefined) {
    const m = /^(\d+)-(\d+)$/.exec(keda);
    if (keda === 'none') o.keda = null;
    else if (!m || Number(m[2]) < 1 || Number(m[1]) > Number(m[2])) throw new Error(`--keda=${keda}: expected MIN-MAX workers with MIN ≤ MAX (e.g. --keda=1-4), or --keda=none`);
    else o.keda = { min: Number(m[1]), max: Number(m[2]) };
  }
  if (!o.fixed.length && !o.keda) throw new Error('--fixed=none --keda=none leaves nothing to run: name fixed worker counts or a KEDA range');
  const layout = str('layout');
  if (layout !== undefined) {
    if (!(LAYOUTS as readonly string[]).includes(layout)) throw new UserError(`--layout=${layout}: expected ${LAYOUTS.join(' or ')}`, `--layout ${LAYOUTS[0]} (each worker an executor loop + an agent) or --layout split (agents apart from the executor loop)`);
    o.layout = layout as Layout;
  }
  if (str('executors') !== undefined && o.layout !== 'split') throw new UserError(`--executors=${str('executors')}: only the split layout runs the executor loop apart from the ${taskRole(o.layout)}s`, `add --layout split, or leave --executors out`);
  o.executors = num('executors') ?? o.executors;
  o.keep = flags.keep === true;
  return o;
}

/** Tasks of one attempt of parallel.dig besides its fan-out: the root, the loop>, its ^sub and +done. */
export const PARALLEL_DIG_OTHER_TASKS = 4;
/** Digdag's executor.task_max_run (WORKFLOW_MAX_TASKS) by default. */
const DIGDAG_TASK_MAX_RUN = 1000;

/** WORKFLOW_MAX_TASKS for a burst: Digdag's default while an attempt fits, else the next thousand above it. */
export function taskLimitFor(tasksPerAttempt: number): string | undefined {
  const need = tasksPerAttempt + PARALLEL_DIG_OTHER_TASKS;
  return need <= DIGDAG_TASK_MAX_RUN ? undefined : String(Math.ceil(need / 1000) * 1000);
}

/** The split layout's side of a configuration: its executor (workflow) processes. Absent: the worker
 * layout (and every run recorded before the layout was an option). */
export interface SplitSetup {
  layout?: 'split';
  executors?: number;
}

/** One configuration of the cluster mode. `workers`, `min` and `max` count the task-running role:
 * workers, or agents in the split layout. */
export type ClusterSetup = ({ mode: 'fixed'; workers: number } | { mode: 'keda'; min: number; max: number; burst?: number }) & SplitSetup;

export const setupLayout = (s: ClusterSetup): Layout => s.layout ?? 'worker';

/** The setup's task-running role: worker, or agent in split (lib/roles.ts). */
export const roleOf = (s: ClusterSetup) => taskRole(setupLayout(s));

/** "4 workers", "1 agent", "1→4 agents". */
export const taskCount = (s: ClusterSetup, n: number | string, plural = n !== 1): string => `${n} ${roleOf(s)}${plural ? 's' : ''}`;

export function clusterLabel(s: ClusterSetup): string {
  const count = s.mode === 'fixed' ? `fixed: ${taskCount(s, s.workers)}` : `KEDA: ${taskCount(s, `${s.min}→${s.max}`, true)}`;
  const split = s.layout === 'split' ? `, ${s.executors ?? 1} executor${(s.executors ?? 1) === 1 ? '' : 's'} (split)` : '';
  return `${count}${split}${s.mode === 'keda' && s.burst ? ` (burst ${s.burst})` : ''}`;
}

/** The configurations in the order they run: the fixed counts as given, KEDA last (the
 * ScaledObject it applies would keep scaling the later fixed runs). */
export function clusterSetups(o: ClusterBenchOptions): ClusterSetup[] {
  const keda = o.keda;
  const split: SplitSetup = o.layout === 'split' ? { layout: 'split', executors: o.executors } : {};
  const bursts = keda ? Array.from({ length: o.kedaBursts }, (_, i) => ({ mode: 'keda' as const, ...keda, ...(o.kedaBursts > 1 ? { burst: i + 1 } : {}), ...split })) : [];
  return [...o.fixed.map((workers) => ({ mode: 'fixed' as const, workers, ...split })), ...bursts];
}

export const maxWorkers = (s: ClusterSetup) => (s.mode === 'fixed' ? s.workers : s.max);
export const minWorkers = (s: ClusterSetup) => (s.mode === 'fixed' ? s.workers : s.min);

/** One point of a burst's time series, seconds after its first submission. */
export interface TimelinePoint {
  t: number;
  /** Worker pods (not being removed), of them Ready, and being removed (finishing their tasks). */
  workers: number;
  ready: number;
  terminating: number;
  waiting: number;
  running: number;
}

export interface ClusterRun {
  label: string;
  setup: ClusterSetup;
  threads: number;
  attempts: number;
  tasks: number;
  sleepSeconds: number;
  /** First submission → last attempt finished (Digdag's finishedAt). */
  drainSeconds: number;
  tasksPerSecond: number;
  /** Total task-seconds ÷ (max workers × threads); 0 for tiny tasks (sleep 0): idealOf gives theirs. */
  idealSeconds: number;
  peakWorkers: number;
  /** Tasks re-run (a lock held by two agents, or retried), and how many task locks the sampling saw. */
  reruns: number;
  retried: number;
  locksSeen: number;
  /** Seconds after the first submission (KEDA): queue above min × threads, a new pod, it Ready, its first task; and the reaction. */
  overThresholdS?: number;
  scaledOutS?: number;
  newReadyS?: number;
  newWorkerTaskS?: number;
  reactionS?: number;
  /** KEDA: last attempt finished → back at min workers. */
  scaleInS?: number;
  samples: number;
  timeline: TimelinePoint[];
  /** From Digdag's own task records of the burst's attempts (absent in runs recorded before them). */
  taskTimes?: TaskTimes;
  /** The machine's CPU over the burst (the own cluster runs on it), as shares of all cores' time: busy,
   * the processes named java (Digdag's JVMs, with the sh> tasks they reaped) and postgres; and per pod
   * role (the pods' cgroups: ui, worker or workflow and agent, scheduler, postgres; absent in runs
   * recorded before it). */
  cpu?: { busy: number; java: number; postgres: number; roles?: Record<string, number> };
}

/** Where a burst's time went, from Digdag's task records of the fan-out's tasks (the leaves under a
 * loop's ^sub; all leaves when there is none): startedAt, and updatedAt — its last state change, the
 * success the executor records after the agent's callback. Digdag keeps whole seconds. Seconds after
 * the first submission. */
export interface TaskTimes {
  /** Every task of the attempts (roots, groups, the loop's ^sub, +done), and of them the fan-out's. */
  tasks: number;
  leaves: number;
  firstStartS: number;
  lastStartS: number;
  lastDoneS: number;
  /** Median startedAt → updatedAt of one fan-out task: its run plus the wait for its success to be recorded. */
  medianToDoneS: number;
}

/** TaskTimes of the tasks of a burst's attempts (every attempt's tasks together), submitted at `burstAt`. */
export function taskTimes(tasks: readonly Task[], burstAt: number): TaskTimes | undefined {
  const parents = new Set(tasks.map((t) => t.parentId).filter((p): p is string => !!p));
  const leaves = tasks.filter((t) => !parents.has(t.id) && t.startedAt);
  const fanout = leaves.some((t) => t.fullName.includes('^sub')) ? leaves.filter((t) => t.fullName.includes('^sub')) : leaves;
  if (!fanout.length) return undefined;
  const ts = fanout.map((t) => ({ start: Date.parse(t.startedAt!), end: Date.parse(t.updatedAt) }));
  const toDone = ts.map((l) => (l.end - l.start) / 1000).sort((a, b) => a - b);
  const at = (ms: number) => (ms - burstAt) / 1000;
  return {
    tasks: tasks.length,
    leaves: ts.length,
    firstStartS: at(Math.min(...ts.map((l) => l.start))),
    lastStartS: at(Math.max(...ts.map((l) => l.start))),
    lastDoneS: at(Math.max(...ts.map((l) => l.end))),
    medianToDoneS: toDone[Math.floor((toDone.length - 1) / 2)]!,
  };
}

/** Mean share of the threads (max workers × threads) holding a task lock, over the samples from the first submission to the drain. */
export function threadsBusy(r: ClusterRun): number | undefined {
  const during = r.timeline.filter((p) => p.t >= 0 && p.t <= r.drainSeconds);
  return during.length ? during.reduce((a, p) => a + p.running, 0) / during.length / (maxWorkers(r.setup) * r.threads) : undefined;
}

/** Same layout and executor processes: runs whose task-role counts compare. */
const sameLayout = (a: ClusterSetup, b: ClusterSetup) => setupLayout(a) === setupLayout(b) && (a.executors ?? 1) === (b.executors ?? 1);

/** The run on one fixed worker (agent) of the same layout, the reference for `r`'s speed-up and tiny tasks' ideal. */
export const oneOf = (r: ClusterRun, runs: readonly ClusterRun[]): ClusterRun | undefined =>
  runs.find((x) => x.setup.mode === 'fixed' && x.setup.workers === 1 && sameLayout(x.setup, r.setup));

/**
 * The ideal drain of a run among the runs of one bench. Sleeping tasks: task-seconds ÷ (max workers ×
 * threads) — every thread of the most workers busy sleeping from the first submission on. Tiny tasks
 * (sleep 0) have no task-seconds, and what one costs (Digdag's steps, the shell) is the thing measured:
 * their ideal is perfect linear scaling of the same burst on one fixed worker — its drain ÷ max workers
 * (the 1-worker run is its own ideal), of the same layout (split: 1 agent). Undefined without a 1-worker run.
 */
export function idealOf(r: ClusterRun, runs: readonly ClusterRun[]): number | undefined {
  if (r.sleepSeconds > 0) return r.idealSeconds;
  const one = oneOf(r, runs.filter((x) => x.sleepSeconds === 0 && x.tasks === r.tasks));
  return one ? one.drainSeconds / maxWorkers(r.setup) : undefined;
}

const s = (ms: number | undefined) => (ms === undefined ? undefined : ms / 1000);

/** A run's record from its attempts' times and the samples taken around it. */
export function clusterRun(o: ClusterBenchOptions, setup: ClusterSetup, burstAt: number, drainedAt: number, samples: readonly QueueSample[], f: BurstFigures, minAt?: number, times?: TaskTimes): ClusterRun {
  const tasks = o.attempts * o.tasksPerAttempt;
  const drainSeconds = (drainedAt - burstAt) / 1000;
  return {
    label: clusterLabel(setup),
    setup,
    threads: o.threads,
    attempts: o.attempts,
    tasks,
    sleepSeconds: o.sleepSeconds,
    drainSeconds,
    tasksPerSecond: tasks / drainSeconds,
    idealSeconds: (tasks * o.sleepSeconds) / (maxWorkers(setup) * o.threads),
    peakWorkers: f.peak,
    reruns: f.reruns.length,
    retried: f.retried,
    locksSeen: f.locksSeen,
    overThresholdS: s(f.overThresholdMs),
    scaledOutS: s(f.scaledOutMs),
    newReadyS: s(f.newReadyMs),
    newWorkerTaskS: s(f.newWorkerTaskMs),
    reactionS: s(f.reactionMs),
    scaleInS: minAt === undefined ? undefined : (minAt - drainedAt) / 1000,
    samples: samples.length,
    ...(times ? { taskTimes: times } : {}),
    timeline: samples.map((x) => ({ t: (x.at - burstAt) / 1000, workers: x.replicas, ready: x.ready, terminating: x.terminating, waiting: x.waiting, running: x.running })),
  };
}

const s1 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(1));

/** Drain ÷ ideal, e.g. "1.28x"; '-' without an ideal. */
export function vsIdeal(r: ClusterRun, runs: readonly ClusterRun[]): string {
  const ideal = idealOf(r, runs);
  return ideal ? `${(r.drainSeconds / ideal).toFixed(2)}x` : '-';
}

/** Where the time went in the runs with task records: the fan-out's expansion until its first task
 * started, the starts' spread (the queue handed out), the last success recorded, the attempt's end,
 * one task's start → done, the threads' mean use (sampled locks), and the machine's CPU. */
/** "agent 52%, workflow 31%, postgres 12%, ui 2%": the pod roles' CPU shares, largest first. */
export const rolesLine = (roles: Readonly<Record<string, number>>): string =>
  Object.entries(roles)
    .sort((a, b) => b[1] - a[1])
    .map(([role, x]) => `${role} ${Math.round(x * 100)}%`)
    .join(', ');

export function taskTimesTable(runs: readonly ClusterRun[]): string {
  const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : `${Math.round(x * 100)}%`);
  return formatTable(
    ['configuration', 'fan-out tasks', 'first started s', 'last started s', 'last done s', 'attempt done s', 'median start → done s', 'threads busy', 'CPU busy (Digdag JVMs / PostgreSQL)', 'CPU by pod role'],
    runs.filter((r) => r.taskTimes).map((r) => {
      const t = r.taskTimes!;
      return [r.label, String(t.leaves), s1(t.firstStartS), s1(t.lastStartS), s1(t.lastDoneS), s1(r.drainSeconds), s1(t.medianToDoneS), pct(threadsBusy(r)), r.cpu ? `${pct(r.cpu.busy)} (${pct(r.cpu.java)} / ${pct(r.cpu.postgres)})` : '-', r.cpu?.roles ? rolesLine(r.cpu.roles) : '-'];
    }),
  );
}

export function clusterTable(runs: readonly ClusterRun[]): string {
  return formatTable(
    ['configuration', 'peak workers', 'tasks', 'drain s', 'ideal s', 'vs ideal', 'tasks/s', 'vs 1 worker', 'scale-out: queue > min → pod → Ready → its first task (s)', 'reaction s', 'scale-in s', 're-runs (locks seen)'],
    runs.map((r, _, all, one = oneOf(r, all)) => [
      r.label,
      String(r.peakWorkers),
      `${r.tasks} × ${r.sleepSeconds}s`,
      s1(r.drainSeconds),
      s1(idealOf(r, runs)),
      vsIdeal(r, runs),
      r.tasksPerSecond.toFixed(2),
      one ? `${(r.tasksPerSecond / one.tasksPerSecond).toFixed(2)}x` : '',
      r.setup.mode === 'keda' ? [r.overThresholdS, r.scaledOutS, r.newReadyS, r.newWorkerTaskS].map(s1).join(' → ') : '',
      r.setup.mode === 'keda' ? s1(r.reactionS) : '',
      r.setup.mode === 'keda' ? s1(r.scaleInS) : '',
      `${r.reruns + r.retried} (${r.locksSeen})`,
    ]),
  );
}

export function renderClusterReport(o: ClusterBenchOptions, runs: readonly ClusterRun[]): string {
  return [
    `Cluster burst: ${o.attempts} attempts × ${o.tasksPerAttempt} sh> tasks of sleep ${o.sleepSeconds}s, ${o.threads} threads per worker ` +
      `(drain = first submission → last attempt finished; ideal = task-seconds ÷ (max workers × threads)${o.sleepSeconds === 0 ? ', for sleep 0 the 1-worker drain ÷ max workers (linear scaling)' : ''}; reaction = queue above min × threads → first task on a new worker)`,
    clusterTable(runs),
    ...kedaSummary(runs),
    ...(runs.some((r) => r.taskTimes) ? ['', 'Where the time went (Digdag\'s task records, whole seconds, after the first submission; threads busy from the sampled locks; the machine\'s CPU):', taskTimesTable(runs)] : []),
  ].join('\n');
}

const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
};

/** Over several KEDA bursts: the median reaction and drain (the issue's p50). */
export function kedaSummary(runs: readonly ClusterRun[]): string[] {
  const keda = runs.filter((r) => r.setup.mode === 'keda');
  const reactions = keda.map((r) => r.reactionS).filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (keda.length < 2 || !reactions.length) return [];
  const drains = keda.map((r) => r.drainSeconds / r.idealSeconds);
  return [
    `KEDA over ${keda.length} bursts: reaction p50 ${s1(median(reactions))} s (${reactions.map(s1).join(', ')}; ${keda.length - reactions.length} without a new worker), ` +
      `drain p50 ${median(drains).toFixed(2)}× the ideal (${drains.map((d) => d.toFixed(2)).join(', ')})`,
  ];
}

/** The bars of the cluster chart, one per run. */
export const clusterBarRows = (runs: readonly ClusterRun[]): ClusterBarRow[] =>
  runs.map((r) => ({ configuration: r.label, tasksPerSecond: r.tasksPerSecond, drainSeconds: r.drainSeconds, idealSeconds: idealOf(r, runs) ?? null }));

/** The time series of every run's burst. */
export const timelineRows = (runs: readonly ClusterRun[]): TimelineRow[] =>
  runs.flatMap((r) => r.timeline.map((p) => ({ configuration: r.label, t: p.t, queue: p.waiting + p.running, workers: p.workers, ready: p.ready })));
