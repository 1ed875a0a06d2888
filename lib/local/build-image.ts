// build-image on the local target: fetch the pinned Digdag runtime into the cache and check it starts.
import { detectJava, digdagArgv, CLIENT_JVM_OPTS, obtainRuntime, readRuntime, useDryRunRuntime, writeRuntime } from '../digdag.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { DIGDAG_VERSION } from '../versions.ts';

export const sourceInputs = (ctx: Ctx) => ({
  version: DIGDAG_VERSION,
  source: ctx.config.digdag.source,
  repo: ctx.config.digdag.source === 'maven' ? ctx.config.digdag.mavenRepoUrl : '',
  jar: ctx.config.digdag.jar,
  sha: ctx.config.digdag.jarSha256,
  java: ctx.config.digdag.javaHome,
});

export const buildImage: Impl = {
  inputs: (ctx) => ({ values: sourceInputs(ctx) }),
  healthy: async (ctx) => {
    const rt = readRuntime(ctx.config);
    return rt ? `Digdag ${rt.version} cached (${rt.source})` : false;
  },
  run: async (ctx) => {
    const java = await detectJava(ctx.config, ctx.runner);
    const rt = await obtainRuntime(ctx.config, ctx.runner);
    if (ctx.runner.dryRun) {
      if (!readRuntime(ctx.config)) useDryRunRuntime(ctx.config, rt);
      return;
    }
    // Prove the runtime starts on this Java before anything depends on it.
    const res = await ctx.runner.run({ argv: digdagArgv(java, rt, CLIENT_JVM_OPTS, ['--version']), nothrow: true });
    const out = `${res.stdout}${res.stderr}`;
    if (res.code !== 0 || !out.includes(DIGDAG_VERSION)) {
      throw new UserError(`Digdag does not start on Java ${java.major} (${java.bin})`, 'use Java 11 or 17 (set JAVA_HOME)', out.split('\n').slice(-15).join('\n'));
    }
    writeRuntime(ctx.config, rt);
    ctx.runner.log(`Digdag ${DIGDAG_VERSION} ready from ${rt.source}, Java ${java.major}`);
  },
};
