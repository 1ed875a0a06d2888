// verify-ha is written once over the Target interface: run over an in-memory fake (a simulated
// Digdag behind a real HTTP server) in both evidence modes, it passes when the roles behave, and
// fails with the failed check named when one of them does not.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ensureSecrets } from '../../lib/credentials.ts';
import { UserError } from '../../lib/errors.ts';
import { runStep } from '../../lib/pipeline.ts';
import { RecordingRunner } from '../../lib/runner.ts';
import { verifyHa, verifyHaOn, wholeRunMs } from '../../lib/verify-ha.ts';
import { renderTable, type Check } from '../../lib/verify.ts';
import { fakeTarget, type Faults } from '../helpers/fake-target.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const MODES = [
  { name: 'local-like (task logs, a killed process stays down)', evidence: 'task-logs', replacesInstances: false },
  { name: 'Kubernetes-like (task locks, a controller replaces pods)', evidence: 'task-locks', replacesInstances: true },
] as const;

async function run(layout: 'worker' | 'split', mode: (typeof MODES)[number] | { evidence: 'task-locks'; replacesInstances: true; haDatabase: true }, faults: Faults = {}) {
  const config = testConfig({ DIGDAG_HA_LAYOUT: layout });
  ensureSecrets(config);
  const target = await fakeTarget(config, mode, faults);
  const ctx = testCtx(config, new RecordingRunner(), true);
  try {
    return { ctx, target, checks: await verifyHa(ctx, target), error: undefined as unknown };
  } catch (error) {
    return { ctx, target, checks: [] as Check[], error };
  } finally {
    await target.close();
  }
}

