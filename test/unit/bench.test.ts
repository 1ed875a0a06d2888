// Benchmark arithmetic and presentation: percentiles, the tasks' own records, CPU and counter
// rates, the generated workflows, options, the tables, and the charts as rendered (Vega's scene
// graph, the SVG and the PNG). No timing is asserted here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { busyFraction, commOf, cpuShares, median, podCpuShares, podUidOfCgroup, parseCpuStat, parseEvents, parseProcStat, percentile, ratePerSecond, spanOf, taskSpans, ticksPerEntry } from '../../bench/measure.ts';
import { latencyTable, postgresTable, renderReport, setupLabel, throughputBars, throughputTable, type BurstResult, type LatencyResult, type Setup } from '../../bench/report.ts';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { barChartSpec, barChartSvg, clusterChartSpec, renderSvg, svgToPng, timelineSpec } from '../../bench/charts.ts';
import { configOverrides } from '../../bench/cluster.ts';
import { clusterBarRows, clusterBenchOptions, clusterLabel, clusterRun, clusterSetups, clusterTable, idealOf, kedaSummary, renderClusterReport, rolesLine, taskLimitFor, taskTimes, taskTimesTable, threadsBusy, timelineRows, type ClusterRun } from '../../bench/cluster-report.ts';
import type { Task } from '../../lib/digdag-api.ts';
import { burstFigures, type QueueSample } from '../../lib/queue-sampling.ts';
import { benchOptions, fanoutDig, sequentialDig } from '../../bench/workloads.ts';
import { costTable, topStatementsTable } from '../../bench/report.ts';
import { countsDelta, countsOfKind, cpuOfKind, digdagCounts, parsePrometheus, parseStatementsReading, READ_STATEMENTS_SQL, sumStatements, topStatements, workloadCost, type DigdagCounts } from '../../bench/statements.ts';
import { serverOptions } from '../../lib/postgres.ts';
import { UserError } from '../../lib/errors.ts';

