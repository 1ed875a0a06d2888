// digdag-ha's patches to Digdag (docker/digdag-patches, lib/digdag-patches.ts), compiled for real
// with javac against the Digdag 0.10.5.1 runtime: they compile, a second compile of the same sources
// against the same runtime is skipped; the task-callback patch's classifier retries only a lost or
// refused database, and the agent patch takes the next task as soon as a thread is free and waits
// DIGDAG_HA_AGENT_POLL_MILLIS in an empty round — Digdag's own agent, run by the same probe, waits
// 500 ms and polls every 1000 (probe classes in their package, test/fixtures/digdag-patches-probe);
// the Google credential patch fails a task whose key Google refuses or whose metadata server has no
// identity for it, and leaves an endpoint that is down to the operator's retries; the executor patch's
// loop backs off to DIGDAG_HA_EXECUTOR_POLL_MILLIS at most (Digdag's own: 5 s).
// Whether the callbacks keep attempts alive across a real failover is the soak's job
// (test/integration/kube-e2e.test.ts); what the agent patch buys, the bench's. SKIPPED without the
// runtime or a JDK.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DIGDAG_PATCH_CLASSES, compileDigdagPatches } from '../../lib/digdag-patches.ts';
import type { Runtime } from '../../lib/digdag.ts';
import { ROOT } from '../../lib/paths.ts';
import { freePortRange } from '../../lib/ports.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { tempDir } from '../helpers/fixtures.ts';

const jar = process.env.DIGDAG_SOURCE === 'jar' ? process.env.DIGDAG_JAR : undefined;
const javac = spawnSync('javac', ['-version'], { encoding: 'utf8' });
const missing = !jar || !fs.existsSync(jar) ? 'no Digdag runtime (set DIGDAG_SOURCE=jar DIGDAG_JAR=…)' : javac.status !== 0 ? 'no JDK (javac) on PATH' : undefined;

const PROBES = path.join(ROOT, 'test', 'fixtures', 'digdag-patches-probe', 'io', 'digdag', 'core', 'agent');
let compiled: { out: string; probe: string; cp: string } | undefined;

