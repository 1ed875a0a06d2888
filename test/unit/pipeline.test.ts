// Pipeline: make-like skipping, --force/--dry-run, task selection, and cleanup on failure.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseFlags, selectSteps } from '../../lib/cli.ts';
import { UserError } from '../../lib/errors.ts';
import { localTarget } from '../../lib/local/target.ts';
import { runStep, runSteps, skipReason, stopStarted, TASK_ORDER, type Step } from '../../lib/pipeline.ts';
import { freePortRange } from '../../lib/ports.ts';
import { isAlive, listProcesses, registerProcess, waitFor } from '../../lib/processes.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { apply } from '../../tasks/apply.ts';
import { kubeTarget, targetOf } from '../../tasks/steps.ts';
import { verifyHa } from '../../tasks/verify-ha.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';

function counterStep(input: { value: string }, health: { ok: boolean }, runs: { n: number }): Step {
  return {
    name: 'init-db',
    title: 'test step',
    inputs: () => ({ values: input.value }),
    healthy: async () => (health.ok ? 'target healthy' : false),
    run: async () => {
      runs.n++;
    },
  };
}

test('a step runs, then skips while inputs are unchanged and its result is healthy', async () => {
  const ctx = testCtx(testConfig(), new RecordingRunner());
  const input = { value: 'a' };
  const health = { ok: true };
  const runs = { n: 0 };
  const step = counterStep(input, health, runs);
  assert.equal(await skipReason(step, ctx), undefined);
  await runStep(step, ctx);
  assert.equal(await skipReason(step, ctx), 'up to date: inputs unchanged, target healthy');
  input.value = 'b';
  assert.equal(await skipReason(step, ctx), undefined, 'a changed input re-runs the step');
  await runStep(step, ctx);
  health.ok = false;
  assert.equal(await skipReason(step, ctx), undefined, 'an unhealthy result re-runs the step');
  health.ok = true;
  assert.ok(await skipReason(step, ctx));
  assert.equal(await skipReason(step, { ...ctx, force: true }), undefined, '--force re-runs the step');
  assert.equal(runs.n, 2);
});

test('a dry run does not stamp, so the real run still happens afterwards', async () => {
  const config = testConfig();
  const runs = { n: 0 };
  const step = counterStep({ value: 'x' }, { ok: true }, runs);
  await runStep(step, testCtx(config, new RecordingRunner(undefined, true)));
  assert.equal(await skipReason(step, testCtx(config, new RecordingRunner())), undefined);
});

test('a step with nothing to do on a target says why', async () => {
  const ctx = testCtx(testConfig(), new RecordingRunner());
  const ingress = ALL_STEPS.find((s) => s.name === 'ingress')!;
  assert.match((await skipReason(ingress, ctx))!, /local target: no ingress needed, the UI is at http:\/\/127.0.0.1:65432/);
  const pf = ALL_STEPS.find((s) => s.name === 'port-forward')!;
  assert.match((await skipReason(pf, ctx))!, /nothing to forward/);
});

test('all.ts holds every task in the documented order; each task file exports the same step object', () => {
  assert.deepEqual(ALL_STEPS.map((s) => s.name), [...TASK_ORDER]);
  assert.equal(ALL_STEPS[TASK_ORDER.indexOf('verify-ha')], verifyHa);
  assert.equal(ALL_STEPS[TASK_ORDER.indexOf('apply')], apply);
});

test('every target implements every task; the config picks the target in one place', () => {
  for (const t of [localTarget, kubeTarget]) assert.deepEqual(Object.keys(t.steps).sort(), [...TASK_ORDER].sort());
  assert.equal(targetOf(testConfig()), localTarget);
  assert.equal(targetOf(testConfig({ DIGDAG_HA_TARGET: 'minikube' })), kubeTarget);
  assert.equal(targetOf(testConfig({ DIGDAG_HA_TARGET: 'cluster' })), kubeTarget);
});

test('a started process that carries its own stop is stopped with it, not with a signal', async () => {
  const config = testConfig();
  const ctx = testCtx(config, new RecordingRunner());
  const how: string[] = [];
  ctx.started.push({ name: 'db', pid: 0, marker: 'x', logFile: '', startedAt: '', stop: async () => (how.push('own stop'), 'stopped by its own command') });
  await stopStarted(ctx);
  assert.deepEqual(how, ['own stop']);
  assert.deepEqual(ctx.started, []);
});

