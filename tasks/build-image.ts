// build-image: local — fetch the pinned Digdag runtime into the cache and check it starts;
// Kubernetes — build the container image (lib/kube.ts).
import { isMain, main } from '../lib/cli.ts';
import { detectJava, digdagArgv, CLIENT_JVM_OPTS, obtainRuntime, readRuntime, useDryRunRuntime, writeRuntime } from '../lib/digdag.ts';
import { UserError } from '../lib/errors.ts';
import { kubeImpls } from '../lib/kube.ts';
import { byTarget, type Ctx } from '../lib/pipeline.ts';
import { DIGDAG_VERSION } from '../lib/versions.ts';

const sourceInputs = (ctx: Ctx) => ({
  version: DIGDAG_VERSION,
  source: ctx.config.digdag.source,
  repo: ctx.config.digdag.source === 'maven' ? ctx.config.digdag.mavenRepoUrl : '',
  jar: ctx.config.digdag.jar,
  sha: ctx.config.digdag.jarSha256,
  java: ctx.config.digdag.javaHome,
});

export const buildImage = byTarget('build-image', `Get Digdag ${DIGDAG_VERSION}`, {
  local: {
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
  },
  kube: kubeImpls['build-image'],
});

if (isMain(import.meta.url)) await main([buildImage], 'tasks/build-image.ts');
