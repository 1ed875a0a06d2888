// server.properties generator: the single source of Digdag's settings. One table (SERVER_SETTINGS)
// gives the local processes their files and the chart its template (files/server.properties,
// written by lib/kube/chart-files.ts), whose dynamic values are references to chart values.
// Secrets are rendered separately and never reach a ConfigMap.
import type { Config } from './config.ts';
import { metricsProperties } from './metrics.ts';
import { runsTasks, type Role } from './roles.ts';

export interface Placement {
  /** 127.0.0.1 on this machine; 0.0.0.0 in a pod. */
  bind: string;
  port: number;
  dbHost: string;
  dbPort: number;
  /** Database and role: from DATABASE_URL when given, else DB_NAME / DB_USER. */
  dbName: string;
  dbUser: string;
  /** log-server.local.path on the local target. */
  logDir?: string;
  /** server.jmx.port: loopback JMX, which HikariCP's pool metrics need (lib/metrics.ts). */
  jmxPort: number;
  /** agent.id: set on the local target; in a pod Digdag's default (pid@pod-name) already names the pod. */
  agentId?: string;
}

/** Keys whose values depend on where the process runs; everything else is identical across targets. */
export const PLACEMENT_KEYS = ['server.bind', 'server.port', 'database.host', 'database.port', 'log-server.local.path', 'agent.id', 'server.jmx.port'] as const;

type Value = string | number | boolean;

/** Every input a setting is made of: a Config + Placement gives values, the chart gives references. */
export interface SettingInputs {
  bind: Value; port: Value; dbHost: Value; dbPort: Value; dbName: Value; dbUser: Value;
  poolSize: Value; minPoolSize: Value; lockExpireInterval: Value; maxTaskThreads: Value;
  heartbeatInterval: Value; lockRetentionTime: Value; taskMaxRun: Value; jmxPort: Value;
  gcsBucket: Value; gcsPath: Value; logDir: Value; agentId: Value;
}

/** The settings of every Digdag server process, in file order. */
export function serverSettings(v: SettingInputs): [string, Value][] {
  return [
    ['server.bind', v.bind],
    ['server.port', v.port],
    ['database.type', 'postgresql'],
    ['database.host', v.dbHost],
    ['database.port', v.dbPort],
    ['database.database', v.dbName],
    ['database.user', v.dbUser],
    // Digdag's default pool is CPUs x 32 and fixed-size: explicit, or a few pods exhaust max_connections.
    ['database.maximumPoolSize', v.poolSize],
    ['database.minimumPoolSize', v.minPoolSize],
    // Migrated once by init-db; roles starting together on an empty DB would race otherwise.
    ['database.migrate', false],
    ['database.queue.expireLockInterval', v.lockExpireInterval],
    ['agent.max-task-threads', v.maxTaskThreads],
    ['agent.heartbeat-interval', v.heartbeatInterval],
    ['agent.lock-retention-time', v.lockRetentionTime],
    // No Docker or ECS inside the pods or on this machine: run sh> directly in the agent.
    ['agent.command_executor.type', 'simple'],
    // Several executors share the queue: random fetch spreads them over READY tasks.
    ['executor.enqueue_random_fetch', true],
    // The most tasks one attempt may have (WORKFLOW_MAX_TASKS); Digdag refuses more with "Too many tasks".
    ['executor.task_max_run', v.taskMaxRun],
    // Every server process exports its metrics (executor, agent, api, db categories + HikariCP).
    ...(metricsProperties(v.jmxPort as number) as [string, Value][]),
  ];
}

/** Settings of a task-running process on the local target (pods keep Digdag's pid@pod-name). */
export const agentIdSettings = (v: SettingInputs): [string, Value][] => [['agent.id', v.agentId]];

/** Where task logs go, per LOG_SERVER. */
export function logSettings(server: Config['logs']['server'], v: SettingInputs): [string, Value][] {
  switch (server) {
    case 'local':
      return [['log-server.type', 'local'], ['log-server.local.path', v.logDir]];
    case 'gcs':
      // No credentials path: Application Default Credentials (mounted key or Workload Identity).
      return [['log-server.type', 'gcs'], ['log-server.gcs.bucket', v.gcsBucket], ['log-server.gcs.path', v.gcsPath], ['log-server.gcs.direct_download', false]];
    case 'none':
      return [];
  }
}

/** Settings of `digdag migrate run|check`: the database only (the secret part is added apart). */
export function migrateSettings(v: Pick<SettingInputs, 'dbHost' | 'dbPort' | 'dbName' | 'dbUser'>): [string, Value][] {
  return [
    ['database.type', 'postgresql'],
    ['database.host', v.dbHost],
    ['database.port', v.dbPort],
    ['database.database', v.dbName],
    ['database.user', v.dbUser],
    ['database.maximumPoolSize', 2],
    ['database.minimumPoolSize', 1],
  ];
}