test('--only, --from and --skip select tasks; unknown names are refused', () => {
  const names = (argv: string[]) => selectSteps(ALL_STEPS, parseFlags(argv)).map((s) => s.name);
  assert.deepEqual(names(['--only', 'init-db,apply']), ['init-db', 'apply']);
  assert.deepEqual(names(['--from', 'push-workflow']), ['push-workflow', 'verify-ha']);
  assert.deepEqual(names(['--from', 'apply', '--skip', 'ingress', '--skip', 'port-forward']), ['apply', 'push-workflow', 'verify-ha']);
  assert.throws(() => parseFlags(['--only', 'deploy']), (e: unknown) => e instanceof UserError && /unknown task "deploy"/.test(e.message));
  assert.throws(() => parseFlags(['--frobnicate']), UserError);
  assert.throws(() => parseFlags(['--set', 'NOEQUALS']), /expected NAME=VALUE/);
});

test('a failed run stops the processes it started, and only those', async () => {
  const config = testConfig();
  const runner = new ShellRunner(false, () => {});
  const ctx = testCtx(config, runner);
  const dir = tempDir();
  const marker = path.join(dir, 'mine');
  const spawn = async (name: string, started: boolean) => {
    const m = `${marker}-${name}`;
    const pid = await runner.spawnBackground({ argv: ['sh', '-c', 'sleep 300; true', m], logFile: path.join(dir, `${name}.log`) });
    const entry = { name, pid, marker: m, logFile: '', startedAt: '' };
    registerProcess(config, entry);
    if (started) ctx.started.push(entry);
    return entry;
  };
  const before = await spawn('from-an-earlier-run', false);
  let mine: Awaited<ReturnType<typeof spawn>> | undefined;
  const steps: Step[] = [
    { name: 'apply', title: 'start something', run: async () => void (mine = await spawn('this-run', true)) },
    { name: 'verify-ha', title: 'fail', run: async () => { throw new UserError('boom', 'fix it'); } },
  ];
  try {
    await assert.rejects(runSteps(steps, ctx, { renderer: 'silent' }), /boom/);
    assert.ok(mine);
    assert.ok(await waitFor(() => !isAlive(mine!), 5000), 'the process this run started is stopped');
    assert.ok(isAlive(before), 'a process from an earlier run is left alone');
    assert.deepEqual(listProcesses(config).map((p) => p.name), ['from-an-earlier-run']);
  } finally {
    process.kill(-before.pid, 'SIGKILL');
  }
});

test('stamps live in the state dir, never in the repository', async () => {
  const config = testConfig();
  await runStep(counterStep({ value: 'v' }, { ok: true }, { n: 0 }), testCtx(config, new RecordingRunner()));
  assert.ok(fs.existsSync(path.join(config.stateDir, 'stamps', 'init-db.json')));
  assert.ok(config.stateDir.startsWith('/tmp/'));
});

test('a dry run of the whole pipeline on a fresh machine prints every change and leaves no trace', async () => {
  const root = path.join(tempDir(), 'state');
  const config = testConfig({ DIGDAG_HA_STATE_DIR: root, LOCAL_PORT_BASE: String(await freePortRange(4, 61000)) });
  const lines: string[] = [];
  const ctx = testCtx(config, new ShellRunner(true, (l) => lines.push(l)));
  await runSteps(ALL_STEPS, ctx, { renderer: 'silent' });
  assert.equal(fs.existsSync(root), false, 'nothing was written');
  const dry = lines.filter((l) => l.startsWith('[dry-run]')).join('\n');
  assert.match(dry, /\[dry-run\] mvn .*copy-dependencies/);
  assert.match(dry, /\[dry-run\] runuser -u postgres -- .*initdb/);
  assert.match(dry, /\[dry-run\] .*psql .*-f -/);
  assert.match(dry, /\[dry-run\] java .* migrate run -c /);
  assert.equal((dry.match(/ server -c .*\.properties/g) ?? []).length, 4, 'four role processes would start (ui, scheduler, 2 workers)');
  assert.match(dry, /\[dry-run\] java .* push ha-sample --project /);
  assert.ok(lines.some((l) => new RegExp(`would be started on :${config.local.portBase}`).test(l)));
  assert.deepEqual(listProcesses(config), []);
});