test('the patches compile against Digdag 0.10.5.1, once per source and runtime; the task-callback patch retries only a lost database', async (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  const rt: Runtime = { kind: 'jar', path: jar!, version: '0.10.5.1', source: 'jar', sha256: process.env.DIGDAG_JAR_SHA256 };
  const out = path.join(tempDir('cbr-'), 'classes');
  const runner = new ShellRunner(false, () => {});
  const java = { bin: 'java', major: 17, flags: [] };
  assert.equal(await compileDigdagPatches(runner, java, rt, out), 'compiled');
  for (const c of DIGDAG_PATCH_CLASSES) {
    // Each class is Java 8 bytecode (major 52): it loads on every Java Digdag runs on.
    assert.equal(fs.readFileSync(path.join(out, `${c}.class`)).readUInt16BE(6), 52, c);
  }
  assert.equal(await compileDigdagPatches(runner, java, rt, out), 'up to date', 'the same sources against the same runtime are not compiled again');

  const probe = tempDir('cbr-probe-');
  const cp = [out, jar!].join(path.delimiter);
  const c = spawnSync('javac', ['--release', '8', '-nowarn', '-cp', cp, '-d', probe, ...['CallbackRetryProbe', 'AgentWakeupProbe'].map((n) => path.join(PROBES, `${n}.java`))], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  compiled = { out, probe, cp };
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

/** The agent probe's answers: how long after a task finished the full agent took the next, and the empty-round waits it asked for. */
function agentProbe(classpath: string[], env: Record<string, string>): { wakes: number[]; polls: number[] } {
  const r = spawnSync('java', ['-cp', classpath.join(path.delimiter), 'io.digdag.core.agent.AgentWakeupProbe'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const values = (key: string) => r.stdout.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => Number(l.slice(key.length + 1)));
  return { wakes: values('wake-ms'), polls: values('poll-ms') };
}

test('the agent patch: a full agent takes the next task as soon as a thread is free, and an empty round waits DIGDAG_HA_AGENT_POLL_MILLIS (Digdag\'s own agent: 500 ms and 1000)', (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  if (!compiled) return t.skip('SKIPPED — the patches did not compile (see the test before)');
  const patched = agentProbe([compiled.probe, compiled.out, jar!], { DIGDAG_HA_AGENT_POLL_MILLIS: '123' });
  assert.equal(patched.wakes.length, 5);
  assert.ok(patched.wakes.every((ms) => ms < 200), `the patched agent took the next task ${patched.wakes.join(', ')} ms after a thread was free`);
  assert.deepEqual(patched.polls, [123]);
  // The same probe against Digdag as released: what the patch changes.
  const released = agentProbe([compiled.probe, jar!], { DIGDAG_HA_AGENT_POLL_MILLIS: '123' });
  assert.ok(released.wakes.every((ms) => ms >= 400), `Digdag's own agent: ${released.wakes.join(', ')} ms`);
  assert.deepEqual(released.polls, [1000]);
  // Unset or not a number: 1000 ms, as released.
  assert.deepEqual(agentProbe([compiled.probe, compiled.out, jar!], { DIGDAG_HA_AGENT_POLL_MILLIS: 'soon' }).polls, [1000]);
});

test('the executor patch: the loop backs off to at most DIGDAG_HA_EXECUTOR_POLL_MILLIS (Digdag\'s own: 5000 ms whatever the environment)', (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  if (!compiled) return t.skip('SKIPPED — the patches did not compile (see the first test)');
  const dir = path.join(ROOT, 'test', 'fixtures', 'digdag-patches-probe', 'io', 'digdag', 'core', 'workflow');
  const c = spawnSync('javac', ['--release', '8', '-nowarn', '-cp', compiled.cp, '-d', compiled.probe, path.join(dir, 'ExecutorWaitProbe.java')], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  const probe = (classpath: string[], value: string | undefined) => {
    const env = { ...process.env };
    delete env.DIGDAG_HA_EXECUTOR_POLL_MILLIS;
    if (value !== undefined) env.DIGDAG_HA_EXECUTOR_POLL_MILLIS = value;
    const r = spawnSync('java', ['-cp', classpath.join(path.delimiter), 'io.digdag.core.workflow.ExecutorWaitProbe'], { encoding: 'utf8', timeout: 60_000, env });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    return Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=')).map(([k, v]) => [k, Number(v)]));
  };
  const patched = [compiled.probe, compiled.out, jar!];
  assert.deepEqual(probe(patched, '250'), { 'initial-interval': 100, 'max-interval': 250 });
  // Unset or not a number: 5000 ms, as released; never below the first wait or above a minute.
  assert.equal(probe(patched, undefined)['max-interval'], 5000);
  assert.equal(probe(patched, 'soon')['max-interval'], 5000);
  assert.equal(probe(patched, '20')['max-interval'], 100);
  assert.equal(probe(patched, '999999')['max-interval'], 60000);
  // The same probe against Digdag as released: what the patch changes.
  assert.deepEqual(probe([compiled.probe, jar!], '250'), { 'initial-interval': 100, 'max-interval': 5000 });
});

test('without a JDK next to the Java that runs Digdag, the compile stops naming the fix, including running Digdag as released', async (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  const rt: Runtime = { kind: 'jar', path: jar!, version: '0.10.5.1', source: 'jar', sha256: process.env.DIGDAG_JAR_SHA256 };
  // A JRE only: JAVA_HOME/bin holds java and no javac.
  const jre = tempDir('jre-');
  fs.writeFileSync(path.join(jre, 'java'), '#!/bin/sh\n', { mode: 0o755 });
  const out = path.join(tempDir('cbr-'), 'classes');
  await assert.rejects(compileDigdagPatches(new ShellRunner(false, () => {}), { bin: path.join(jre, 'java'), major: 17, flags: [] }, rt, out), (e: Error & { fix?: string }) => {
    assert.match(e.message, new RegExp(`needs a JDK: ${jre}/javac was not found`));
    assert.match(e.fix ?? '', /openjdk-17-jdk-headless.*DIGDAG_PATCHES=false/);
    return true;
  });
  assert.equal(fs.existsSync(out), false, 'nothing half-written');
});

test('the Google credential patch: a refused key or a pod without an identity fails the task naming the cause; an endpoint that is down is left to the operator\'s retries', async (t) => {
  if (missing) return t.skip(`SKIPPED — ${missing}`);
  if (!compiled) return t.skip('SKIPPED — the patches did not compile (see the first test)');
  const probes = path.join(ROOT, 'test', 'fixtures', 'digdag-patches-probe', 'io', 'digdag', 'standards', 'operator', 'gcp');
  const c = spawnSync('javac', ['--release', '8', '-nowarn', '-cp', compiled.cp, '-d', compiled.probe, path.join(probes, 'CredentialCheckProbe.java')], { encoding: 'utf8' });
  assert.equal(c.status, 0, c.stderr);
  // The metadata server's address is read once, when Google's client class loads: the probe's own server listens there.
  const metadata = `127.0.0.1:${await freePortRange(1, 47100)}`;
  const r = spawnSync('java', ['-cp', [compiled.probe, compiled.cp].join(path.delimiter), 'io.digdag.standards.operator.gcp.CredentialCheckProbe', metadata], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, GCE_METADATA_HOST: metadata } });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const v = Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  // A good key: one exchange, for the scope every Google operator's client is covered by.
  assert.equal(v['key-ok'], 'pass');
  assert.equal(v['key-ok-requests'], '1');
  assert.equal(v['key-ok-scope'], 'https://www.googleapis.com/auth/cloud-platform');
  // Refused keys: the task fails with Google's error, nothing of the key in it.
  assert.match(v['key-invalid-grant']!, /^refused:Google refused .*token endpoint answered 400 invalid_grant: Invalid JWT Signature\..*set a valid key in gcp\.credential/);
  assert.equal(v['key-secret-printed'], 'false');
  assert.match(v['key-unauthorized']!, /^refused:.*answered 401/);
  // Google down or unreachable: not a wrong identity; the operator's own retries go on, with a warning.
  assert.equal(v['key-503'], 'pass');
  assert.equal(v['key-unreachable'], 'pass');
  assert.match(r.stdout + r.stderr, /WARN .*Could not get a Google token .*the operator retries/);
  // Application Default Credentials from the metadata server (Google's own ComputeGoogleCredential).
  assert.equal(v['metadata-ok'], 'pass');
  assert.equal(v['metadata-fresh-token-kept'], 'pass,true', 'a credential with a valid token is not asked again');
  assert.match(v['metadata-404']!, /^refused:No identity from the metadata server .*Error code 404 .*Workload Identity/);
  assert.match(v['metadata-403']!, /^refused:No identity from the metadata server .*Error code 403/);
  assert.equal(v['metadata-503'], 'pass');
});
