// build-image on the local target: fetch the pinned Digdag runtime into the cache and check it
// starts; fetch the JMX exporter agent (checksum pinned) next to it and the queue exporter
// (Debian's postgres_exporter, unpacked into the monitoring cache).
import fs from 'node:fs';
import { detectJava, digdagArgv, CLIENT_JVM_OPTS, obtainRuntime, readRuntime, useDryRunRuntime, writeRuntime } from '../digdag.ts';
import { UserError } from '../errors.ts';
import { obtainQueueExporter, queueExporterBin } from '../metrics.ts';
import type { Impl } from '../pipeline.ts';
import { obtainJmxAgent, runtimeInputs } from '../runtime.ts';
import { DIGDAG_VERSION } from '../versions.ts';
import { changesApplied } from '../runner.ts';
import { DIGDAG_PATCH_SOURCES, DIGDAG_PATCHES_WHAT, digdagPatchesCurrent, compileDigdagPatches, localDigdagPatchesDir } from '../digdag-patches.ts';

export const buildImage: Impl = {
  inputs: (ctx) => ({ values: { ...runtimeInputs(ctx.config), digdagPatches: ctx.config.digdag.patches }, files: ctx.config.digdag.patches ? DIGDAG_PATCH_SOURCES : [] }),
  healthy: async (ctx) => {
    const rt = readRuntime(ctx.config);
    if (!rt?.jmxAgent || !fs.existsSync(rt.jmxAgent) || !fs.existsSync(queueExporterBin())) return false;
    if (ctx.config.digdag.patches && !digdagPatchesCurrent(rt, localDigdagPatchesDir(ctx.config))) return false;
    return `Digdag ${rt.version} cached (${rt.source}), JMX exporter agent and queue exporter cached${ctx.config.digdag.patches ? ', digdag-ha\'s patches compiled' : ''}`;
  },
  run: async (ctx) => {
    const java = await detectJava(ctx.config, ctx.runner);
    const rt = { ...(await obtainRuntime(ctx.config, ctx.runner)), jmxAgent: await obtainJmxAgent(ctx.config, ctx.runner) };
    await obtainQueueExporter(ctx.runner);
    if (!changesApplied(ctx.runner)) {
      // Nothing was fetched: later tasks of this dry run show their commands with where it would be.
      if (!readRuntime(ctx.config)) useDryRunRuntime(ctx.config, rt);
      return;
    }
    // Prove the runtime starts on this Java before anything depends on it.
    const res = await ctx.runner.run({ argv: digdagArgv(java, rt, CLIENT_JVM_OPTS, ['--version']), nothrow: true });
    const out = `${res.stdout}${res.stderr}`;
    if (res.code !== 0 || !out.includes(DIGDAG_VERSION)) {
      throw new UserError(`Digdag does not start on Java ${java.major} (${java.bin})`, 'use Java 11 or 17 (set JAVA_HOME)', out.split('\n').slice(-15).join('\n'));
    }
    if (ctx.config.digdag.patches) {
      const how = await compileDigdagPatches(ctx.runner, java, rt, localDigdagPatchesDir(ctx.config));
      ctx.runner.log(`digdag-ha's patches to Digdag (${DIGDAG_PATCHES_WHAT}): ${how}`);
    }
    writeRuntime(ctx.config, rt);
    ctx.runner.log(`Digdag ${DIGDAG_VERSION} ready from ${rt.source}, Java ${java.major}; JMX exporter agent ${rt.jmxAgent}`);
  },
};

