// digdag-ha's one patch to Digdag: io.digdag.core.agent.InProcessTaskCallbackApi with its task
// callbacks retried while the database is unavailable (docker/callback-retry/, why in its header).
// Digdag's OperatorManager turns a failed callback into a failed task with no retry, so without
// it a task that finishes while the database's leader changes fails its attempt (measured by the
// soak: 4 of 152 attempts across 5 leader kills). Compiled once per source and runtime with the
// JDK next to the Java that runs Digdag, into a directory put ahead of Digdag on the classpath:
// locally by build-image into the runtime cache, for the image into the build context (the
// entrypoint adds it). DIGDAG_CALLBACK_RETRY=false runs Digdag as released.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { cacheDir, sha256File, type Java, type Runtime } from './digdag.ts';
import { UserError } from './errors.ts';
import { ROOT } from './paths.ts';
import type { Runner } from './runner.ts';
import { runtimeJars } from './runtime.ts';

export const CALLBACK_RETRY_DIR = path.join(ROOT, 'docker', 'callback-retry');
export const CALLBACK_RETRY_CLASS = path.join('io', 'digdag', 'core', 'agent', 'InProcessTaskCallbackApi');
export const CALLBACK_RETRY_SOURCE = path.join(CALLBACK_RETRY_DIR, `${CALLBACK_RETRY_CLASS}.java`);
const KEY_FILE = '.digdag-ha-key';

/** Where the local target keeps the compiled patch (next to the runtime it was compiled against). */
export const localCallbackRetryDir = (config: Config) => path.join(cacheDir(config), 'callback-retry');

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

/** What the compiled class depends on: the source and the runtime's jars. */
export function callbackRetryKey(rt: Runtime): string {
  const h = createHash('sha256').update(fs.readFileSync(CALLBACK_RETRY_SOURCE));
  for (const jar of runtimeJars(rt)) h.update(`${path.basename(jar)} ${rt.sha256 && rt.kind === 'jar' ? rt.sha256 : sha256File(jar)}\n`);
  return h.digest('hex');
}

/** The patch in outDir was compiled from this source against this runtime. */
export function callbackRetryCurrent(rt: Runtime, outDir: string): boolean {
  try {
    return fs.existsSync(path.join(outDir, `${CALLBACK_RETRY_CLASS}.class`)) && fs.readFileSync(path.join(outDir, KEY_FILE), 'utf8').trim() === callbackRetryKey(rt);
  } catch {
    return false;
  }
}

/** Compiles the patch into outDir unless the same source was compiled against the same runtime
 * there already. Returns 'compiled' or 'up to date'. */
export async function compileCallbackRetry(runner: Runner, java: Java, rt: Runtime, outDir: string): Promise<'compiled' | 'up to date'> {
  if (callbackRetryCurrent(rt, outDir)) return 'up to date';
  const key = callbackRetryKey(rt);
  const javac = javacOf(java);
  const tmp = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    // Digdag's classes are Java 8 bytecode; --release 8 runs on every Java Digdag runs on.
    const res = await runner.run({
      argv: [javac, '--release', '8', '-nowarn', '-encoding', 'UTF-8', '-cp', runtimeJars(rt).join(path.delimiter), '-d', tmp, CALLBACK_RETRY_SOURCE],
      nothrow: true,
      quiet: true,
    }).catch((e: Error) => ({ code: 127, stdout: '', stderr: e.message }));
    if (res.code !== 0) {
      const missing = res.code === 127 || /ENOENT|not found/i.test(res.stderr);
      throw new UserError(
        missing ? `compiling digdag-ha's task-callback patch needs a JDK: ${javac} was not found` : `compiling digdag-ha's task-callback patch against Digdag ${rt.version} failed`,
        missing
          ? 'install a JDK next to the Java that runs Digdag (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless), or set DIGDAG_CALLBACK_RETRY=false to run Digdag as released (a task that finishes during a database failover then fails its attempt)'
          : 'the patch is written against Digdag 0.10.5.1; with another Digdag set DIGDAG_CALLBACK_RETRY=false',
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
