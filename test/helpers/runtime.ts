// The Digdag runtime for integration tests: from the environment's DIGDAG_SOURCE/DIGDAG_JAR
// (default Maven), or the reason it cannot be had here — the tests then report SKIPPED.
import type { Config } from '../../lib/config.ts';
import { UserError } from '../../lib/errors.ts';
import { runStep } from '../../lib/pipeline.ts';
import type { Runner } from '../../lib/runner.ts';
import { buildImage } from '../../tasks/build-image.ts';
import { testCtx } from './fixtures.ts';

export const runtimeVars: Record<string, string> = {};
for (const k of ['DIGDAG_SOURCE', 'DIGDAG_JAR', 'DIGDAG_JAR_SHA256', 'MAVEN_REPO_URL', 'JAVA_HOME']) {
  if (process.env[k]) runtimeVars[k] = process.env[k]!;
}

export { freePortRange } from '../../lib/ports.ts';

/** Fetches the runtime; returns why it is unavailable, or undefined when it is ready. */
export async function prepareRuntime(config: Config, runner: Runner): Promise<string | undefined> {
  try {
    await runStep(buildImage, testCtx(config, runner));
    return undefined;
  } catch (err) {
    if (err instanceof UserError && /is not in the Maven repository|could not resolve|curl/i.test(err.message)) return err.message;
    throw err;
  }
}
