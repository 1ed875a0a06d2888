// What a benchmark run found and how it is shown: result types, the three tables printed on
// stdout (latency, throughput, PostgreSQL load) and the bars of the PNG charts.
import { median, percentile } from './measure.ts';
import type { Bar } from './charts.ts';
import { countsOfKind, cpuOfKind, perUnit, type WorkloadCost } from './statements.ts';

export type Layout = 'worker' | 'split' | 'server-m';

/** One configuration that ran: a layout with a number of task-running processes. */
export interface Setup {
  /** worker: ui + scheduler + N workers; split: ui + workflow + scheduler + N agents; server-m: one process. */
  layout: Layout;
  /** Workers (worker), agents (split), 1 (server-m). */
  processes: number;
  threadsPerProcess: number;
}

export const totalThreads = (s: Setup) => s.processes * s.threadsPerProcess;

export function setupLabel(s: Setup): string {
  if (s.layout === 'server-m') return `server -m, ${s.threadsPerProcess} threads`;
  const unit = s.layout === 'worker' ? 'worker' : 'agent';
  return `${s.layout}: ${s.processes} ${unit}${s.processes > 1 ? 's' : ''} x ${s.threadsPerProcess}`;
}

export interface LatencyResult extends Setup {
  workload: 'sequential' | 'fan-out';
  tasks: number;
  /** Per repetition: submission to the last task's end, and to the first task's start (seconds). */
  endToEnd: number[];
  firstStart: number[];
  /** Per repetition: every task's start and end, seconds after submission, in order of start (where the time went). */
  taskSpans?: [number, number][][];
}

export interface BurstResult extends Setup {
  burst: 'io' | 'tiny';
  tasks: number;
  /** Submission of the first attempt to the end of the last task. */
  seconds: number;
  tasksPerSecond: number;
  /** Per attempt: its submission to its first task's start (seconds). */
  firstStart: number[];
  /** Transactions/s in the digdag database over the burst; null for server -m (in-memory H2). */
  pgTxPerSecond: number | null;
  /** Share of the machine's CPU time that was busy over the burst (0..1), whoever used it. */
  cpuBusy: number;
  /** The part of it the bench's own processes used (Digdag, its sh> tasks, PostgreSQL). */
  cpuBench: number;
}

export interface IdleResult extends Setup {
  seconds: number;
  pgTxPerSecond: number | null;
}

export interface Report {
  latency: LatencyResult[];
  bursts: BurstResult[];
  idle: IdleResult[];
  /** What the worker and split layouts ran: Digdag with digdag-ha's patches (DIGDAG_PATCHES) and the
   * agent's empty-round wait (AGENT_POLL_MILLIS) and the executor loop's longest wait (EXECUTOR_POLL_MILLIS;
   * absent in runs from before that patch: 5000 as released), or as released. server -m always runs it as released. */
  digdag?: { patches: boolean; agentPollMillis: number | null; executorPollMillis?: number | null };
  /** Per workload of the layouts on PostgreSQL: pg_stat_statements and Digdag's own counters. */
  costs?: WorkloadCost[];
}

export function formatTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => (c ?? '').padEnd(w[i]!)).join('  ').trimEnd();
  return [line(head), line(w.map((x) => '-'.repeat(x))), ...rows.map(line)].join('\n');
}

