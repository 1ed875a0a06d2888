// Where a workload's time goes inside the worker layout: PostgreSQL's per-statement view
// (pg_stat_statements, loaded by the bench's PostgreSQL with POSTGRES_STAT_STATEMENTS) and Digdag's
// own counters from each process's JMX exporter (executor loops, agent rounds). Pure functions:
// the SQL the bench sends, parsing its answers and the exporters' text, summing windows, and the
// per-task figures; bench/run.ts does the I/O, bench/report.ts prints them.

/** One normalised statement of Digdag's over a window (pg_stat_statements groups by queryid). */
export interface Statement {
  id: string;
  /** The normalised text, whitespace collapsed, cut at 200 characters. */
  query: string;
  calls: number;
  /** total_exec_time, milliseconds. */
  ms: number;
  rows: number;
}

/** One reading: the database's committed + rolled back transactions so far, and every statement. */
export interface StatementsReading {
  tx: number;
  statements: Statement[];
}

/**
 * Read as Digdag's role (it sees its own statements' text): the digdag database's transactions and
 * every statement of that role in it since the last reset. The bench's own queries (this one and the
 * pg_stat_database counter) read pg_stat_* and are left out.
 */
export const READ_STATEMENTS_SQL = [
  "SELECT json_build_object('tx', (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),",
  "'statements', coalesce((SELECT json_agg(json_build_object('id', queryid::text, 'query', left(regexp_replace(query, '\\s+', ' ', 'g'), 200),",
  "'calls', calls, 'ms', total_exec_time, 'rows', rows)) FROM pg_stat_statements",
  'WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())',
  'AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)',
  "AND query NOT LIKE '%pg\\_stat\\_%'), '[]'::json))",
].join(' ');

/** As the superuser (the function is not granted to others): forget every statement so far. */
export const RESET_STATEMENTS_SQL = 'SELECT pg_stat_statements_reset();\n';

export function parseStatementsReading(json: string): StatementsReading {
  const v = JSON.parse(json) as { tx: unknown; statements: unknown };
  if (typeof v.tx !== 'number' || !Array.isArray(v.statements)) throw new Error(`not a statements reading: ${json.slice(0, 200)}`);
  return {
    tx: v.tx,
    statements: v.statements.map((s: Record<string, unknown>) => ({ id: String(s.id), query: String(s.query), calls: Number(s.calls), ms: Number(s.ms), rows: Number(s.rows) })),
  };
}

/** Statements of several windows (repetitions) added up by queryid. */
export function sumStatements(windows: readonly (readonly Statement[])[]): Statement[] {
  const by = new Map<string, Statement>();
  for (const w of windows) {
    for (const s of w) {
      const t = by.get(s.id);
      if (t) by.set(s.id, { ...t, calls: t.calls + s.calls, ms: t.ms + s.ms, rows: t.rows + s.rows });
      else by.set(s.id, { ...s });
    }
  }
  return [...by.values()];
}

/** The n statements with the most calls (or the most time), ties by the other measure. */
export function topStatements(statements: readonly Statement[], by: 'calls' | 'ms', n: number): Statement[] {
  const other = by === 'calls' ? 'ms' : 'calls';
  return [...statements].sort((a, b) => b[by] - a[by] || b[other] - a[other]).slice(0, n);
}

/** Prometheus text format → value per series ("name{labels}" as written); comments skipped. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l || l.startsWith('#')) continue;
    // The series is everything up to the last space outside the labels (no timestamps from the exporter).
    const close = l.lastIndexOf('}');
    const cut = l.indexOf(' ', close < 0 ? 0 : close);
    if (cut < 0) continue;
    const value = Number(l.slice(cut + 1).trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) out.set(l.slice(0, cut), value);
  }
  return out;
}

/** Digdag's counters the bench reads per process, by the exporter's names (monitoring/jmx-exporter.yaml). */
export const DIGDAG_COUNTERS = {
  executorLoops: 'digdag_executor_loops_total',
  enqueued: 'digdag_executor_enqueued_tasks_total',
  acquireRounds: 'digdag_agent_acquire_rounds_total',
  busyWaits: 'digdag_agent_busy_waits_total',
} as const;
export type DigdagCounter = keyof typeof DIGDAG_COUNTERS;
/** Calls of Digdag's timed database methods (digdag_timer_calls_total{category="db"}), all methods. */
const DB_CALLS = /^digdag_timer_calls_total\{.*category="db".*\}$/;

export type DigdagCounts = Record<DigdagCounter | 'dbCalls', number>;

