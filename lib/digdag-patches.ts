// digdag-ha's patches to Digdag 0.10.5.1 (docker/digdag-patches/, why in each file's header), put
// ahead of Digdag on the classpath of every server:
// - io.digdag.core.agent.InProcessTaskCallbackApi: task callbacks retried while the database is
//   unavailable. Digdag's OperatorManager turns a failed callback into a failed task with no retry,
//   so without it a task that finishes while the database's leader changes fails its attempt
//   (measured by the soak: 4 of 152 attempts across 5 leader kills).
// - io.digdag.core.agent.MultiThreadAgent: an agent looks for tasks as soon as a thread is free
//   (released: after 500 ms) and waits digdag.ha.agentPollMillis (AGENT_POLL_MILLIS) for tasks
//   another process queued (released: 1 s), the rounds a fan-out waits for on other workers.
// - io.digdag.core.workflow.WorkflowExecutor: the executor loop's longest wait between rounds is
//   EXECUTOR_POLL_MILLIS (released: 5 s), the wait every workflow step had where the loop runs apart
//   from the agents (the split layout), since only events in its own JVM wake it.
// - io.digdag.standards.operator.gcp.GcpCredentialProvider: before a Google operator runs, its
//   credential is exchanged for a token once; a refusal (a revoked key, a pod without Workload
//   Identity) fails the task naming it, where Digdag's bq> retried it forever.
// Compiled once per source and runtime with the JDK next to the Java that runs Digdag, into a
// directory put ahead of Digdag on the classpath: locally by build-image into the runtime cache,
// for the image into the build context (the entrypoint adds it). DIGDAG_PATCHES=false runs Digdag
// as released.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { cacheDir, sha256File, type Java, type Runtime } from './digdag.ts';
import { UserError } from './errors.ts';
import { ROOT } from './paths.ts';
import type { Runner } from './runner.ts';
import { runtimeJars } from './runtime.ts';

export const DIGDAG_PATCHES_DIR = path.join(ROOT, 'docker', 'digdag-patches');
/** The patched classes (their full names). */
export const DIGDAG_PATCHED = ['io.digdag.core.agent.InProcessTaskCallbackApi', 'io.digdag.core.agent.MultiThreadAgent', 'io.digdag.core.workflow.WorkflowExecutor', 'io.digdag.standards.operator.gcp.GcpCredentialProvider'];
/** What the patches do, in a line (build-image's log on both targets). */
export const DIGDAG_PATCHES_WHAT = 'task callbacks retried while the database is unavailable, agent wake-ups, a shorter executor-loop wait, Google credentials checked before an operator';
/** The patched classes, as paths under the class directory (without .java / .class). */
export const DIGDAG_PATCH_CLASSES = DIGDAG_PATCHED.map((c) => path.join(...c.split('.')));
export const DIGDAG_PATCH_SOURCES = DIGDAG_PATCH_CLASSES.map((c) => path.join(DIGDAG_PATCHES_DIR, `${c}.java`));
/** Written last, once every class compiled: the image's entrypoint puts the directory on the classpath only then. */
const KEY_FILE = '.digdag-ha-key';

/** Where the agent patch reads its empty-round wait from (MultiThreadAgent.java). */
export const AGENT_POLL_ENV = 'DIGDAG_HA_AGENT_POLL_MILLIS';

/** Where the executor patch reads the loop's longest wait from (WorkflowExecutor.java). */
export const EXECUTOR_POLL_ENV = 'DIGDAG_HA_EXECUTOR_POLL_MILLIS';

/** The environment every Digdag server gets for the patches (the chart's digdag-env ConfigMap sets the same). */
export const patchesEnv = (config: Pick<Config, 'digdag' | 'agent' | 'executor'>): Record<string, string> =>
  config.digdag.patches ? { [AGENT_POLL_ENV]: String(config.agent.pollMillis), [EXECUTOR_POLL_ENV]: String(config.executor.pollMillis) } : {};

/** Where the local target keeps the compiled patches (next to the runtime they were compiled against). */
export const localDigdagPatchesDir = (config: Config) => path.join(cacheDir(config), 'digdag-patches');

/** javac of the JDK that holds this java (JAVA_HOME's), or javac on PATH for the java on PATH. */
export function javacOf(java: Java): string {
  if (!path.isAbsolute(java.bin)) return 'javac';
  let bin = java.bin;
  try {
    bin = fs.realpathSync(java.bin);
  } catch {
    // not there: the compile names the missing javac
  }
  return path.join(path.dirname(bin), 'javac');
}

/** What the compiled classes depend on: the sources and the runtime's jars. */
export function digdagPatchesKey(rt: Runtime): string {
  const h = createHash('sha256');
  for (const src of DIGDAG_PATCH_SOURCES) h.update(`${path.basename(src)}\n`).update(fs.readFileSync(src));
  for (const jar of runtimeJars(rt)) h.update(`${path.basename(jar)} ${rt.sha256 && rt.kind === 'jar' ? rt.sha256 : sha256File(jar)}\n`);
  return h.digest('hex');
}

/** Every patched class in outDir was compiled from these sources against this runtime. */
export function digdagPatchesCurrent(rt: Runtime, outDir: string): boolean {
  try {
    return DIGDAG_PATCH_CLASSES.every((c) => fs.existsSync(path.join(outDir, `${c}.class`))) && fs.readFileSync(path.join(outDir, KEY_FILE), 'utf8').trim() === digdagPatchesKey(rt);
  } catch {
    return false;
  }
}

/** Compiles the patches into outDir unless the same sources were compiled against the same runtime
 * there already. Returns 'compiled' or 'up to date'. */
export async function compileDigdagPatches(runner: Runner, java: Java, rt: Runtime, outDir: string): Promise<'compiled' | 'up to date'> {
  if (digdagPatchesCurrent(rt, outDir)) return 'up to date';
  const key = digdagPatchesKey(rt);
  const javac = javacOf(java);
  const tmp = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    // Digdag's classes are Java 8 bytecode; --release 8 runs on every Java Digdag runs on.
    const res = await runner.run({
      argv: [javac, '--release', '8', '-nowarn', '-encoding', 'UTF-8', '-cp', runtimeJars(rt).join(path.delimiter), '-d', tmp, ...DIGDAG_PATCH_SOURCES],
      nothrow: true,
      quiet: true,
    }).catch((e: Error) => ({ code: 127, stdout: '', stderr: e.message }));
    if (res.code !== 0) {
      const missing = res.code === 127 || /ENOENT|not found/i.test(res.stderr);
      throw new UserError(
        missing ? `compiling digdag-ha's patches to Digdag needs a JDK: ${javac} was not found` : `compiling digdag-ha's patches against Digdag ${rt.version} failed`,
        missing
          ? 'install a JDK next to the Java that runs Digdag (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless), or set DIGDAG_PATCHES=false to run Digdag as released (a task that finishes during a database failover then fails its attempt)'
          : 'the patches are written against Digdag 0.10.5.1; with another Digdag set DIGDAG_PATCHES=false',
        res.stderr,
      );
    }
    fs.writeFileSync(path.join(tmp, KEY_FILE), `${key}\n`);
    fs.rmSync(outDir, { recursive: true, force: true });
    fs.renameSync(tmp, outDir);
    return 'compiled';
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