// Each test has its own fake Digdag (its own server, state dir and simulated clock) and spends most of
// its time waiting on it: they run side by side (the file took ~50 s one after another, alone at
// the end of the unit run).
describe('verify-ha over fake targets', { concurrency: true }, () => {
  for (const mode of MODES) {
    for (const layout of ['worker', 'split'] as const) {
      test(`verify-ha over a ${mode.name} target, layout ${layout}: every role proven, every check passes`, async () => {
        const { checks, target, error } = await run(layout, mode);
        assert.equal(error, undefined, String(error));
        if (process.env.SHOW_TABLE) console.log(renderTable(checks));
        for (const c of checks) assert.ok(c.ok, `${c.role}: ${c.what} — ${c.detail}`);
        const proven = new Set(checks.flatMap((c) => c.role.split('+')));
        for (const role of layout === 'worker' ? ['ui', 'scheduler', 'worker'] : ['ui', 'workflow', 'scheduler', 'agent']) assert.ok(proven.has(role), `no check proves ${role}`);
        assert.ok(checks.some((c) => /SIGKILL/.test(c.what) && /re-run by/.test(c.detail)), 'the kill check names who re-ran the task');
        assert.ok(checks.some((c) => /\b401\b/.test(c.what)), 'the authentication check ran');
        // The layout was disrupted and restored: the loops stopped, one task runner killed.
        assert.ok(target.events.some((e) => e.startsWith('stopRole')) && target.events.some((e) => e.startsWith('kill')) && target.events.includes('restore'), target.events.join(', '));
        if (mode.replacesInstances) assert.ok(target.events.filter((e) => e.startsWith('stop ')).length >= 2, 'one instance of every other role deleted too');
      });
    }

    test(`verify-ha over a ${mode.name} target fails the placement check when a task runs on the ui`, async () => {
      const { checks } = await run('worker', mode, { taskOnUi: true });
      const failed = checks.filter((c) => !c.ok).map((c) => c.what);
      assert.deepEqual(failed, ['tasks ran on worker instances only', 'served the API and ran no task']);
    });

    test(`verify-ha over a ${mode.name} target fails the executor-loop check when an attempt moves without a loop`, async () => {
      const { checks } = await run('worker', mode, { loopEverywhere: true });
      const loop = checks.find((c) => /executor loop/.test(c.what));
      assert.equal(loop?.ok, false);
      assert.match(loop!.detail, /MOVED/);
    });
  }

  test('with a replicated database, verify-ha kills its leader under a running attempt: passes when a replica takes over and the old leader rejoins, fails naming it when none does', async () => {
    const mode = { evidence: 'task-locks', replacesInstances: true, haDatabase: true } as const;
    const good = await run('worker', mode);
    assert.equal(good.error, undefined, String(good.error));
    const dbCheck = good.checks.find((c) => c.role === 'database');
    assert.ok(dbCheck?.ok, dbCheck?.detail);
    assert.match(dbCheck!.detail, /^pg-0's PostgreSQL SIGKILLed mid-attempt: pg-1 leads after [\d.]+ s; attempt \d+ succeeded; members whole again \(pg-0 replica, pg-1 leader, pg-2 replica\)$/);
    assert.ok(good.target.events.includes('kill database leader pg-0'));
    const bad = await run('worker', mode, { dbNoFailover: true });
    const failed = bad.checks.filter((c) => !c.ok);
    assert.deepEqual(failed.map((c) => c.what), ['the sample survives the loss of the database leader']);
    assert.match(failed[0]!.detail, /NO replica took over/);
    // Without a replicated database (local, one member, external) there is no such check.
    const plain = await run('worker', MODES[1]);
    assert.ok(!plain.checks.some((c) => c.role === 'database'));
  });

  test('verify-ha proves the scheduler even when the schedule fires between reading it and skipping to now', async () => {
    const { checks, error } = await run('worker', MODES[0], { scheduleFiresBeforeSkip: true });
    assert.equal(error, undefined, String(error));
    assert.equal(checks.find((c) => c.role === 'scheduler' && /due schedule/.test(c.what))?.ok, true);
  });

  test('the verify-ha step reports failures once, with the table, and records the checks as typed facts', async () => {
    const config = testConfig({ DIGDAG_HA_LAYOUT: 'worker' });
    ensureSecrets(config);
    const target = await fakeTarget(config, MODES[0], { taskOnUi: true });
    const ctx = testCtx(config, new RecordingRunner(), true);
    try {
      await assert.rejects(runStep({ name: 'verify-ha', title: 'Verify', ...verifyHaOn(target) }, ctx), (err: unknown) => {
        assert.ok(err instanceof UserError);
        assert.match(err.message, /2 HA check\(s\) failed/);
        assert.match(err.message, /tasks ran on worker instances only/);
        return true;
      });
      assert.equal(ctx.facts.checks?.filter((c) => !c.ok).length, 2);
      assert.match(ctx.facts.summary ?? '', /FAILED/);
    } finally {
      await target.close();
    }
  });

  test('verify-ha stops before disrupting anything when the layout is not as apply made it', async () => {
    const config = testConfig({ DIGDAG_HA_LAYOUT: 'worker' });
    ensureSecrets(config);
    const target = await fakeTarget(config, MODES[0]);
    const ctx = testCtx(config, new RecordingRunner(), true);
    try {
      const [one] = (await target.instances(ctx)).filter((i) => i.role === 'worker');
      await target.kill(ctx, one!);
      target.events.length = 0;
      await assert.rejects(verifyHa(ctx, target), /the layout is not running as apply makes it[\s\S]*worker[\s\S]*1 of 2 ready/);
      assert.deepEqual(target.events, []);
    } finally {
      await target.close();
    }
  });

  test('a verify-ha run that hangs ends at its bound, naming what it was doing and how to repair', async () => {
    const config = testConfig({ DIGDAG_HA_LAYOUT: 'worker' });
    ensureSecrets(config);
    const target = await fakeTarget(config, MODES[0], { restoreHangs: true });
    const ctx = testCtx(config, new RecordingRunner(), true);
    try {
      await assert.rejects(runStep({ name: 'verify-ha', title: 'Verify', ...verifyHaOn(target, () => 3000) }, ctx), (err: unknown) => {
        assert.ok(err instanceof UserError, String(err));
        assert.match(err.message, /did not finish within 3s: stuck while bringing ui and worker back/);
        assert.match(err.fix ?? '', /run the apply task/);
        return true;
      });
    } finally {
      await target.close();
    }
  });

  test('the whole-run bound of verify-ha outlasts every wait it makes', () => {
    const b = { pickupMs: 60_000, attemptMs: 180_000, failoverMs: (s: number) => (s + 130) * 1000, stallWindowMs: 10_000, placementRun: { tasks: 6, sleepSeconds: 2 }, failoverRun: { tasks: 4, sleepSeconds: 20 }, dbFailoverMs: 120_000 };
    // Four attempts waited for (placement, stalled, killed, across the database failover), two
    // pick-ups, the task failover, a new leader and the members whole again.
    assert.ok(wholeRunMs(b) > 4 * b.attemptMs + 2 * b.pickupMs + b.failoverMs(20) + b.stallWindowMs + 3 * b.dbFailoverMs);
  });
});
