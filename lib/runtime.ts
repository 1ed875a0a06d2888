// The Digdag runtime both targets build from: what a rebuild depends on, the cached runtime (or
// a fresh fetch, checksums verified by lib/digdag.ts), and its jars. The local target runs it
// directly, the Kubernetes target copies it into the image's build context.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { cacheDir, obtainRuntime, readRuntime, writeRuntime, type Runtime } from './digdag.ts';
import { obtainJmxExporter } from './metrics.ts';
import type { Runner } from './runner.ts';
import { DIGDAG_VERSION, JMX_EXPORTER_SHA256, POSTGRES_EXPORTER_DEBIAN_VERSION } from './versions.ts';

/** The inputs of build-image on every target: a change of any of them means fetching again. */
export const runtimeInputs = (config: Config) => ({
  version: DIGDAG_VERSION,
  source: config.digdag.source,
  repo: config.digdag.source === 'maven' ? config.digdag.mavenRepoUrl : '',
  jar: config.digdag.jar,
  sha: config.digdag.jarSha256,
  java: config.digdag.javaHome,
  jmxAgent: JMX_EXPORTER_SHA256,
  queueExporter: POSTGRES_EXPORTER_DEBIAN_VERSION,
});

/** The cached runtime when it came from the configured source, else a fresh fetch (cached unless a dry run). */
export async function cachedRuntime(config: Config, runner: Runner): Promise<Runtime> {
  const cached = readRuntime(config);
  if (cached && cached.source.startsWith(config.digdag.source === 'maven' ? 'maven' : config.digdag.source)) return cached;
  const rt = await obtainRuntime(config, runner);
  await runner.change(undefined, () => writeRuntime(config, rt));
  return rt;
}

/** The Prometheus JMX exporter agent every Digdag process loads, next to the runtime in its cache (checksum pinned). */
export function obtainJmxAgent(config: Config, runner: Runner): Promise<string> {
  return obtainJmxExporter(cacheDir(config), config.digdag.mavenRepoUrl, runner);
}

/** The jars of a runtime (one fat jar, or Digdag's Maven jars). */
export function runtimeJars(rt: Runtime): string[] {
  if (rt.kind === 'jar') return [rt.path];
  return fs.readdirSync(rt.path).filter((f) => f.endsWith('.jar')).sort().map((f) => path.join(rt.path, f));
}
