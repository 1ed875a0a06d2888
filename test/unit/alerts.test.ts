// Alert rules and the dashboard: promtool checks the rules and runs monitoring/alerts.test.yaml
// (every alert firing and not firing on recorded series); every metric an alert or a dashboard
// panel reads is one the exporter configs can produce.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { ALERTS_FILE, findPromtool, loadRuleGroups, metricNamesIn, MONITORING_DIR, producibleMetricNames } from '../../lib/metrics.ts';

const promtool = findPromtool();
const skip = promtool.bin ? false : promtool.reason;

test('promtool check rules: monitoring/alerts.yaml is valid', { skip }, () => {
  const r = spawnSync(promtool.bin!, ['check', 'rules', ALERTS_FILE], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS: \d+ rules found/);
});

test('promtool test rules: each alert fires on its recorded series and stays quiet otherwise', { skip }, () => {
  const r = spawnSync(promtool.bin!, ['test', 'rules', 'alerts.test.yaml'], { encoding: 'utf8', cwd: MONITORING_DIR });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /SUCCESS/);
});

test('every alert has a test that fires it and one where it stays quiet', () => {
  const spec = YAML.parse(fs.readFileSync(path.join(MONITORING_DIR, 'alerts.test.yaml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
  const fired = new Set<string>();
  const quiet = new Set<string>();
  for (const t of spec.tests) for (const a of t.alert_rule_test) (a.exp_alerts.length ? fired : quiet).add(a.alertname);
  for (const g of loadRuleGroups()) {
    for (const r of g.rules) {
      if (!r.alert) continue;
      assert.ok(fired.has(r.alert), `${r.alert}: no test where it fires`);
      assert.ok(quiet.has(r.alert), `${r.alert}: no test where it stays quiet`);
    }
  }
});

test('metricNamesIn reads metric names, not functions, keywords, labels or durations', () => {
  assert.deepEqual(
    metricNamesIn('sum by (role) (rate(digdag_timer_calls_total{category="api", method=~"get.*"}[5m])) / on(role) group_left(instance) up or on() vector(0) > bool 1e3'),
    ['digdag_timer_calls_total', 'up'],
  );
  assert.deepEqual(metricNamesIn('hikaricp_connections_pending > 0 or hikaricp_connections_active >= hikaricp_connections_max'), ['hikaricp_connections_active', 'hikaricp_connections_max', 'hikaricp_connections_pending']);
});

test('every metric an alert reads is produced by the JMX exporter config or the queue queries', () => {
  const known = producibleMetricNames();
  for (const g of loadRuleGroups()) {
    for (const r of g.rules) {
      for (const m of metricNamesIn(r.expr)) assert.ok(known.has(m), `${r.alert ?? r.record}: ${m} is produced by no exporter config`);
    }
  }
});

test('every metric a dashboard panel reads is produced by the exporter configs', () => {
  const known = producibleMetricNames();
  const dash = JSON.parse(fs.readFileSync(path.join(MONITORING_DIR, 'grafana-dashboard.json'), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[]; templating?: { list: { query?: unknown }[] } };
  let exprs = 0;
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) {
      exprs++;
      for (const m of metricNamesIn(t.expr)) assert.ok(known.has(m), `panel "${p.title}": ${m} is produced by no exporter config`);
    }
  }
  assert.ok(exprs >= 10, `only ${exprs} queries in the dashboard`);
});

test('the producible names are the real ones: a typo in a name is caught', () => {
  const known = producibleMetricNames();
  for (const m of ['digdag_queue_waiting', 'digdag_queue_running', 'digdag_executor_loops_total', 'digdag_agent_acquire_rounds_total', 'hikaricp_connections_pending', 'jvm_memory_used_bytes', 'digdag_queue_agent_tasks']) {
    assert.ok(known.has(m), m);
  }
  assert.ok(!known.has('digdag_queue_agent'), 'a query name alone is not a metric');
  assert.ok(!known.has('digdag_queue_agent_agent'), 'label columns are not metrics');
  assert.ok(!known.has('digdag_executor_loop_count'));
});

