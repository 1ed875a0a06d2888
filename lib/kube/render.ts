// Renders the Kubernetes objects for a Config: chart/digdag-ha (the one source of every object)
// through `helm template` with the values lib/kube/values.ts derives from the config, written to
// the state dir. Client-side and offline; nothing is applied here.
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ROOT } from '../paths.ts';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';
import type { Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import type { KubeObject } from '../kube-object.ts';
import { valuesFromConfig, variablesIn, type ChartValues } from './values.ts';

// Where the pods reach the database and how an image reference splits: the values' business, used by the tasks too.
export { dbLocation, IN_CLUSTER_DB, splitImage } from './values.ts';
// The object type lives in the core (lib/kube-object.ts); re-exported for the renderer's callers.
export type { KubeObject } from '../kube-object.ts';

export const CHART_DIR = path.join(ROOT, 'chart', 'digdag-ha');
/** The release name the toolkit renders as (label app.kubernetes.io/instance). */
export const RELEASE = 'digdag';
export const POD_PORT = 65432;
/** Private ranges carved out of the HTTPS egress rule, so tasks cannot reach pods (the chart reads them). */
export const PRIVATE_CIDRS = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'] as const;
/** The helm the chart is developed and tested with (.ci/install builds v3.16.4: HELM_VERSION there). */
export const HELM_VERSION = '3.16.4';

export function renderDir(config: Config): string {
  return path.join(config.stateDir, 'helm');
}

/** `helm template` argv: the toolkit's release in the configured namespace, without the helm test hooks. */
export function helmTemplateArgv(namespace: string, valuesFile: string): string[] {
  return ['helm', 'template', RELEASE, CHART_DIR, '--namespace', namespace, '--skip-tests', '-f', valuesFile];
}

/** A refusal of the chart (`fail`, the values schema) as the user should read it: helm's prefixes stripped. */
export function chartRefusal(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean).filter((l) => !/^(WARNING|walk\.go)/.test(l));
  const msg = (lines.find((l) => l.startsWith('Error:')) ?? lines.join(' '))
    .replace(/^Error:\s*/, '')
    .replace(/^execution error at \([^)]*\):\s*/, '')
    .replace(/^template: [^:]+(:\d+)*(:\d+)?: executing "[^"]*" at <[^>]*>:\s*error calling \w+:\s*/, '')
    .replace(/^values don't meet the specifications of the schema\(s\) in the following chart\(s\):\s*digdag-ha:\s*/, 'the chart\'s values schema refuses: ');
  return msg;
}

/** Renders the chart with these values; a refusal (`fail`, schema) is a UserError with the chart's message. */
export async function renderChart(config: Config, runner: Runner, values: ChartValues): Promise<{ yaml: string; objects: KubeObject[] }> {
  const dir = ensureDir(renderDir(config));
  const valuesFile = path.join(dir, 'values.yaml');
  fs.writeFileSync(valuesFile, stringify(values));
  const res = await runner.run({ argv: helmTemplateArgv(config.k8s.namespace, valuesFile), quiet: true, nothrow: true });
  // zx runs the command through a shell: a missing program is exit 127.
  if (res.code === 127) throw helmMissing();
  if (res.code !== 0) {
    const msg = chartRefusal(res.stderr);
    const vars = variablesIn(msg);
    throw new UserError(
      `the chart refuses this configuration: ${msg}`,
      vars.length ? `change the toolkit variables behind those values (${vars.join(', ')}); the values are in ${valuesFile}` : `the values are in ${valuesFile}`,
    );
  }
  return { yaml: res.stdout, objects: parseObjects(res.stdout) };
}

function helmMissing(): UserError {
  return new UserError(`helm is not on PATH: the Kubernetes objects are rendered from chart/digdag-ha with \`helm template\``, `run \`bash .ci/install\` (builds helm into $(go env GOPATH)/bin; put that on PATH), or install helm ${HELM_VERSION}`);
}

/** Writes this config's values to the state dir and renders the chart; returns the parsed objects and the YAML. */
export async function renderManifests(config: Config, runner: Runner): Promise<{ yaml: string; objects: KubeObject[] }> {
  return renderChart(config, runner, valuesFromConfig(config));
}

export function parseObjects(yamlText: string): KubeObject[] {
  return parseAllDocuments(yamlText)
    .map((d) => d.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => !!o);
}
