// Benchmark arithmetic and presentation: percentiles, the tasks' own records, CPU and counter
// rates, the generated workflows, options, and the three tables. No timing is asserted here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { busyFraction, median, parseCpuStat, parseEvents, parseProcStat, percentile, ratePerSecond, spanOf } from '../../bench/measure.ts';
import { latencyTable, postgresTable, renderReport, setupLabel, throughputBars, throughputTable, type BurstResult, type LatencyResult, type Setup } from '../../bench/report.ts';
import { barChartSvg } from '../../bench/charts.ts';
import { benchOptions, fanoutDig, sequentialDig } from '../../bench/workloads.ts';

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
  assert.deepEqual(parseProcStat('4242 (sh (x) y) S 1 4200 4200 0 -1 4194560 100 0 0 0 50 25 3 2 20 0 1 0 99 1000 10'), { pid: 4242, pgid: 4200, ticks: 80 });
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

test('the chart (Vega-Lite) has one bar per configuration, each named once in the legend, on round axis ticks', async () => {
  const bars = throughputBars([burst(w(1), 1), burst(w(2), 2), burst(seed, 3, 'tiny')], 'io');
  assert.deepEqual(bars.map((b) => b.label), ['worker 1x4', 'worker 2x4']);
  const svg = await barChartSvg('t', 'tasks / second', [{ name: 'io', bars }]);
  assert.equal((svg.match(/aria-roledescription="bar"/g) ?? []).length, 2);
  // Labels live in the legend (not under each bar, where long ones ran into each other).
  for (const label of ['worker 1x4', 'worker 2x4']) assert.equal((svg.match(new RegExp(`>${label}</text>`, 'g')) ?? []).length, 1, label);
  // The values the old chart put on odd ticks (5.7, 11, 17, 23): Vega picks round ones.
  const odd = await barChartSvg('t', 'u', [{ name: 'g', bars: [5.7, 11, 17, 23].map((value, i) => ({ label: `c${i}`, value })) }]);
  const ticks = [...odd.matchAll(/text-anchor="end" transform="translate\(-7,[\d.]+\)"[^>]*>([\d.]+)<\/text>/g)].map((m) => Number(m[1]));
  assert.ok(ticks.length >= 4, odd);
  assert.ok(ticks.every((t) => Number.isInteger(t / 5)), `ticks ${ticks.join(', ')}`);
});
