// The chaos soak's pieces that do not need a deployment: its flags and refusals (what the target
// can kill), the seeded kill order, and the figures it reports (longest stall, percentiles).
// The soak against real Digdag on the own cluster is in test/integration/kube-e2e.test.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { UserError } from '../../lib/errors.ts';
import { ROOT } from '../../lib/paths.ts';
import { checkSoak, longestGap, percentile, seeded, soakSummary, type SoakReport } from '../../lib/soak.ts';
import { kubeTarget } from '../../tasks/steps.ts';
import { soakFlags } from '../../tasks/soak.ts';
import { testConfig } from '../helpers/fixtures.ts';

test('soak flags: defaults are the acceptance run (30 min, a kill every 2 min); bad values refused naming the fix', () => {
  const d = soakFlags(['--target', 'cluster']);
  assert.equal(d.options.durationMs, 30 * 60_000);
  assert.equal(d.options.killEveryMs, 120_000);
  assert.equal(d.options.kills, undefined, 'kinds are chosen from what the target has');
  assert.deepEqual(d.rest, ['--target', 'cluster'], 'the common flags are left for parseFlags');
  const s = soakFlags(['--minutes=3', '--kill-every', '60', '--kill', 'db-postgres,db-pod', '--order', 'cycle', '--seed', '7', '--report', '/tmp/r.json']);
  assert.equal(s.options.durationMs, 180_000);
  assert.equal(s.options.killEveryMs, 60_000);
  assert.deepEqual(s.options.kills, ['db-postgres', 'db-pod']);
  assert.equal(s.options.order, 'cycle');
  assert.equal(s.options.seed, 7);
  assert.equal(s.report, '/tmp/r.json');
  assert.throws(() => soakFlags(['--kill', 'db,worker']), (e: unknown) => e instanceof UserError && /unknown db, worker/.test(e.message) && /digdag, db-postgres, db-pod/.test(e.fix ?? ""));
  assert.throws(() => soakFlags(['--minutes', 'ten']), (e: unknown) => e instanceof UserError && /--minutes ten/.test(e.message));
  assert.throws(() => soakFlags(['--order', 'sorted']), UserError);
});

test('soak refusals: database kills need the replicated in-cluster database; kills need time to recover', () => {
  const db = kubeTarget.haDatabase?.(testConfig({ DIGDAG_HA_TARGET: 'cluster' }));
  assert.ok(db, 'the own cluster\'s default database (3 Patroni members) can lose its leader');
  const opts = { durationMs: 60_000, killEveryMs: 30_000, submitEveryMs: 3000 };
  checkSoak(kubeTarget, db, { ...opts, kills: ['digdag', 'db-postgres', 'db-pod'] });
  assert.equal(kubeTarget.haDatabase?.(testConfig({ DIGDAG_HA_TARGET: 'cluster', POSTGRES_MEMBERS: '1' })), undefined, 'one member: not HA');
  assert.throws(() => checkSoak(kubeTarget, undefined, { ...opts, kills: ['db-pod'] }), (e: unknown) => e instanceof UserError && /no replicated in-cluster database/.test(e.message) && /POSTGRES_MEMBERS=3/.test(e.fix ?? ""));
  const external = testConfig({ DIGDAG_HA_TARGET: 'cluster', DATABASE_URL: 'postgresql://digdag@db.example:5432/digdag' });
  assert.equal(kubeTarget.haDatabase?.(external), undefined, 'an external database is not ours to kill');
  assert.throws(() => checkSoak({ ...kubeTarget, kind: 'local' }, undefined, { ...opts, kills: ['db-postgres'] }), (e: unknown) => e instanceof UserError && /one PostgreSQL/.test(e.message) && /--kill digdag/.test(e.fix ?? ""));
  assert.throws(() => checkSoak(kubeTarget, db, { ...opts, killEveryMs: 5000, kills: ['digdag'] }), (e: unknown) => e instanceof UserError && /needs time to recover/.test(e.message));
  assert.throws(() => checkSoak(kubeTarget, db, { ...opts, kills: [] }), (e: unknown) => e instanceof UserError && /nothing to kill/.test(e.message));
  checkSoak(kubeTarget, undefined, { ...opts, killEveryMs: 0, kills: [] });
});

test('the kill order repeats from its seed and differs between seeds', () => {
  const draw = (seed: number) => { const r = seeded(seed); return Array.from({ length: 20 }, () => Math.floor(r() * 3)); };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
  const counts = [0, 0, 0];
  const r = seeded(1);
  for (let i = 0; i < 3000; i++) counts[Math.floor(r() * 3)]!++;
  for (const c of counts) assert.ok(c > 900 && c < 1100, `roughly uniform: ${counts}`);
});

test('the longest stall counts the start and the end of the run; percentiles are nearest-rank', () => {
  assert.equal(longestGap([], 0, 10), 10, 'nothing accepted: the whole run is a stall');
  assert.equal(longestGap([1, 2, 9], 0, 10), 7);
  assert.equal(longestGap([5, 1], 0, 6), 4, 'order does not matter');
  assert.equal(longestGap([1, 2], 0, 10), 8, 'a stall up to the end counts');
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([3, 1, 2, 4], 50), 2);
  assert.equal(percentile([3, 1, 2, 4], 95), 4);
  assert.equal(percentile([3, 1, 2, 4], 100), 4);
});

test('the summary says NOT OK and lists each failure when an attempt failed', () => {
  const r: SoakReport = {
    target: 'kube', startedAt: '2026-12-02T00:00:00.000Z', durationS: 60, killEveryS: 30, submitEveryS: 3, seed: 1,
    submitted: 20, succeeded: 19, failed: 1, lost: 0, unfinished: 0, refused: 2, retries: 5, longestStallS: 4.2,
    attemptSeconds: { p50: 6, p95: 9, max: 12 },
    kills: [{ n: 1, atS: 30, kind: 'db-postgres', victim: 'digdag-postgres-0', recoveredS: 15.1, newLeader: 'digdag-postgres-1', firstWriteS: 3.2, attemptMedianAfterS: 8 }],
    failures: ['42: +mixed+flaky error'], ok: false,
  };
  const text = soakSummary(r).join('\n');
  assert.match(text, /20 submitted, 19 succeeded, 1 failed, 0 lost/);
  assert.match(text, /kill 1 at 30 s: db-postgres digdag-postgres-0: whole again 15.1 s, first write 3.2 s, leader digdag-postgres-1/);
  assert.match(text, /failed: 42: \+mixed\+flaky error/);
  assert.match(text, /soak: NOT OK/);
});

test('tasks/soak.ts refuses a bad flag with exit 2 and the usage, before touching a deployment', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tasks', 'soak.ts'), '--kill', 'everything'], { encoding: 'utf8', env: { ...process.env, DIGDAG_HA_TARGET: 'local' } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--kill everything: unknown everything/);
});