test('percentile is nearest-rank; median averages the middle pair', () => {
  assert.equal(percentile([5, 1, 3, 2, 4], 50), 3);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
  assert.equal(percentile([0.4, 0.2, 0.9], 95), 0.9);
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

test('task records are parsed; partial or foreign lines are ignored; spans per attempt', () => {
  const ev = parseEvents([
    '1700000000123456789 42 +seq+t01 start',
    'garbage',
    '1700000000223456789 42 +seq+t01 end',
    '1700000000300000000 42 +seq+t02 start',
    '1700000001123456789 42 +seq+t02 end',
    '1700000000100000000 43 +fan+t1 start',
    '1700000000150000000 43 +fan+t1 end',
    '17 x',
    '1700000000100000000 43 +fan+t1 middle',
  ].join('\n'));
  assert.equal(ev.length, 6);
  assert.equal(ev[1]!.ns - ev[0]!.ns, 100_000_000n);
  assert.deepEqual(spanOf(ev, '42'), { starts: 2, ends: 2, firstStartMs: 1700000000123, lastEndMs: 1700000001123 });
  assert.deepEqual(spanOf(ev), { starts: 3, ends: 3, firstStartMs: 1700000000100, lastEndMs: 1700000001123 });
  assert.equal(spanOf(ev, '99').starts, 0);
  // Each task's start and end after submission, ordered by start; another attempt's tasks left out.
  assert.deepEqual(taskSpans(ev, '42', 1700000000000), [[0.123, 0.223], [0.3, 1.123]]);
  assert.deepEqual(taskSpans(ev, '99', 1700000000000), []);
});

test('CPU busy share from two /proc/stat readings; counter rates discount the measurement itself', () => {
  const a = parseCpuStat('cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n');
  const b = parseCpuStat('cpu  250 0 100 900 50 0 0 0 0 0\n');
  assert.deepEqual(a, { busy: 150, total: 1000 });
  assert.equal(busyFraction(a, b), 200 / 300);
  assert.throws(() => parseCpuStat('intr 1 2 3'), /no cpu line/);
  assert.equal(ratePerSecond(1000, 1201, 20, 1), 10);
  assert.equal(ratePerSecond(5, 5, 10, 1), 0);
  // A command with spaces and parentheses; fields after it: state ppid pgrp … utime stime cutime cstime.
  assert.deepEqual(parseProcStat('4242 (sh (x) y) S 1 4200 4200 0 -1 4194560 100 0 0 0 50 25 3 2 20 0 1 0 99 1000 10'), { pid: 4242, ppid: 1, pgid: 4200, ticks: 80 });
});

test('CPU per registered process: its process group, and its children that lead their own (PostgreSQL\'s backends)', () => {
  const p = (pid: number, ppid: number, pgid: number, ticks: number) => ({ pid, ppid, pgid, ticks });
  const procs = [
    p(100, 1, 100, 50), p(101, 100, 100, 7), // worker-1's JVM and its sh> task
    p(200, 1, 200, 3), p(201, 200, 201, 40), p(202, 200, 202, 2), // the postmaster and two backends (setsid)
    p(203, 201, 201, 1), // a grandchild in a backend's group: not PostgreSQL's by either rule
    p(300, 1, 300, 99), // someone else's
  ];
  assert.deepEqual(ticksPerEntry(procs, [{ name: 'worker-1', pid: 100 }, { name: 'postgres', pid: 200 }, { name: 'gone', pid: 400 }]), { 'worker-1': 57, postgres: 45 });
});

test('the latency workflows: n sequential tasks, or n tasks in one parallel group, each recording itself', () => {
  const seq = sequentialDig(10);
  assert.equal((seq.match(/^\+t\d\d:$/gm) ?? []).length, 10);
  assert.match(seq, /^\+t01:\n {2}sh>: echo "\$\(date \+%s%N\) \$\{attempt_id\} \$\{task_name\} start" >> \$\{events\} && echo .* end" >> \$\{events\}$/m);
  assert.doesNotMatch(seq, /_parallel/);
  const fan = fanoutDig(24);
  assert.match(fan, /^\+fan:\n {2}_parallel: true$/m);
  assert.equal((fan.match(/^ {2}\+t\d\d:$/gm) ?? []).length, 24);
  assert.equal((fan.match(/^ {4}sh>: /gm) ?? []).length, 24);
});

test('options: defaults, --quick, and the equal-threads count always among the worker counts', () => {
  const d = benchOptions({});
  assert.deepEqual([d.reps, d.seqTasks, d.fanoutTasks, d.threads, d.equal], [3, 10, 24, 4, 4]);
  assert.deepEqual(d.workers, [1, 2, 4]);
  assert.deepEqual(d.configs, ['worker', 'split', 'server-m']);
  const q = benchOptions({ quick: true });
  assert.equal(q.reps, 1);
  assert.ok(q.workers.includes(q.equal));
  assert.deepEqual(benchOptions({ workers: '1,2', equal: '3' }).workers, [1, 2, 3]);
  assert.deepEqual(benchOptions({ configs: 'server-m,worker' }).configs, ['server-m', 'worker']);
  assert.throws(() => benchOptions({ configs: 'worker,agents' }), /choose from worker, split, server-m/);
  assert.throws(() => benchOptions({ workers: '1,x' }), /positive whole numbers/);
});

const w = (processes: number): Setup => ({ layout: 'worker', processes, threadsPerProcess: 4 });
const split4: Setup = { layout: 'split', processes: 4, threadsPerProcess: 4 };
const seed: Setup = { layout: 'server-m', processes: 1, threadsPerProcess: 16 };
const burst = (s: Setup, tps: number, b: 'io' | 'tiny' = 'io', pg: number | null = 40): BurstResult => ({
  ...s, burst: b, tasks: 64, seconds: 64 / tps, tasksPerSecond: tps, firstStart: [0.2, 0.4, 1.5], pgTxPerSecond: pg, cpuBusy: 0.93, cpuBench: 0.6,
});

test('labels name the layout, the process count and threads', () => {
  assert.equal(setupLabel(w(1)), 'worker: 1 worker x 4');
  assert.equal(setupLabel(split4), 'split: 4 agents x 4');
  assert.equal(setupLabel(seed), 'server -m, 16 threads');
});

test('the throughput table: speed-up against one process of the same layout and against server -m', () => {
  const table = throughputTable([burst(w(4), 4.0), burst(w(2), 2.5), burst(w(1), 1.25), burst(split4, 2.0), burst(seed, 3.2, 'io', null)]);
  assert.match(table, /^worker: 4 workers x 4 +16 +io +64 +16\.0 +4\.00 +3\.20x +1\.25x +0\.40 \/ 1\.50 +40\.0 +93% \(60%\)$/m);
  assert.match(table, /^worker: 2 workers x 4 .* 2\.00x +0\.78x/m);
  assert.match(table, /^split: 4 agents x 4 +16 +io .* 2\.00 +0\.63x/m, 'no one-agent row: no speed-up, but the ratio to server -m');
  assert.match(table, /^server -m, 16 threads +16 +io .* n\/a \(H2\) +93% \(60%\)$/m);
});

test('the latency table: medians over repetitions, the ratio to server -m, p50/p95 of the first start', () => {
  const lat = (s: Setup, e2e: number[], first: number[], workload: LatencyResult['workload'] = 'sequential'): LatencyResult => ({ ...s, workload, tasks: 10, endToEnd: e2e, firstStart: first });
  const table = latencyTable([lat(w(4), [4.4, 4.0, 5.0], [0.3, 0.2, 0.9]), lat(split4, [55, 50, 60], [3, 4, 5]), lat(seed, [3.0, 4.0, 3.5], [0.1, 0.2, 0.3])]);
  assert.match(table, /^worker: 4 workers x 4 +sequential +10 +3 +4\.40 +1\.26x +0\.30 \/ 0\.90$/m);
  assert.match(table, /^split: 4 agents x 4 +sequential .* 55\.00 +15\.71x +4\.00 \/ 5\.00$/m);
  assert.match(table, /^server -m, 16 threads +sequential +10 +3 +3\.50 +0\.20 \/ 0\.30$/m);
});

test('the PostgreSQL table: idle and per burst; server -m says it has no PostgreSQL', () => {
  const idle = [{ ...w(4), seconds: 20, pgTxPerSecond: 12.34 }, { ...seed, seconds: 20, pgTxPerSecond: null }];
  const table = postgresTable(idle, [burst(w(4), 4, 'io', 55.5), burst(w(4), 9, 'tiny', 80), burst(w(1), 1, 'io', 20), burst(seed, 3, 'io', null), burst(seed, 8, 'tiny', null)]);
  assert.match(table, /^configuration +idle tx\/s +io burst tx\/s +tiny burst tx\/s$/m);
  assert.match(table, /^worker: 4 workers x 4 +12\.3 +55\.5 +80\.0$/m);
  assert.match(table, /^server -m, 16 threads +in-memory H2, no PostgreSQL +n\/a +n\/a$/m);
  assert.match(renderReport({ latency: [], bursts: [], idle }), /Latency[\s\S]*Throughput[\s\S]*PostgreSQL load/);
});

const EXPORTER = `# HELP digdag_agent_acquire_rounds_total Rounds in which this agent had a free thread
# TYPE digdag_agent_acquire_rounds_total counter
digdag_agent_acquire_rounds_total 120.0
digdag_agent_busy_waits_total 3.0
digdag_executor_loops_total 7.0
digdag_executor_enqueued_tasks_total 0.0
digdag_timer_calls_total{category="db",method="dssm_lockSharedAgentTasks",} 40.0
digdag_timer_calls_total{category="db",method="ssm_getTaskById",} 2.0
digdag_timer_calls_total{category="agent",method="opm_run",} 9.0
hikaricp_connections_active{pool="HikariPool-1",} 1.0
jvm_memory_bytes_used{area="heap",} 1.2345E8
`;

test('Digdag\'s counters from an exporter\'s text: the agent and executor series, db calls summed over methods, labels with spaces kept', () => {
  const m = parsePrometheus(EXPORTER + 'odd_series{x="a b"} 4\nno_value\n');
  assert.equal(m.get('jvm_memory_bytes_used{area="heap",}'), 1.2345e8);
  assert.equal(m.get('odd_series{x="a b"}'), 4);
  assert.equal(m.has('no_value'), false);
  assert.equal([...m.keys()].some((k) => k.startsWith('#')), false);
  const c = digdagCounts(EXPORTER);
  assert.deepEqual(c, { executorLoops: 7, enqueued: 0, acquireRounds: 120, busyWaits: 3, dbCalls: 42 });
  assert.deepEqual(digdagCounts(''), { executorLoops: 0, enqueued: 0, acquireRounds: 0, busyWaits: 0, dbCalls: 0 });
  const later = digdagCounts(EXPORTER.replace('rounds_total 120.0', 'rounds_total 150.0').replace('"ssm_getTaskById",} 2.0', '"ssm_getTaskById",} 12.0'));
  assert.deepEqual(countsDelta(c, later), { executorLoops: 0, enqueued: 0, acquireRounds: 30, busyWaits: 0, dbCalls: 10 });
});

const st = (id: string, calls: number, ms: number, query = `select ${id}`) => ({ id, query, calls, ms, rows: calls });
const counts = (acquireRounds: number, executorLoops = 1): DigdagCounts => ({ executorLoops, enqueued: 1, acquireRounds, busyWaits: 0, dbCalls: 10 });

test('statements: a reading parsed (bad ones refused), windows summed by queryid, top by calls and by time', () => {
  const r = parseStatementsReading('{"tx": 1200, "statements": [{"id": "-42", "query": "select 1", "calls": 3, "ms": 0.5, "rows": 3}]}');
  assert.deepEqual(r, { tx: 1200, statements: [st('-42', 3, 0.5, 'select 1')] });
  assert.deepEqual(parseStatementsReading('{"tx": 5, "statements": []}').statements, []);
  assert.throws(() => parseStatementsReading('{"tx": null, "statements": []}'), /not a statements reading/);
  const sum = sumStatements([[st('a', 2, 1), st('b', 1, 9)], [st('a', 3, 1.5)]]);
  assert.deepEqual(sum.find((s) => s.id === 'a'), st('a', 5, 2.5));
  assert.deepEqual(topStatements([st('a', 5, 1), st('b', 1, 9), st('c', 5, 2)], 'calls', 2).map((s) => s.id), ['c', 'a'], 'ties by time');
  assert.deepEqual(topStatements([st('a', 5, 1), st('b', 1, 9), st('c', 5, 2)], 'ms', 1).map((s) => s.id), ['b']);
  // The bench's own readings (pg_stat_*) are left out by the query itself, for Digdag's role only.
  assert.match(READ_STATEMENTS_SQL, /NOT LIKE '%pg\\_stat\\_%'/);
  assert.match(READ_STATEMENTS_SQL, /rolname = current_user/);
});

test('a workload\'s cost: transactions less the bench\'s own, statements and counters over its windows, per task', () => {
  const setup = { layout: 'worker' as const, processes: 2, threadsPerProcess: 4, workload: 'fan-out' as const, tasks: 48 };
  const c = workloadCost(setup, [
    { seconds: 2, txBefore: 100, after: { tx: 302, statements: [st('a', 40, 4), st('b', 10, 20)] }, digdag: { 'worker-1': counts(10), 'worker-2': counts(6), 'ui-1': counts(0, 2) }, cpuTicks: { 'worker-1': 100, 'worker-2': 20, postgres: 12 } },
    { seconds: 1, txBefore: 500, after: { tx: 602, statements: [st('a', 8, 1)] }, digdag: { 'worker-1': counts(2) }, cpuTicks: { 'worker-1': 24, postgres: 12 } },
  ], 1);
  assert.equal(c.transactions, 300, '200 + 100: each window less its reading before and the reset');
  assert.equal(c.calls, 58);
  assert.equal(c.execMs, 25);
  assert.equal(c.seconds, 3);
  assert.deepEqual(c.topByCalls.map((s) => s.id), ['a']);
  assert.deepEqual(c.topByTime.map((s) => s.id), ['b']);
  assert.equal(countsOfKind(c, 'worker')?.acquireRounds, 18);
  assert.equal(countsOfKind(c, 'ui')?.executorLoops, 2);
  assert.equal(countsOfKind(c, 'scheduler'), undefined);
  assert.deepEqual(c.cpuMs, { 'worker-1': 1240, 'worker-2': 200, postgres: 240 }, 'clock ticks of 10 ms, summed over the windows');
  assert.equal(cpuOfKind(c, 'worker'), 1440);
  assert.equal(cpuOfKind(c, 'ui'), undefined);
  const table = costTable([c, workloadCost({ ...setup, workload: 'idle', tasks: 0 }, [{ seconds: 20, txBefore: 0, after: { tx: 1002, statements: [] }, digdag: {} }])]);
  assert.match(table, /^configuration +workload +tasks +per +PG tx +statements +PG exec ms/m);
  // 300 tx / 48 tasks, 58 / 48 statements, 25 / 48 ms; CPU 1440 / 48 ms (workers), 240 / 48 (PostgreSQL);
  // ui 2 loops / 48, workers 3 / 48; 18 rounds / 48
  assert.match(table, /^worker: 2 workers x 4 +fan-out +48 +task +6\.25 +1\.21 +0\.52 +30\.0 \/ - \/ - \/ 5\.0 +0\.04 \/ 0\.06 +0\.02 \/ 0\.06 +0\.38 +0\.00 +0\.83$/m);
  assert.match(table, /^worker: 2 workers x 4 +idle +0 +second +50\.00 +0\.00 +0\.00 +- \/ - \/ - \/ - +- \/ - +- \/ - +- +- +-$/m, 'idle: per second; no counters read: dashes');
  const top = topStatementsTable([c], 5, 12);
  assert.match(top, /^worker: 2 workers x 4 fan-out +calls +48 +1\.00 +5\.0 +select a$/m);
  assert.match(top, /^worker: 2 workers x 4 fan-out +time +10 +0\.21 +20\.0 +select b$/m);
  assert.match(topStatementsTable([{ ...c, topByCalls: [st('x', 1, 1, 'select * from a_very_long_table')], topByTime: [] }], 5, 12), /select \* fr…$/m, 'cut to 12 characters, the ellipsis included');
  assert.match(renderReport({ latency: [], bursts: [], idle: [], costs: [c] }), /Where the time goes[\s\S]*Top statements per workload/);
  assert.doesNotMatch(renderReport({ latency: [], bursts: [], idle: [] }), /Where the time goes/);
});

test('the server loads pg_stat_statements only when asked, and never trades durability', () => {
  const plain = serverOptions(5432, '/run/pg', 200).join(' ');
  const withStats = serverOptions(5432, '/run/pg', 200, true).join(' ');
  assert.doesNotMatch(plain, /shared_preload_libraries/);
  assert.match(withStats, /-c shared_preload_libraries=pg_stat_statements/);
  for (const o of [plain, withStats]) assert.doesNotMatch(o, /fsync|synchronous_commit|full_page_writes/);
});

interface Label { text: string; x1: number; x2: number; y1: number; y2: number }

/** The spec laid out by Vega as the SVG renderer would (no canvas: text widths are Vega's estimate,
 * 0.8 × font size per character, wider than DejaVu Sans draws them): every axis's labels. */
async function axes(spec: TopLevelSpec): Promise<{ labels: Label[] }[]> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  await view.runAsync();
  const out: { labels: Label[] }[] = [];
  const walk = (item: { marktype?: string; role?: string; items?: unknown[] }) => {
    if (item.marktype === 'text' && item.role === 'axis-label') {
      out.push({ labels: (item.items as { text: string | string[]; bounds: Label }[]).map((i) => ({ text: [i.text].flat().join(' '), x1: i.bounds.x1, x2: i.bounds.x2, y1: i.bounds.y1, y2: i.bounds.y2 })) });
    }
    for (const c of item.items ?? []) walk(c as typeof item);
  };
  walk((view.scenegraph() as unknown as { root: never }).root);
  view.finalize();
  return out;
}

/** Labels of one axis that touch their neighbour, horizontally or vertically. */
function overlapping(labels: readonly Label[]): string[] {
  const horizontal = new Set(labels.map((l) => l.y1)).size === 1;
  const [lo, hi] = horizontal ? (['x1', 'x2'] as const) : (['y1', 'y2'] as const);
  const sorted = [...labels].sort((a, b) => a[lo] - b[lo]);
  return sorted.slice(1).flatMap((l, i) => (sorted[i]![hi] > l[lo] ? [`${sorted[i]!.text} / ${l.text}`] : []));
}

/** Numeric ticks on a "nice" step: 1, 2 or 5 × 10^k, every tick a multiple of it. */
function niceTicks(labels: readonly Label[]): number[] | string {
  const v = labels.map((l) => Number(l.text.replace(/,/g, ''))).sort((a, b) => a - b);
  if (v.length < 3 || v.some((x) => !Number.isFinite(x))) return `not numeric ticks: ${labels.map((l) => l.text).join(', ')}`;
  const step = v[1]! - v[0]!;
  const mantissa = step / 10 ** Math.floor(Math.log10(step));
  if (![1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9)) return `step ${step} in ${v.join(', ')}`;
  if (v.some((x, i) => i > 0 && Math.abs(x - v[i - 1]! - step) > 1e-9 * step)) return `uneven ${v.join(', ')}`;
  if (v.some((x) => Math.abs(x / step - Math.round(x / step)) > 1e-9)) return `off the step: ${v.join(', ')}`;
  return v;
}

const ioBars = () => throughputBars([burst(w(4), 3.92), burst(w(2), 2.24), burst(w(1), 1.12), burst(split4, 2.51), burst(seed, 4.4)], 'io');

test('the bar chart: one bar and one legend entry per configuration, labels apart, round ticks (not 5.7, 11, 17, 23)', async () => {
  const bars = ioBars();
  assert.deepEqual(bars.map((b) => b.label), ['worker: 4 workers x 4', 'worker: 2 workers x 4', 'worker: 1 worker x 4', 'split: 4 agents x 4', 'server -m, 16 threads']);
  const groups = [{ name: 'I/O-bound: 8x8 x sleep 3s', bars }, { name: 'tiny: 8x8 x true', bars: bars.map((b) => ({ ...b, value: b.value * 4.4 })) }];
  const svg = await barChartSvg('t', 'tasks / second', groups);
  assert.equal((svg.match(/aria-roledescription="bar"/g) ?? []).length, 10);
  // The configurations are named once each, in the legend; under the bars only the two groups.
  for (const b of bars) assert.equal(svg.split(`>${b.label}</text>`).length - 1, 1, b.label);
  const [x, y] = await axes(barChartSpec('t', 'tasks / second', groups));
  assert.deepEqual(x!.labels.map((l) => l.text), groups.map((g) => g.name));
  assert.deepEqual(overlapping(x!.labels), []);
  assert.deepEqual(niceTicks(y!.labels), [0, 5, 10, 15, 20]);
  // The values the hand-drawn chart put its ticks on.
  const odd = await axes(barChartSpec('t', 'u', [{ name: 'g', bars: [5.7, 11, 17, 23].map((value, i) => ({ label: `c${i}`, value })) }]));
  assert.deepEqual(niceTicks(odd[1]!.labels), [0, 5, 10, 15, 20]);
});

test('the checks can fail: labels on one line at a narrow step overlap; 5.7-wide steps are not nice', async () => {
  const narrow = clusterChartSpec('t', ['fixed: 4 workers', 'KEDA: 1→4 workers'].map((c) => ({ configuration: c, tasksPerSecond: 1, drainSeconds: 1, idealSeconds: 1 }))) as unknown as { hconcat: { width: { step: number }; encoding: { x: { axis: Record<string, unknown> } } }[] };
  for (const p of narrow.hconcat) {
    p.width.step = 60;
    delete p.encoding.x.axis.labelExpr;
  }
  assert.notDeepEqual(overlapping((await axes(narrow as unknown as TopLevelSpec))[0]!.labels), []);
  assert.match(String(niceTicks([5.7, 11.4, 17.1].map((v) => ({ text: String(v), x1: 0, x2: 0, y1: v, y2: v })))), /step 5\.7/);
});

/** PNG: the signature, and the IHDR's width and height. */
function pngSize(png: Buffer): { width: number; height: number } {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(png.subarray(12, 16).toString('ascii'), 'IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

test('PNG by resvg: a PNG of the SVG\'s own size, with drawn pixels', async () => {
  const svg = await barChartSvg('t', 'tasks / second', [{ name: 'io', bars: ioBars() }]);
  const [, w0, h0] = /<svg[^>]* width="(\d+)" height="(\d+)"/.exec(svg)!.map(Number);
  const png = svgToPng(svg);
  assert.deepEqual(pngSize(png), { width: w0, height: h0 });
  assert.ok(w0! > 300 && w0! < 3000 && h0! > 200 && h0! < 3000, `${w0}×${h0}`);
  assert.ok(png.length > 5000, `a chart, not an empty canvas: ${png.length} bytes`);
});

const sampleAt = (burstAt: number, sec: number, workers: number, ready: number, queue: number): QueueSample => ({
  at: burstAt + sec * 1000,
  workers: Array.from({ length: workers }, (_, i) => ({ name: `w${i}`, ready: i < ready, terminating: false })),
  replicas: workers,
  ready,
  terminating: 0,
  waiting: Math.max(0, queue - workers * 4),
  running: Math.min(queue, workers * 4),
  locks: [],
});

/** A run made from samples the way the cluster mode makes it. */
function run(setup: Parameters<typeof clusterRun>[1], drain: number, series: [number, number, number, number][]): ClusterRun {
  const o = clusterBenchOptions({});
  const at = 1_700_000_000_000;
  const samples = series.map(([t, wk, rd, q]) => sampleAt(at, t, wk, rd, q));
  return clusterRun(o, setup, at, at + drain * 1000, samples, burstFigures(samples, at, 4), setup.mode === 'keda' ? at + (drain + 70) * 1000 : undefined);
}

const fixed = (n: number, drain: number) => run({ mode: 'fixed', workers: n }, drain, [[-1, n, n, 0], [0.5, n, n, 200], [drain / 2, n, n, 100], [drain, n, n, 0]]);
const keda = () => run({ mode: 'keda', min: 1, max: 4 }, 110, [[-1, 1, 1, 0], [0.5, 1, 1, 200], [8, 4, 1, 190], [40, 4, 4, 150], [110, 4, 4, 0], [150, 3, 3, 0], [180, 1, 1, 0]]);

test('cluster mode options: the issue\'s burst by default, --quick shorter, KEDA always last, bad flags refused', () => {
  const d = clusterBenchOptions({});
  assert.deepEqual([d.attempts, d.tasksPerAttempt, d.sleepSeconds, d.threads, d.fixed, d.keda], [50, 4, 5, 4, [1, 2, 4], { min: 1, max: 4 }]);
  assert.equal(clusterBenchOptions({ quick: true }).attempts, 12);
  assert.deepEqual(clusterSetups(clusterBenchOptions({ fixed: '4,1', keda: '2-3' })), [{ mode: 'fixed', workers: 4 }, { mode: 'fixed', workers: 1 }, { mode: 'keda', min: 2, max: 3 }]);
  assert.deepEqual(clusterSetups(clusterBenchOptions({ fixed: 'none' })), [{ mode: 'keda', min: 1, max: 4 }]);
  assert.throws(() => clusterBenchOptions({ keda: '4-1' }), /MIN ≤ MAX/);
  assert.throws(() => clusterBenchOptions({ fixed: '1,0' }), /--fixed=0: expected a whole number ≥ 1/);
  assert.throws(() => clusterBenchOptions({ fixed: 'none', keda: 'none' }), /nothing to run/);
});

test('cluster mode --layout split: the counts are agents, --executors workflow processes; labels say so; refused flags', () => {
  const o = clusterBenchOptions({ fixed: '4,1', keda: '1-3', layout: 'split', executors: '2' });
  assert.deepEqual([o.layout, o.executors], ['split', 2]);
  assert.deepEqual(clusterSetups(o), [
    { mode: 'fixed', workers: 4, layout: 'split', executors: 2 },
    { mode: 'fixed', workers: 1, layout: 'split', executors: 2 },
    { mode: 'keda', min: 1, max: 3, layout: 'split', executors: 2 },
  ]);
  assert.deepEqual(clusterSetups(o).map(clusterLabel), ['fixed: 4 agents, 2 executors (split)', 'fixed: 1 agent, 2 executors (split)', 'KEDA: 1→3 agents, 2 executors (split)']);
  const one = clusterBenchOptions({ fixed: '4', keda: 'none', layout: 'split' });
  assert.deepEqual(clusterSetups(one).map(clusterLabel), ['fixed: 4 agents, 1 executor (split)'], '--executors defaults to 1');
  // The worker layout stays as it was (and as runs recorded before the option read).
  assert.equal(clusterBenchOptions({}).layout, 'worker');
  assert.deepEqual(clusterSetups(clusterBenchOptions({ fixed: '4', keda: 'none', layout: 'worker' })), [{ mode: 'fixed', workers: 4 }]);
  assert.throws(() => clusterBenchOptions({ layout: 'server-m' }), (e: Error) => e instanceof UserError && /--layout=server-m: expected worker or split/.test(e.message));
  assert.throws(() => clusterBenchOptions({ executors: '2' }), (e: Error) => e instanceof UserError && /--executors=2: only the split layout/.test(e.message) && /--layout split/.test(e.fix ?? ''));
  assert.throws(() => clusterBenchOptions({ layout: 'split', executors: '0' }), /--executors=0: expected a whole number ≥ 1/);
  // What each configuration deploys: the task role's replicas (lib/config/roles.ts), the executor processes in split.
  const base = { DIGDAG_HA_TARGET: 'cluster' };
  const [fixedSplit, , kedaSplit] = clusterSetups(o).map((st) => configOverrides(o, st, base));
  assert.deepEqual([fixedSplit!.DIGDAG_HA_LAYOUT, fixedSplit!.AGENT_REPLICAS, fixedSplit!.WORKFLOW_REPLICAS, fixedSplit!.AGENT_AUTOSCALING, fixedSplit!.WORKER_REPLICAS], ['split', '4', '2', 'none', undefined]);
  assert.deepEqual([kedaSplit!.AGENT_REPLICAS, kedaSplit!.AGENT_MAX_REPLICAS, kedaSplit!.AGENT_AUTOSCALING], ['1', '3', 'keda']);
  const w = clusterBenchOptions({ fixed: '4', keda: 'none' });
  const worker = configOverrides(w, clusterSetups(w)[0]!, base);
  assert.deepEqual([worker.DIGDAG_HA_LAYOUT, worker.WORKER_REPLICAS, worker.AGENT_REPLICAS, worker.WORKFLOW_REPLICAS], ['worker', '4', undefined, undefined]);
});

test('split runs: speed-up and the tiny tasks\' ideal against 1 agent of the same layout, never against a worker run', () => {
  const o = clusterBenchOptions({ attempts: '1', tasks: '1000', sleep: '0', fixed: '1,4', keda: 'none', layout: 'split' });
  const at = 1_700_000_000_000;
  const tiny = (setup: Parameters<typeof clusterRun>[1], drain: number) => clusterRun(o, setup, at, at + drain * 1000, [sampleAt(at, 0, 1, 1, 0)], burstFigures([sampleAt(at, 0, 1, 1, 0)], at, 4));
  const [one, four] = clusterSetups(o).map((st, i) => tiny(st, i ? 20 : 40));
  const workerOne = tiny({ mode: 'fixed', workers: 1 }, 30);
  assert.equal(idealOf(four!, [workerOne, one!, four!]), 10, '40 s on 1 agent ÷ 4');
  assert.equal(idealOf(four!, [workerOne, four!]), undefined, 'a worker run is no reference for split');
  assert.equal(idealOf(workerOne, [workerOne, one!, four!]), 30);
  assert.match(clusterTable([one!, four!]), /^fixed: 4 agents, 1 executor \(split\) +1 +1000 × 0s +20\.0 +10\.0 +2\.00x +50\.00 +2\.00x/m);
});

test('cluster mode --keda-bursts: KEDA\'s burst repeated, each its own labelled run, the median reaction and drain over them', () => {
  const setups = clusterSetups(clusterBenchOptions({ fixed: '4', 'keda-bursts': '3' }));
  assert.deepEqual(setups, [{ mode: 'fixed', workers: 4 }, ...[1, 2, 3].map((burst) => ({ mode: 'keda', min: 1, max: 4, burst }))]);
  assert.deepEqual(setups.map(clusterLabel), ['fixed: 4 workers', 'KEDA: 1→4 workers (burst 1)', 'KEDA: 1→4 workers (burst 2)', 'KEDA: 1→4 workers (burst 3)']);
  assert.throws(() => clusterBenchOptions({ 'keda-bursts': '0' }), /--keda-bursts=0: expected a whole number ≥ 1/);
  const runs = [fixed(4, 80), { ...keda(), reactionS: 31 }, { ...keda(), reactionS: 19, drainSeconds: 100 }, { ...keda(), reactionS: 22.5, drainSeconds: 90 }];
  assert.deepEqual(kedaSummary(runs), ['KEDA over 3 bursts: reaction p50 22.5 s (31.0, 19.0, 22.5; 0 without a new worker), drain p50 1.60× the ideal (1.76, 1.60, 1.44)']);
  assert.deepEqual(kedaSummary([fixed(4, 80), { ...keda(), reactionS: 31 }]), [], 'one burst: no median');
});

test('cluster mode table: drain against the ideal at the most workers, speed-up, the scale-out\'s steps, scale-in, re-runs', () => {
  const runs = [fixed(1, 270), fixed(4, 80), keda()];
  const table = clusterTable(runs);
  assert.match(table, /^fixed: 1 worker +1 +200 × 5s +270\.0 +250\.0 +1\.08x +0\.74 +1\.00x +0 \(0\)$/m);
  assert.match(table, /^fixed: 4 workers +4 +200 × 5s +80\.0 +62\.5 +1\.28x +2\.50 +3\.38x +0 \(0\)$/m);
  // Queue above 4 at 0.5 s, a new pod at 8 s, Ready at 40 s; no task seen on it (no locks sampled here).
  assert.match(table, /^KEDA: 1→4 workers +4 +200 × 5s +110\.0 +62\.5 +1\.76x +1\.82 +2\.45x +0\.5 → 8\.0 → 40\.0 → - +- +70\.0 +0 \(0\)$/m);
});

test('tiny tasks (sleep 0): the ideal is linear scaling of the 1-worker drain; none without a 1-worker run; sleeping tasks keep task-seconds', () => {
  const o = clusterBenchOptions({ attempts: '1', tasks: '1000', sleep: '0', fixed: '1,4', keda: 'none' });
  const at = 1_700_000_000_000;
  const tiny = (n: number, drain: number) => clusterRun(o, { mode: 'fixed', workers: n }, at, at + drain * 1000, [sampleAt(at, 0, n, n, 0)], burstFigures([sampleAt(at, 0, n, n, 0)], at, 4));
  const [one, four] = [tiny(1, 120), tiny(4, 60)];
  assert.equal(four.idealSeconds, 0, 'no task-seconds');
  assert.equal(idealOf(one, [one, four]), 120, 'the 1-worker run is its own ideal');
  assert.equal(idealOf(four, [one, four]), 30, '120 s ÷ 4 workers');
  assert.equal(idealOf(four, [four]), undefined);
  const table = clusterTable([one, four]);
  assert.match(table, /^fixed: 4 workers +4 +1000 × 0s +60\.0 +30\.0 +2\.00x +16\.67 +2\.00x/m);
  assert.match(clusterTable([four]), /^fixed: 4 workers +4 +1000 × 0s +60\.0 +- +- /m);
  assert.deepEqual(clusterBarRows([four]).map((r) => r.idealSeconds), [null], 'no tick without an ideal');
  assert.match(renderClusterReport(o, [one, four]), /for sleep 0 the 1-worker drain ÷ max workers/);
  assert.equal(idealOf(fixed(4, 80), [fixed(4, 80)]), 62.5, 'sleep 5: 200 × 5 s ÷ 16 threads');
});

test('Digdag\'s task records: the fan-out\'s starts and successes; threads busy from the sampled locks; the task limit a burst needs; CPU shares', () => {
  const at = Date.parse('2026-12-03T00:00:00Z');
  const iso = (s: number) => new Date(at + s * 1000).toISOString();
  const task = (id: string, name: string, parentId: string | null, start: number | null, end: number): Task => ({ id, fullName: name, state: 'success', parentId, startedAt: start === null ? null : iso(start), updatedAt: iso(end), upstreams: [] });
  const tasks = [
    task('1', '+parallel', null, 0, 9), task('2', '+parallel+fanout', '1', 1, 8), task('3', '+parallel+fanout^sub', '2', 1, 8),
    task('4', '+parallel+fanout^sub+loop-0', '3', 2, 3), task('5', '+parallel+fanout^sub+loop-1', '3', 3, 4), task('6', '+parallel+fanout^sub+loop-2', '3', 4, 7),
    task('7', '+parallel+done', '1', 8, 9),
  ];
  // The fan-out's leaves 4, 5, 6; +done is a leaf outside it.
  assert.deepEqual(taskTimes(tasks, at), { tasks: 7, leaves: 3, firstStartS: 2, lastStartS: 4, lastDoneS: 7, medianToDoneS: 1 });
  assert.deepEqual(taskTimes([task('1', '+a', null, 0, 2), task('2', '+a+b', '1', 1, 2)], at), { tasks: 2, leaves: 1, firstStartS: 1, lastStartS: 1, lastDoneS: 2, medianToDoneS: 1 }, 'no loop: every leaf');
  assert.equal(taskTimes([task('1', '+a', null, null, 1)], at), undefined);
  const o = clusterBenchOptions({ tasks: '16', sleep: '0', fixed: '1', keda: 'none' });
  const samples = [[-1, 0], [0.5, 4], [1.5, 2], [2.5, 0]].map(([t, running]) => ({ ...sampleAt(at, t!, 1, 1, 0), running: running! }));
  assert.equal(threadsBusy(clusterRun(o, { mode: 'fixed', workers: 1 }, at, at + 2000, samples, burstFigures(samples, at, 4))), (4 + 2) / 2 / 4, 'the samples within the drain');
  assert.equal(taskLimitFor(4), undefined, 'Digdag\'s default');
  assert.equal(taskLimitFor(996), undefined, '996 + 4 = 1000 fits');
  assert.equal(taskLimitFor(997), '2000');
  assert.equal(taskLimitFor(1000), '2000');
  assert.equal(commOf('123 (java) S 1 123'), 'java');
  assert.equal(commOf('9 (a (b) c) S 1'), 'a (b) c');
  const p = (entries: [number, string, number][]) => new Map(entries.map(([pid, comm, ticks]) => [pid, { comm, ticks }]));
  // 200 ticks of all cores' time, 150 busy: java 60 + 40 (a JVM started in between), postgres 30; pid 3 changed command (reused): whole.
  assert.deepEqual(cpuShares({ busy: 0, total: 0 }, { busy: 150, total: 200 }, p([[1, 'java', 100], [2, 'postgres', 10], [3, 'java', 5]]), p([[1, 'java', 160], [2, 'postgres', 40], [4, 'java', 40], [3, 'postgres', 0]])), { busy: 0.75, java: 0.5, postgres: 0.15 });
});

test('the cluster chart: a bar per configuration in each panel, labels on two lines apart, round ticks; PNG', async () => {
  const runs = [fixed(1, 270), fixed(2, 140), fixed(4, 80), keda()];
  const spec = clusterChartSpec('t', clusterBarRows(runs));
  const svg = await renderSvg(spec);
  assert.equal((svg.match(/aria-roledescription="bar"/g) ?? []).length, 8);
  assert.equal((svg.match(/aria-roledescription="tick"/g) ?? []).length, 4, 'one ideal per configuration');
  const [x1, y1, x2, y2] = await axes(spec);
  for (const x of [x1!, x2!]) {
    assert.deepEqual(x.labels.map((l) => l.text), ['fixed 1 worker', 'fixed 2 workers', 'fixed 4 workers', 'KEDA 1→4 workers']);
    assert.deepEqual(overlapping(x.labels), []);
  }
  assert.deepEqual(niceTicks(y1!.labels), [0, 0.5, 1, 1.5, 2, 2.5]);
  assert.deepEqual(niceTicks(y2!.labels), [0, 50, 100, 150, 200, 250]);
  const { width, height } = pngSize(svgToPng(svg));
  assert.ok(width > 500 && height > 300, `${width}×${height}`);
});

test('the burst over time: a row per configuration on one time axis, the queue and whole workers (pods, Ready)', async () => {
  const runs = [fixed(1, 270), fixed(4, 80), keda()];
  const rows = timelineRows(runs);
  assert.equal(rows.length, 4 + 4 + 7);
  assert.deepEqual(rows.filter((r) => r.configuration === 'KEDA: 1→4 workers').map((r) => [r.workers, r.ready]), [[1, 1], [1, 1], [4, 1], [4, 4], [4, 4], [3, 3], [1, 1]]);
  const spec = timelineSpec('t', rows);
  const svg = await renderSvg(spec);
  for (const r of runs) assert.equal(svg.split(`>${r.label}</text>`).length - 1, 1, `${r.label} titles its row`);
  assert.equal((svg.match(/aria-roledescription="area mark"/g) ?? []).length, 3, 'the queue, one area per row');
  assert.equal((svg.match(/aria-roledescription="line mark"/g) ?? []).length, 6, 'pods and Ready per row');
  const found = await axes(spec);
  // Per row: time (x), queue (left), workers (right).
  assert.equal(found.length, 9);
  const times = found.filter((_, i) => i % 3 === 0);
  assert.ok(times.every((a) => JSON.stringify(a.labels.map((l) => l.text)) === JSON.stringify(times[0]!.labels.map((l) => l.text))), 'one time axis for all rows');
  assert.deepEqual(niceTicks(times[0]!.labels).toString(), Array.from({ length: 15 }, (_, i) => i * 20).toString());
  for (const a of found.filter((_, i) => i % 3 === 1)) assert.deepEqual(niceTicks(a.labels), [0, 50, 100, 150, 200]);
  for (const a of found.filter((_, i) => i % 3 === 2)) assert.deepEqual(a.labels.map((l) => l.text), ['0', '1', '2', '3', '4'], 'whole workers only');
  for (const a of found) assert.deepEqual(overlapping(a.labels), []);
  const { width, height } = pngSize(svgToPng(svg));
  assert.ok(width > 700 && height > 400, `${width}×${height}`);
});

test('CPU per pod role from the pod cgroups\' cpuacct.usage: a new pod whole, another namespace\'s as other pods; the table\'s column', () => {
  const uid = '0f3c2a1e-1b2c-4d5e-8f90-123456789abc';
  assert.equal(podUidOfCgroup(`pod${uid}`), uid);
  assert.equal(podUidOfCgroup('kubepods'), undefined);
  assert.equal(podUidOfCgroup(`pod${uid}x`), undefined);
  const before = new Map([['a1', 1e9], ['a2', 0], ['w', 5e9], ['gone', 1e9]]);
  const after = new Map([['a1', 3e9], ['a2', 1e9], ['w', 9e9], ['new', 2e9], ['keda', 1e9]]);
  const roles = new Map([['a1', 'agent'], ['a2', 'agent'], ['w', 'workflow'], ['new', 'agent'], ['gone', 'agent']]);
  // 20 core-seconds: agents 2 + 1 + 2 (new, whole) = 5 → 25%; workflow 4 → 20%; keda's pod 1 → 5%.
  assert.deepEqual(podCpuShares(before, after, roles, 20), { agent: 0.25, workflow: 0.2, 'other pods': 0.05 });
  assert.equal(rolesLine({ agent: 0.25, workflow: 0.2, 'other pods': 0.05 }), 'agent 25%, workflow 20%, other pods 5%');
  const o = clusterBenchOptions({ attempts: '1', tasks: '2', sleep: '0', fixed: '1', keda: 'none', layout: 'split' });
  const at = Date.parse('2026-12-03T00:00:00Z');
  const r = clusterRun(o, clusterSetups(o)[0]!, at, at + 4000, [sampleAt(at, 0, 1, 1, 0)], burstFigures([sampleAt(at, 0, 1, 1, 0)], at, 4), undefined, { tasks: 6, leaves: 2, firstStartS: 1, lastStartS: 2, lastDoneS: 3, medianToDoneS: 1 });
  assert.match(taskTimesTable([{ ...r, cpu: { busy: 0.9, java: 0.6, postgres: 0.1, roles: { workflow: 0.3, agent: 0.4 } } }]), /^fixed: 1 agent, 1 executor \(split\) .* 90% \(60% \/ 10%\) +agent 40%, workflow 30%$/m);
  assert.match(taskTimesTable([{ ...r, cpu: { busy: 0.9, java: 0.6, postgres: 0.1 } }]), /90% \(60% \/ 10%\) +-$/m, 'a run recorded before the roles');
});