const s1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');
const s2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
const ratio = (a: number, b: number | undefined) => (b && Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(2)}x` : '');
const p50p95 = (v: readonly number[]) => `${s2(percentile(v, 50))} / ${s2(percentile(v, 95))}`;
const NO_PG = 'in-memory H2, no PostgreSQL';

export function latencyTable(rows: readonly LatencyResult[]): string {
  const seed = (w: string) => rows.find((r) => r.layout === 'server-m' && r.workload === w);
  return formatTable(
    ['configuration', 'workload', 'tasks', 'reps', 'end-to-end median s', 'vs server -m', 'submit->first start p50 / p95 s'],
    rows.map((r) => {
      const s = seed(r.workload);
      return [setupLabel(r), r.workload, String(r.tasks), String(r.endToEnd.length), s2(median(r.endToEnd)), r === s ? '' : ratio(median(r.endToEnd), s && median(s.endToEnd)), p50p95(r.firstStart)];
    }),
  );
}

export function throughputTable(rows: readonly BurstResult[]): string {
  const one = (r: BurstResult) => rows.find((x) => x.layout === r.layout && x.burst === r.burst && x.processes === 1 && x.threadsPerProcess === r.threadsPerProcess);
  const seed = (r: BurstResult) => rows.find((x) => x.layout === 'server-m' && x.burst === r.burst);
  return formatTable(
    ['configuration', 'threads', 'burst', 'tasks', 'seconds', 'tasks/s', 'vs 1 process', 'vs server -m', 'submit->first start p50 / p95 s', 'PG tx/s', 'CPU busy (bench)'],
    rows.map((r) => [
      setupLabel(r),
      String(totalThreads(r)),
      r.burst,
      String(r.tasks),
      s1(r.seconds),
      s2(r.tasksPerSecond),
      r.layout === 'server-m' ? '' : ratio(r.tasksPerSecond, one(r)?.tasksPerSecond),
      r.layout === 'server-m' ? '' : ratio(r.tasksPerSecond, seed(r)?.tasksPerSecond),
      p50p95(r.firstStart),
      r.pgTxPerSecond === null ? 'n/a (H2)' : s1(r.pgTxPerSecond),
      `${Math.round(r.cpuBusy * 100)}% (${Math.round(r.cpuBench * 100)}%)`,
    ]),
  );
}

/** Idle and under each burst, per configuration that had an idle window. */
export function postgresTable(idle: readonly IdleResult[], bursts: readonly BurstResult[]): string {
  const names = [...new Set(bursts.map((b) => b.burst))];
  return formatTable(
    ['configuration', 'idle tx/s', ...names.map((n) => `${n} burst tx/s`)],
    idle.map((i) => {
      if (i.pgTxPerSecond === null) return [setupLabel(i), NO_PG, ...names.map(() => 'n/a')];
      const under = (n: string) => bursts.find((b) => b.layout === i.layout && b.processes === i.processes && b.threadsPerProcess === i.threadsPerProcess && b.burst === n);
      return [setupLabel(i), s1(i.pgTxPerSecond), ...names.map((n) => s1(under(n)?.pgTxPerSecond ?? NaN))];
    }),
  );
}

/** Per task (idle: per second) what each workload cost: transactions, statements, executor and agent rounds. */
export function costTable(costs: readonly WorkloadCost[]): string {
  const per = (c: WorkloadCost, n: number | undefined) => (n === undefined ? '-' : s2(perUnit(c, n)));
  const per1 = (c: WorkloadCost, n: number | undefined) => (n === undefined ? '-' : s1(perUnit(c, n)));
  return formatTable(
    ['configuration', 'workload', 'tasks', 'per', 'PG tx', 'statements', 'PG exec ms', 'CPU ms: workers / ui / scheduler / PostgreSQL', 'executor loops (ui / workers)', 'tasks enqueued (ui / workers)', 'agent rounds', 'agent busy waits', 'db method calls'],
    costs.map((c) => {
      const ui = countsOfKind(c, 'ui');
      const w = countsOfKind(c, c.layout === 'worker' ? 'worker' : 'agent');
      const all = Object.values(c.digdag);
      const sum = (k: 'dbCalls') => (all.length ? all.reduce((a, x) => a + x[k], 0) : undefined);
      return [
        setupLabel(c), c.workload, String(c.tasks), c.tasks > 0 ? 'task' : 'second',
        per(c, c.transactions), per(c, c.calls), per(c, c.execMs),
        [c.layout === 'worker' ? 'worker' : 'agent', 'ui', 'scheduler', 'postgres'].map((k) => per1(c, cpuOfKind(c, k))).join(' / '),
        `${per(c, ui?.executorLoops)} / ${per(c, w?.executorLoops)}`,
        `${per(c, ui?.enqueued)} / ${per(c, w?.enqueued)}`,
        per(c, w?.acquireRounds), per(c, w?.busyWaits), per(c, sum('dbCalls')),
      ];
    }),
  );
}

/** The statements with the most calls and the most time, per workload (text cut to `width`). */
export function topStatementsTable(costs: readonly WorkloadCost[], n = 5, width = 90): string {
  const rows: string[][] = [];
  for (const c of costs) {
    for (const [by, list] of [['calls', c.topByCalls], ['time', c.topByTime]] as const) {
      for (const st of list.slice(0, n)) {
        rows.push([`${setupLabel(c)} ${c.workload}`, by, String(st.calls), s2(perUnit(c, st.calls)), s1(st.ms), st.query.length > width ? `${st.query.slice(0, width - 1)}…` : st.query]);
      }
    }
  }
  return formatTable(['workload', 'top by', 'calls', 'per task (idle: /s)', 'total ms', 'statement'], rows);
}

export function renderReport(r: Report): string {
  const costs = r.costs?.length
    ? [
        '',
        'Where the time goes (pg_stat_statements of Digdag\'s role and Digdag\'s own counters over each workload\'s windows; per task, idle per second)',
        costTable(r.costs),
        '',
        'Top statements per workload (by calls and by total execution time)',
        topStatementsTable(r.costs),
      ]
    : [];
  return [
    'Latency (end-to-end = submission to the last task\'s own end record; first start = the first task\'s own start record)',
    latencyTable(r.latency),
    '',
    'Throughput (bursts of attempts submitted at once; "vs 1 process" = against one worker/agent of the same layout)',
    throughputTable(r.bursts),
    '',
    'PostgreSQL load (xact_commit + xact_rollback of the digdag database in pg_stat_database, per second)',
    postgresTable(r.idle, r.bursts),
    ...costs,
  ].join('\n');
}

/** Throughput chart: one group per burst, one bar per configuration (named in full in the legend). */
export function throughputBars(rows: readonly BurstResult[], burst: BurstResult['burst']): Bar[] {
  return rows.filter((r) => r.burst === burst).map((r) => ({ label: setupLabel(r), value: r.tasksPerSecond }));
}

/** Latency chart: one group per workload, one bar per configuration (median seconds). */
export function latencyBars(rows: readonly LatencyResult[], workload: LatencyResult['workload']): Bar[] {
  return rows.filter((r) => r.workload === workload).map((r) => ({ label: setupLabel(r), value: median(r.endToEnd) }));
}
