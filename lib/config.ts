// Typed configuration, loaded from defaults < .env < environment < --set flags, validated before
// anything runs, then frozen. Each subsystem's section (lib/config/*.ts) declares its variables,
// derives its part and checks its own rules; this module only loads, combines and freezes.
import fs from 'node:fs';
import path from 'node:path';
import dotenv from 'dotenv';
import { UserError } from './errors.ts';
import { CLUSTER_SECTION_VARIABLES, clusterSection, type ClusterSection } from './config/cluster.ts';
import { DATABASE_VARIABLES, databaseConfig, type DbConfig } from './config/database.ts';
import { GCP_HOME_VARIABLES, gcpHomeSection, type GcpHomeSection } from './config/gcp.ts';
import { chooseTarget, GENERAL_VARIABLES, generalConfig, type GeneralConfig } from './config/general.ts';
import { KUBERNETES_VARIABLES, kubernetesConfig, type K8sConfig } from './config/kubernetes.ts';
import { LOCAL_VARIABLES, localConfig, type LocalConfig } from './config/local.ts';
import { LOGS_VARIABLES, logsConfig, type GcpConfig, type LogsConfig } from './config/logs.ts';
import { METRICS_VARIABLES, metricsConfig, type MetricsConfig } from './config/metrics.ts';
import { ROLES_VARIABLES, rolesConfig, type RolesConfig } from './config/roles.ts';
import { RUNTIME_VARIABLES, runtimeConfig, type DigdagConfig } from './config/runtime.ts';
import { SECURITY_VARIABLES, securityConfig, type SecurityConfig } from './config/security.ts';
import { parseValue, Values, type VarSpec } from './config/spec.ts';
import { WORKFLOWS_VARIABLES, workflowsConfig, type WorkflowsConfig } from './config/workflows.ts';

export { CLUSTER_BASE_IMAGE_DEFAULT } from './config/cluster.ts';
export { CLUSTER_POSTGRES_IMAGE, PUBLIC_POSTGRES_IMAGE } from './config/kubernetes.ts';
export { TARGETS, type Target, type VarSpec } from './config/spec.ts';

/** Every variable the project reads, section by section. .env.example is generated from it. */
export const VARIABLES: readonly VarSpec[] = [
  ...GENERAL_VARIABLES,
  ...RUNTIME_VARIABLES,
  ...ROLES_VARIABLES,
  ...DATABASE_VARIABLES,
  ...WORKFLOWS_VARIABLES,
  ...LOCAL_VARIABLES,
  ...LOGS_VARIABLES,
  ...GCP_HOME_VARIABLES,
  ...KUBERNETES_VARIABLES,
  ...SECURITY_VARIABLES,
  ...METRICS_VARIABLES,
  ...CLUSTER_SECTION_VARIABLES,
];

export interface Config extends GeneralConfig, RolesConfig {
  /** Every variable's checked value, by name. */
  readonly vars: Readonly<Record<string, string>>;
  readonly digdag: DigdagConfig;
  readonly db: DbConfig;
  readonly workflows: WorkflowsConfig;
  readonly local: LocalConfig;
  readonly logs: LogsConfig;
  readonly gcp: GcpConfig;
  /** What tasks/gcp.ts provisions in GCP_PROJECT (lib/gcp/). */
  readonly gcpHome: GcpHomeSection;
  readonly k8s: K8sConfig;
  readonly metrics: MetricsConfig;
  /** Security block (see INTEGRATION.md). */
  readonly security: SecurityConfig;
  /** The project's own test cluster (lib/cluster/config.ts derives the rest from it). */
  readonly cluster: ClusterSection;
}

export interface LoadOptions {
  root: string;
  env: Record<string, string | undefined>;
  /** --set NAME=VALUE and --target, already parsed. */
  overrides?: Record<string, string>;
  /** Path of the dotenv file; default <root>/.env. Missing file is fine. */
  envFile?: string;
  /** Answers "do docker and minikube work here?" for target auto-detection. */
  detectKube?: () => boolean;
}

const byName = new Map(VARIABLES.map((v) => [v.name, v]));

/** Each variable's value from the strongest of default < .env < environment < --set, checked against its declaration. */
function readVariables(opts: LoadOptions): Record<string, string> {
  const envFile = opts.envFile ?? path.join(opts.root, '.env');
  let fileVars: Record<string, string> = {};
  if (fs.existsSync(envFile)) fileVars = dotenv.parse(fs.readFileSync(envFile));
  for (const name of Object.keys(fileVars)) {
    if (!byName.has(name)) {
      throw new UserError(`${path.basename(envFile)} sets ${name}, which digdag-ha does not know`, `remove it or fix the name; the known variables are listed in .env.example`);
    }
  }
  for (const name of Object.keys(opts.overrides ?? {})) {
    if (!byName.has(name)) throw new UserError(`--set ${name}: unknown variable`, 'see .env.example for the variable names');
  }
  const vars: Record<string, string> = {};
  for (const spec of VARIABLES) {
    let raw = spec.default;
    let source = 'default';
    if (fileVars[spec.name] !== undefined) [raw, source] = [fileVars[spec.name]!, path.basename(envFile)];
    if (opts.env[spec.name] !== undefined && opts.env[spec.name] !== '') [raw, source] = [opts.env[spec.name]!, 'environment'];
    if (opts.overrides?.[spec.name] !== undefined) [raw, source] = [opts.overrides[spec.name]!, 'command line'];
    vars[spec.name] = parseValue(spec, raw, source);
  }
  return vars;
}

/** Reads and validates everything; throws UserError naming the variable on the first bad value. */
export function loadConfig(opts: LoadOptions): Config {
  const vars = readVariables(opts);
  const { target, targetReason } = chooseTarget(vars, opts.detectKube);
  const v = new Values(Object.freeze(vars), target, opts.root, opts.env);
  const roles = rolesConfig(v);
  const local = localConfig(v, roles);
  const cluster = clusterSection(v);
  const config: Config = {
    ...generalConfig(v, targetReason),
    vars: v.vars,
    digdag: runtimeConfig(v),
    ...roles,
    db: databaseConfig(v, roles),
    workflows: workflowsConfig(v),
    local,
    ...logsConfig(v),
    gcpHome: gcpHomeSection(v),
    k8s: kubernetesConfig(v, cluster.baseImage),
    metrics: metricsConfig(v, roles, local),
    security: securityConfig(v),
    cluster,
  };
  return deepFreeze(config);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** The .env.example text, generated from VARIABLES so the two cannot drift. */
export function renderEnvExample(): string {
  const lines = ['# digdag-ha configuration. Copy to .env and edit; the environment and --set NAME=VALUE override it.', '# Every value below is the default.', ''];
  let group = '';
  for (const v of VARIABLES) {
    if (v.group !== group) {
      group = v.group;
      lines.push(`# --- ${group} ---`);
    }
    lines.push(`# ${v.description}`, `${v.name}=${v.default}`, '');
  }
  return lines.join('\n');
}
