// Benchmark arithmetic: percentiles, the tasks' own start/end records, and the speed-up column.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseEvents, percentile, renderTable, type Result } from '../../bench/run.ts';
import { barChartSvg } from '../../bench/svg-chart.ts';

test('percentile is nearest-rank', () => {
  assert.equal(percentile([5, 1, 3, 2, 4], 50), 3);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('task records are parsed; partial or foreign lines are ignored', () => {
  const ev = parseEvents('1700000000123456789 42 +bench+burst^sub+loop-0 start\ngarbage\n1700000001123456789 42 +bench+burst^sub+loop-0 end\n17 x\n');
  assert.equal(ev.length, 2);
  assert.equal(ev[0]!.attempt, '42');
  assert.equal(ev[1]!.kind, 'end');
  assert.equal(ev[1]!.ns - ev[0]!.ns, 1_000_000_000n);
});

test('the table shows speed-up against one agent for the same burst', () => {
  const r = (agents: number | null, tps: number, burst: 'io' | 'tiny' = 'io'): Result => ({
    config: agents ? `HA, ${agents}` : 'seed', agents, threadsPerAgent: 4, burst, tasks: 64, seconds: 64 / tps, tasksPerSecond: tps,
    startupSeconds: 5, activeTasksPerSecond: tps * 2, makespanP50: 1, makespanMax: 2, delayP50: 0.1, delayP95: 0.2,
  });
  const table = renderTable([r(1, 1.25), r(2, 2.5), r(4, 4.0), r(null, 3)]);
  assert.match(table, /HA, 2 .*2\.00x/);
  assert.match(table, /HA, 4 .*3\.20x/);
  assert.match(table, /seed .*2\.40x/);
});

test('the chart is an SVG with one bar per configuration', () => {
  const svg = barChartSvg('t', 'tasks / second', [{ name: 'io', bars: [{ label: '1 agent', value: 1 }, { label: '2 agents', value: 2 }] }]);
  assert.equal((svg.match(/<rect x=/g) ?? []).length, 2);
  assert.match(svg, /2 agents/);
});
