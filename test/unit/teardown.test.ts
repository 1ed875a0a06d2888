// Teardown stops registered processes and strays of this state dir; a replacement registered
// under the same name survives the cleanup of the process it replaced.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { stopStarted } from '../../lib/pipeline.ts';
import { freeze, isAlive, isFrozen, listProcesses, registerProcess, stopProcess, strayProcesses, waitFor } from '../../lib/processes.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { localTarget } from '../../lib/local/target.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const runner = new ShellRunner(false, () => {});

async function sleeper(marker: string) {
  const pid = await runner.spawnBackground({ argv: ['sh', '-c', 'sleep 300; true', marker], logFile: '/dev/null' });
  return { pid, marker, logFile: '', startedAt: '' };
}

test('down stops a process of this state dir that nothing registered (left by a crash)', async () => {
  const config = testConfig();
  const stray = await sleeper(path.join(config.stateDir, 'props', 'agent-9.properties'));
  const other = await sleeper('/somewhere/else/props/agent-9.properties');
  try {
    assert.ok(isAlive(stray));
    // The shell forks `sleep`; until that child execs it shows the shell's command line (marker
    // included) and would be a second stray. Wait for the exec: then only the shell matches.
    assert.ok(await waitFor(async () => strayProcesses(config, []).length === 1, 5000, 20), 'the sleeper\'s child did not exec');
    const lines = await localTarget.down(testCtx(config, runner), false);
    assert.deepEqual(lines, [`stray-${stray.pid}: terminated`]);
    assert.ok(await waitFor(() => !isAlive(stray), 5000));
    assert.ok(isAlive(other), 'processes of other state dirs are not touched');
  } finally {
    process.kill(-other.pid, 'SIGKILL');
  }
});

test('cleaning up a dead process does not unregister its live replacement', async () => {
  const config = testConfig();
  const ctx = testCtx(config, runner);
  const old = { name: 'workflow-1', ...(await sleeper(`${config.stateDir}/props/workflow-1.properties`)) };
  registerProcess(config, old);
  ctx.started.push(old);
  process.kill(-old.pid, 'SIGKILL');
  await waitFor(() => !isAlive(old), 5000);
  const replacement = { name: 'workflow-1', ...(await sleeper(`${config.stateDir}/props/workflow-1.properties`)) };
  registerProcess(config, replacement);
  try {
    await stopStarted(ctx);
    assert.deepEqual(listProcesses(config).map((p) => p.pid), [replacement.pid]);
    await localTarget.down(ctx, false);
    assert.ok(await waitFor(() => !isAlive(replacement), 5000));
  } finally {
    try { process.kill(-replacement.pid, 'SIGKILL'); } catch { /* stopped */ }
  }
});

test('the local target\'s verify-ha primitives: SIGKILL of one process (forgotten by the registry), a role frozen and resumed; the rest untouched', async () => {
  const config = testConfig();
  const ctx = testCtx(config, runner);
  const procs = await Promise.all(['worker-1', 'worker-2', 'ui-1'].map(async (name) => {
    const p = { name, role: name.split('-')[0], port: 1, ...(await sleeper(`${config.stateDir}/props/${name}.properties`)) };
    registerProcess(config, p);
    return p;
  }));
  try {
    const inst = (name: string) => ({ name, role: name.split('-')[0] as 'worker' | 'ui', ready: true, args: [] });
    await localTarget.kill(ctx, inst('worker-1'));
    assert.equal(isAlive(procs[0]!), false);
    assert.deepEqual(listProcesses(config).map((p) => p.name), ['ui-1', 'worker-2']);
    // A role is frozen (SIGSTOP), not stopped: still registered, resumed without a start-up.
    assert.equal(await localTarget.stopRole(ctx, 'ui'), 'ui-1 (frozen)');
    assert.equal(isFrozen(procs[2]!), true);
    assert.deepEqual(listProcesses(config).map((p) => p.name), ['ui-1', 'worker-2']);
    assert.ok(isAlive(procs[1]!) && !isFrozen(procs[1]!), 'another process is left alone');
    await freeze(procs[2]!, false);
    assert.equal(isFrozen(procs[2]!), false, 'SIGCONT resumes it');
    // down stops a frozen process within its grace (the TERM is followed by a CONT).
    await freeze(procs[2]!, true);
    const t0 = Date.now();
    assert.equal(await stopProcess(procs[2]!, 20_000), 'terminated');
    assert.ok(Date.now() - t0 < 10_000, `a frozen process took ${Date.now() - t0} ms to stop`);
    assert.equal(localTarget.instanceOfAgent('worker-2'), 'worker-2', 'agent.id is the instance name');
  } finally {
    for (const p of procs) try { process.kill(-p.pid, 'SIGKILL'); } catch { /* stopped */ }
  }
});

test('a process in the middle of an exec is alive (its command line is empty for a moment)', async () => {
  // A wrapper chain (unshare → sh → env → program, as a host process may have): the same pid execs 2 000 times,
  // the marker on every command line. Reading /proc/<pid>/cmdline in a loop sees it empty about
  // one read in ten; isAlive must never call the process dead while it runs.
  const marker = `exec-chain-${process.pid}-${Date.now()}`;
  const script = 'n=$1; [ "$n" -gt 0 ] || exec sleep 30; exec sh -c "$0" "$0" $((n-1)) "$2"';
  const pid = await runner.spawnBackground({ argv: ['sh', '-c', script, script, '2000', marker], logFile: '/dev/null' });
  const entry = { pid, marker };
  try {
    let reads = 0;
    let dead = 0;
    // Until the chain settles in its final `sleep` (argv without the marker): bounded by count.
    for (; reads < 200_000; reads++) {
      const cmdline = (() => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return 'gone'; } })();
      if (cmdline.startsWith('sleep')) break;
      if (!isAlive(entry) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) dead++;
    }
    assert.equal(dead, 0, `isAlive called a running process dead ${dead} times in ${reads} reads`);
    assert.ok(reads > 100, `the exec chain was observed (${reads} reads)`);
  } finally {
    process.kill(pid, 'SIGKILL');
  }
});
