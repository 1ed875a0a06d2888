// server.properties generator: the single source of Digdag's settings for the local processes
// and the Kubernetes ConfigMap. Secrets are rendered separately and never reach a ConfigMap.
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

export function serverProperties(config: Config, role: Role, at: Placement): string {
  const p: [string, string | number | boolean][] = [
    ['server.bind', at.bind],
    ['server.port', at.port],
    ['database.type', 'postgresql'],
    ['database.host', at.dbHost],
    ['database.port', at.dbPort],
    ['database.database', at.dbName],
    ['database.user', at.dbUser],
    // Digdag's default pool is CPUs x 32 and fixed-size: explicit, or a few pods exhaust max_connections.
    ['database.maximumPoolSize', config.db.poolSize],
    ['database.minimumPoolSize', Math.min(2, config.db.poolSize)],
    // Migrated once by init-db; roles starting together on an empty DB would race otherwise.
    ['database.migrate', false],
    ['database.queue.expireLockInterval', config.agent.lockExpireInterval],
    ['agent.max-task-threads', config.agent.maxTaskThreads],
    ['agent.heartbeat-interval', config.agent.heartbeatInterval],
    ['agent.lock-retention-time', config.agent.lockRetentionTime],
    // No Docker or ECS inside the pods or on this machine: run sh> directly in the agent.
    ['agent.command_executor.type', 'simple'],
    // Several executors share the queue: random fetch spreads them over READY tasks.
    ['executor.enqueue_random_fetch', true],
    // Every server process exports its metrics (executor, agent, api, db categories + HikariCP).
    ...metricsProperties(at.jmxPort),
  ];
  if (at.agentId && runsTasks(role)) p.push(['agent.id', at.agentId]);
  switch (config.logs.server) {
    case 'local':
      p.push(['log-server.type', 'local'], ['log-server.local.path', at.logDir ?? '/var/log/digdag/tasks']);
      break;
    case 'gcs':
      // No credentials path: Application Default Credentials (mounted key or Workload Identity).
      p.push(['log-server.type', 'gcs'], ['log-server.gcs.bucket', config.logs.gcsBucket], ['log-server.gcs.path', config.logs.gcsPath], ['log-server.gcs.direct_download', false]);
      break;
    case 'none':
      break;
  }
  return [`# digdag-ha: ${role} role. Generated from the digdag-ha configuration; do not edit.`, ...p.map(([k, v]) => `${k} = ${v}`), ''].join('\n');
}

/** Properties for `digdag migrate run|check`: the database only (the secret part is added apart). */
export function migrateProperties(at: Pick<Placement, 'dbHost' | 'dbPort' | 'dbName' | 'dbUser'>): string {
  return [
    '# digdag-ha: schema migration. Generated.',
    'database.type = postgresql',
    `database.host = ${at.dbHost}`,
    `database.port = ${at.dbPort}`,
    `database.database = ${at.dbName}`,
    `database.user = ${at.dbUser}`,
    'database.maximumPoolSize = 2',
    'database.minimumPoolSize = 1',
    '',
  ].join('\n');
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