/** One process's counters from its exporter's text (0 where a series is absent). */
export function digdagCounts(text: string): DigdagCounts {
  const m = parsePrometheus(text);
  const base = (name: string) => [...m].filter(([k]) => k === name || k.startsWith(`${name}{`)).reduce((a, [, v]) => a + v, 0);
  const out = Object.fromEntries(Object.entries(DIGDAG_COUNTERS).map(([k, name]) => [k, base(name)])) as DigdagCounts;
  out.dbCalls = [...m].filter(([k]) => DB_CALLS.test(k)).reduce((a, [, v]) => a + v, 0);
  return out;
}

export function countsDelta(before: DigdagCounts, after: DigdagCounts): DigdagCounts {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k as keyof DigdagCounts] ?? 0)])) as DigdagCounts;
}

export function addCounts(a: DigdagCounts | undefined, b: DigdagCounts): DigdagCounts {
  return a ? (Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v + a[k as keyof DigdagCounts]])) as DigdagCounts) : { ...b };
}

/** What one workload cost in the worker layout, over its windows (each repetition, or the burst). */
export interface WorkloadCost {
  layout: 'worker' | 'split';
  processes: number;
  threadsPerProcess: number;
  workload: 'idle' | 'sequential' | 'fan-out' | 'io' | 'tiny';
  /** Tasks run in the windows (0 for idle). */
  tasks: number;
  /** Length of the windows together. */
  seconds: number;
  /** Transactions in the digdag database (pg_stat_database), minus the bench's own readings. */
  transactions: number;
  calls: number;
  /** Time PostgreSQL spent executing the statements, milliseconds. */
  execMs: number;
  topByCalls: Statement[];
  topByTime: Statement[];
  /** Digdag's counters per process (ui, scheduler, worker-N), summed over the windows. */
  digdag: Record<string, DigdagCounts>;
  /** CPU time per registered process (ui-1, worker-N with its sh> tasks, postgres with its backends), ms. */
  cpuMs: Record<string, number>;
}

/** Linux's clock tick (USER_HZ), the unit of /proc/<pid>/stat's times. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** Transactions the bench adds to a window itself: the reading before it and the reset. */
export const OWN_TRANSACTIONS = 2;

/** A workload's cost from its windows: each a reading before (tx) and after (tx, statements). */
export function workloadCost(
  setup: Pick<WorkloadCost, 'layout' | 'processes' | 'threadsPerProcess' | 'workload' | 'tasks'>,
  windows: readonly { seconds: number; txBefore: number; after: StatementsReading; digdag: Record<string, DigdagCounts>; cpuTicks?: Record<string, number> }[],
  top = 8,
): WorkloadCost {
  const all = sumStatements(windows.map((w) => w.after.statements));
  const digdag: Record<string, DigdagCounts> = {};
  for (const w of windows) for (const [p, c] of Object.entries(w.digdag)) digdag[p] = addCounts(digdag[p], c);
  const cpuMs: Record<string, number> = {};
  for (const w of windows) for (const [p, t] of Object.entries(w.cpuTicks ?? {})) cpuMs[p] = (cpuMs[p] ?? 0) + (t * 1000) / CLOCK_TICKS_PER_SECOND;
  return {
    ...setup,
    seconds: windows.reduce((a, w) => a + w.seconds, 0),
    transactions: windows.reduce((a, w) => a + Math.max(0, w.after.tx - w.txBefore - OWN_TRANSACTIONS), 0),
    calls: all.reduce((a, s) => a + s.calls, 0),
    execMs: all.reduce((a, s) => a + s.ms, 0),
    topByCalls: topStatements(all, 'calls', top),
    topByTime: topStatements(all, 'ms', top),
    digdag,
    cpuMs,
  };
}

/** Per task where there were tasks, per second for idle. */
export const perUnit = (c: WorkloadCost, n: number) => n / (c.tasks > 0 ? c.tasks : c.seconds);

/** CPU ms of all processes of a kind ("worker" sums worker-1, worker-2 …); undefined when none was read. */
export function cpuOfKind(c: WorkloadCost, kind: string): number | undefined {
  const v = Object.entries(c.cpuMs ?? {}).filter(([p]) => p === kind || p.replace(/-\d+$/, '') === kind);
  return v.length ? v.reduce((a, [, ms]) => a + ms, 0) : undefined;
}

/** Digdag's counters of all processes of a role kind ("worker" sums worker-0, worker-1 …). */
export function countsOfKind(c: WorkloadCost, kind: string): DigdagCounts | undefined {
  let out: DigdagCounts | undefined;
  for (const [p, v] of Object.entries(c.digdag)) if (p === kind || p.replace(/-\d+$/, '') === kind) out = addCounts(out, v);
  return out;
}
