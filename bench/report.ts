// What a benchmark run found and how it is shown: result types, the three tables printed on
// stdout (latency, throughput, PostgreSQL load) and the bars of the PNG charts.
import { median, percentile } from './measure.ts';
import type { Bar } from './charts.ts';

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

export function renderReport(r: Report): string {
  return [
    'Latency (end-to-end = submission to the last task\'s own end record; first start = the first task\'s own start record)',
    latencyTable(r.latency),
    '',
    'Throughput (bursts of attempts submitted at once; "vs 1 process" = against one worker/agent of the same layout)',
    throughputTable(r.bursts),
    '',
    'PostgreSQL load (xact_commit + xact_rollback of the digdag database in pg_stat_database, per second)',
    postgresTable(r.idle, r.bursts),
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