const serverHeader = (role: string) => `# digdag-ha: ${role} role. Generated from the digdag-ha configuration; do not edit.`;
const MIGRATE_HEADER = '# digdag-ha: schema migration. Generated.';
const lines = (p: [string, Value][]) => p.map(([k, v]) => `${k} = ${v}`);

function inputs(config: Config, at: Placement): SettingInputs {
  return {
    bind: at.bind, port: at.port, dbHost: at.dbHost, dbPort: at.dbPort, dbName: at.dbName, dbUser: at.dbUser,
    poolSize: config.db.poolSize, minPoolSize: Math.min(2, config.db.poolSize), lockExpireInterval: config.agent.lockExpireInterval,
    maxTaskThreads: config.agent.maxTaskThreads, heartbeatInterval: config.agent.heartbeatInterval, lockRetentionTime: config.agent.lockRetentionTime,
    taskMaxRun: config.executor.taskMaxRun, jmxPort: at.jmxPort, gcsBucket: config.logs.gcsBucket, gcsPath: config.logs.gcsPath, logDir: at.logDir ?? '/var/log/digdag/tasks', agentId: at.agentId ?? '',
  };
}

export function serverProperties(config: Config, role: Role, at: Placement): string {
  const v = inputs(config, at);
  const p = serverSettings(v);
  if (at.agentId && runsTasks(role)) p.push(...agentIdSettings(v));
  p.push(...logSettings(config.logs.server, v));
  return [serverHeader(role), ...lines(p), ''].join('\n');
}

/** Properties for `digdag migrate run|check`: the database only (the secret part is added apart). */
export function migrateProperties(at: Pick<Placement, 'dbHost' | 'dbPort' | 'dbName' | 'dbUser'>): string {
  return [MIGRATE_HEADER, ...lines(migrateSettings(at)), ''].join('\n');
}

/**
 * The chart's inputs: references to its values (Helm template expressions, rendered with `tpl`
 * per role, `.Role` naming it). Pods bind every address on the pod port; the chart places the database.
 */
export function chartSettingInputs(podPort: number): SettingInputs {
  return {
    bind: '0.0.0.0', port: podPort,
    dbHost: '{{ include "digdag-ha.dbHost" . }}', dbPort: '{{ include "digdag-ha.dbPort" . }}',
    dbName: '{{ .Values.database.name }}', dbUser: '{{ .Values.database.user }}',
    poolSize: '{{ .Values.database.poolSize }}', minPoolSize: '{{ min 2 .Values.database.poolSize }}',
    lockExpireInterval: '{{ .Values.database.expireLockInterval }}', maxTaskThreads: '{{ .Values.agent.maxTaskThreads }}',
    heartbeatInterval: '{{ .Values.agent.heartbeatInterval }}', lockRetentionTime: '{{ .Values.agent.lockRetentionTime }}',
    taskMaxRun: '{{ .Values.executor.taskMaxRun }}', jmxPort: '{{ .Values.metrics.jmxPort }}',
    gcsBucket: '{{ required "logs.gcsBucket is required with logs.server=gcs" .Values.logs.gcsBucket }}', gcsPath: '{{ .Values.logs.gcsPath }}',
    logDir: '', agentId: '',
  };
}

/** The chart's server.properties template (every role; log settings per logs.server). */
export function chartServerPropertiesTemplate(podPort: number): string {
  const v = chartSettingInputs(podPort);
  return [
    serverHeader('{{ .Role }}'),
    ...lines(serverSettings(v)),
    '{{- if eq .Values.logs.server "gcs" }}',
    ...lines(logSettings('gcs', v)),
    '{{- else if ne .Values.logs.server "none" }}',
    '{{- fail "logs.server must be none or gcs (pods share no directory for local logs)" }}',
    '{{- end }}',
    '',
  ].join('\n');
}

/** The chart's migrate.properties template. */
export function chartMigratePropertiesTemplate(): string {
  return [MIGRATE_HEADER, ...lines(migrateSettings(chartSettingInputs(0))), ''].join('\n');
}

/** The secret part, appended to the properties on disk (0600) or mounted from a Secret. */
export function secretProperties(dbPassword: string, encryptionKey: string): string {
  return `database.password = ${dbPassword}\ndigdag.secret-encryption-key = ${encryptionKey}\n`;
}

export function parseProperties(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const i = t.search(/[=:]/);
    if (i > 0) m.set(t.slice(0, i).trim(), t.slice(i + 1).trim());
  }
  return m;
}
