// digdag-ha's task-callback patch (docker/callback-retry, lib/callback-retry.ts), compiled for real
// with javac against the Digdag 0.10.5.1 runtime: it compiles, a second compile of the same source
// against the same runtime is skipped, and its classifier retries only a lost or refused database
// (asked through a probe class in its package). Whether it keeps attempts alive across a real
// failover is the soak's job (test/integration/kube-e2e.test.ts). SKIPPED without the runtime or a JDK.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { CALLBACK_RETRY_CLASS, compileCallbackRetry } from '../../lib/callback-retry.ts';
import type { Runtime } from '../../lib/digdag.ts';
import { ROOT } from '../../lib/paths.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { tempDir } from '../helpers/fixtures.ts';

const jar = process.env.DIGDAG_SOURCE === 'jar' ? process.env.DIGDAG_JAR : undefined;
const javac = spawnSync('javac', ['-version'], { encoding: 'utf8' });
const missing = !jar || !fs.existsSync(jar) ? 'no Digdag runtime (set DIGDAG_SOURCE=jar DIGDAG_JAR=…)' : javac.status !== 0 ? 'no JDK (javac) on PATH' : undefined;

test('the task-callback patch compiles against Digdag 0.10.5.1, once per source and runtime, and retries only a lost database', async (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  const rt: Runtime = { kind: 'jar', path: jar!, version: '0.10.5.1', source: 'jar', sha256: process.env.DIGDAG_JAR_SHA256 };
  const out = path.join(tempDir('cbr-'), 'classes');
  const runner = new ShellRunner(false, () => {});
  const java = { bin: 'java', major: 17, flags: [] };
  assert.equal(await compileCallbackRetry(runner, java, rt, out), 'compiled');
  assert.ok(fs.existsSync(path.join(out, `${CALLBACK_RETRY_CLASS}.class`)));
  assert.equal(await compileCallbackRetry(runner, java, rt, out), 'up to date', 'the same source against the same runtime is not compiled again');
  // The class is Java 8 bytecode (major 52): it loads on every Java Digdag runs on.
  const head = fs.readFileSync(path.join(out, `${CALLBACK_RETRY_CLASS}.class`));
  assert.equal(head.readUInt16BE(6), 52);

  const probe = tempDir('cbr-probe-');
  const cp = [out, jar!].join(path.delimiter);
  const c = spawnSync('javac', ['--release', '8', '-nowarn', '-cp', cp, '-d', probe, path.join(ROOT, 'test', 'fixtures', 'callback-retry-probe', 'io', 'digdag', 'core', 'agent', 'CallbackRetryProbe.java')], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  const r = spawnSync('java', ['-cp', [probe, cp].join(path.delimiter), 'io.digdag.core.agent.CallbackRetryProbe'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const verdict = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=')));
  assert.deepEqual(verdict, {
    'closed-connection': 'true',
    'admin-shutdown-57P01': 'true',
    'connection-failure-08006': 'true',
    'read-only-25006': 'true',
    'pool-timeout': 'true',
    'syntax-42601': 'false',
    'unique-23505': 'false',
    'task-error': 'false',
    'no-cause': 'false',
  });
});

test('without a JDK next to the Java that runs Digdag, the compile stops naming the fix, including running Digdag as released', async (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  const rt: Runtime = { kind: 'jar', path: jar!, version: '0.10.5.1', source: 'jar', sha256: process.env.DIGDAG_JAR_SHA256 };
  // A JRE only: JAVA_HOME/bin holds java and no javac.
  const jre = tempDir('jre-');
  fs.writeFileSync(path.join(jre, 'java'), '#!/bin/sh\n', { mode: 0o755 });
  const out = path.join(tempDir('cbr-'), 'classes');
  await assert.rejects(compileCallbackRetry(new ShellRunner(false, () => {}), { bin: path.join(jre, 'java'), major: 17, flags: [] }, rt, out), (e: Error & { fix?: string }) => {
    assert.match(e.message, new RegExp(`needs a JDK: ${jre}/javac was not found`));
    assert.match(e.fix ?? '', /openjdk-17-jdk-headless.*DIGDAG_CALLBACK_RETRY=false/);
    return true;
  });
  assert.equal(fs.existsSync(out), false, 'nothing half-written');
});
