// Config section Database: an existing PostgreSQL by URL, or the project's own, and whether
// every Digdag pool fits under its max_connections.
import { UserError } from '../errors.ts';
import { processCount, type RolesConfig } from './roles.ts';
import { bool, group, int, oneOf, str, type Values, type VarSpec } from './spec.ts';

export const DATABASE_VARIABLES: readonly VarSpec[] = group('Database', [
  { name: 'DATABASE_URL', default: '', kind: str('postgresql://digdag:secret@10.0.0.5:5432/digdag', /^(postgres(ql)?:\/\/.+)?$/), secret: true,
    description: 'Use an existing PostgreSQL (e.g. Cloud SQL) with this role and database instead of starting one. Empty: the project runs its own.' },
  { name: 'CLOUDSQL_INSTANCE', default: '', kind: str('my-project:asia-northeast1:digdag-pg', /^([a-z][-a-z0-9.:]*:[a-z]+-[a-z]+[0-9]+:[a-z][-a-z0-9]*)?$/),
    description: 'Kubernetes targets: reach this Cloud SQL instance (PROJECT:REGION:INSTANCE) through a Cloud SQL Auth Proxy v2 sidecar in every Digdag pod and the migration Job, authenticated as CLOUDSQL_PROXY_CREDENTIALS says; DATABASE_URL then names the proxy, postgresql://digdag@127.0.0.1:5432/digdag (tasks/gcp.ts up prints both). Empty: no proxy.' },
  { name: 'CLOUDSQL_PRIVATE_IP', default: 'false', kind: bool,
    description: 'With CLOUDSQL_INSTANCE: the proxy connects to the instance\'s private IP (the cluster\'s VPC) instead of its public one.' },
  { name: 'CLOUDSQL_PROXY_CREDENTIALS', default: 'workload-identity', kind: oneOf(['workload-identity', 'key']),
    description: 'With CLOUDSQL_INSTANCE: how the proxy authenticates to Google. workload-identity (GKE\'s default: the digdag Kubernetes service account acts as GKE_GCP_SERVICE_ACCOUNT; no key anywhere) or key (a cluster without Workload Identity: the key of GCP_SA_KEY_FILE, from its Secret, mounted into the proxy container only).' },
  { name: 'CLOUDSQL_INSTANCE_CIDRS', default: '', kind: str('10.20.0.0/16', /^[0-9./,:a-fA-F]*$/),
    description: 'With CLOUDSQL_INSTANCE: addresses of the instance the proxy may dial on port 3307 besides EGRESS_CIDRS, which leave the private ranges out — with CLOUDSQL_PRIVATE_IP=true, its private IP or the private services access range. Empty: none.' },
  { name: 'POSTGRES_PORT', default: '0', kind: int(0, 65535, '54320'),
    description: 'Local target: port of the project-owned PostgreSQL on 127.0.0.1. 0: a free port is picked once and kept.' },
  { name: 'POSTGRES_BIN_DIR', default: '', kind: str('/usr/lib/postgresql/15/bin'),
    description: 'Local target: directory with initdb, pg_ctl and postgres. Empty: the newest /usr/lib/postgresql/*/bin, else pg_config --bindir.' },
  { name: 'POSTGRES_MAX_CONNECTIONS', default: '200', kind: int(20, 10000, '200'),
    description: 'max_connections of the project-owned PostgreSQL; all Digdag pools together must fit under it.' },
  { name: 'POSTGRES_STAT_STATEMENTS', default: 'false', kind: bool,
    description: 'Local target: the project-owned PostgreSQL loads pg_stat_statements (shared_preload_libraries; init-db creates the extension in DB_NAME), so the pg_stat_statements view shows what Digdag\'s statements cost. Off by default: it needs the contrib library beside the server (Debian ships it with postgresql-15) and adds a little work to every statement. npm run bench turns it on.' },
  { name: 'POSTGRES_MEMBERS', default: '', kind: str('3', /^\d*$/),
    description: 'Kubernetes: members of the in-cluster PostgreSQL. 2 or more: a Patroni cluster that fails over by itself (its image must contain Patroni, as the one build-image makes on cluster). 1: one plain PostgreSQL, NOT highly available (a laptop). Empty: 3 on cluster, 1 on minikube/gke (postgres:15-alpine has no Patroni). The local target always runs one.' },
  { name: 'POSTGRES_SYNC', default: '', kind: oneOf(['', 'on', 'off']),
    description: 'Kubernetes, 2 or more members: synchronous replication (on: a commit returns once a standby has it, so a failover loses nothing committed; costs a round trip per commit) or off (asynchronous: a failover may drop the last commits). Empty: on.' },
  { name: 'DB_NAME', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Database Digdag uses.' },
  { name: 'DB_USER', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Role Digdag connects as (NOSUPERUSER).' },
]);

export interface DbConfig {
  readonly externalUrl: string;
  /** Cloud SQL instance connection name the Auth Proxy sidecar serves on 127.0.0.1; '' = none. */
  readonly cloudSqlInstance: string;
  readonly cloudSqlPrivateIp: boolean;
  /** How the proxy authenticates: Workload Identity, or the key of GCP_SA_KEY_FILE. */
  readonly cloudSqlCredentials: 'workload-identity' | 'key';
  /** The instance's addresses the proxy may dial on 3307 besides EGRESS_CIDRS. */
  readonly cloudSqlInstanceCidrs: readonly string[];
  readonly name: string;
  readonly user: string;
  readonly poolSize: number;
  readonly port: number;
  readonly binDir: string;
  readonly maxConnections: number;
  /** Local target: the owned server loads pg_stat_statements and init-db creates the extension. */
  readonly statStatements: boolean;
  /** Kubernetes: members of the in-cluster PostgreSQL (1: plain, not HA; 2+: Patroni). */
  readonly members: number;
  /** Kubernetes, members >= 2: Patroni's synchronous mode. */
  readonly synchronous: boolean;
}

/** Members of the in-cluster PostgreSQL and its replication mode; refuses what cannot work. */
function membersOf(v: Values): { members: number; synchronous: boolean } {
  const raw = v.str('POSTGRES_MEMBERS');
  const members = raw === '' ? (v.target === 'cluster' ? 3 : 1) : Number(raw);
  if (members < 1 || members > 9) {
    throw new UserError(`POSTGRES_MEMBERS=${raw}: the in-cluster PostgreSQL needs 1 to 9 members`, 'set POSTGRES_MEMBERS=3 (highly available) or POSTGRES_MEMBERS=1 (one plain PostgreSQL, not highly available)');
  }
  const sync = v.str('POSTGRES_SYNC');
  if (sync === 'on' && members < 2 && !v.str('DATABASE_URL')) {
    throw new UserError(`POSTGRES_SYNC=on with POSTGRES_MEMBERS=${members}: synchronous replication needs a standby`, 'set POSTGRES_MEMBERS=3, or leave POSTGRES_SYNC empty (one member has nothing to replicate to)');
  }
  return { members, synchronous: members >= 2 && sync !== 'off' };
}

export function databaseConfig(v: Values, roles: Pick<RolesConfig, 'replicas'>): DbConfig {
  const processes = processCount(roles);
  const connections = processes * v.num('DB_POOL_SIZE') + 1; // + the migration client
  if (!v.str('DATABASE_URL') && connections > v.num('POSTGRES_MAX_CONNECTIONS') - 5) {
    throw new UserError(
      `${processes} Digdag processes x DB_POOL_SIZE=${v.str('DB_POOL_SIZE')} need ${connections} connections; POSTGRES_MAX_CONNECTIONS=${v.str('POSTGRES_MAX_CONNECTIONS')} leaves too few`,
      `lower DB_POOL_SIZE or a replica count, or raise POSTGRES_MAX_CONNECTIONS to ${connections + 10}`,
    );
  }
  const cloudSqlInstance = v.str('CLOUDSQL_INSTANCE');
  if (cloudSqlInstance) {
    if (v.isLocal) {
      throw new UserError('CLOUDSQL_INSTANCE works on the Kubernetes targets (a sidecar in each pod); the local target has none', 'run cloud-sql-proxy yourself and set DATABASE_URL=postgresql://digdag@127.0.0.1:5432/digdag, or leave CLOUDSQL_INSTANCE empty');
    }
    let host = '';
    try {
      host = new URL(v.str('DATABASE_URL')).hostname;
    } catch {
      // empty or not a URL: refused below
    }
    if (host !== '127.0.0.1' && host !== 'localhost') {
      throw new UserError(`CLOUDSQL_INSTANCE=${cloudSqlInstance} needs DATABASE_URL to name the proxy on 127.0.0.1`, 'set DATABASE_URL=postgresql://digdag@127.0.0.1:5432/digdag (the password comes from the generated secrets; npx tsx tasks/gcp.ts up prints the values)');
    }
  }
  const cloudSqlCredentials = v.str('CLOUDSQL_PROXY_CREDENTIALS') as DbConfig['cloudSqlCredentials'];
  if (cloudSqlInstance && cloudSqlCredentials === 'key' && !v.str('GCP_SA_KEY_FILE')) {
    throw new UserError('CLOUDSQL_PROXY_CREDENTIALS=key needs GCP_SA_KEY_FILE: the proxy authenticates with that key (its Secret digdag-gcp-key)', 'set GCP_SA_KEY_FILE to the JSON key of a service account with roles/cloudsql.client, or CLOUDSQL_PROXY_CREDENTIALS=workload-identity on GKE');
  }
  const cloudSqlInstanceCidrs = v.str('CLOUDSQL_INSTANCE_CIDRS').split(',').map((c) => c.trim()).filter(Boolean);
  for (const c of cloudSqlInstanceCidrs) {
    if (!/^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$|^[0-9a-fA-F:]+\/\d{1,3}$/.test(c)) {
      throw new UserError(`CLOUDSQL_INSTANCE_CIDRS has ${JSON.stringify(c)}, which is not a CIDR`, 'set CLOUDSQL_INSTANCE_CIDRS to the instance\'s address as 10.20.0.3/32, or its private services access range as 10.20.0.0/16');
    }
  }
  return {
    externalUrl: v.str('DATABASE_URL'),
    cloudSqlInstance,
    cloudSqlPrivateIp: v.str('CLOUDSQL_PRIVATE_IP') === 'true',
    cloudSqlCredentials,
    cloudSqlInstanceCidrs,
    name: v.str('DB_NAME'),
    user: v.str('DB_USER'),
    poolSize: v.num('DB_POOL_SIZE'),
    port: v.num('POSTGRES_PORT'),
    binDir: v.str('POSTGRES_BIN_DIR'),
    maxConnections: v.num('POSTGRES_MAX_CONNECTIONS'),
    statStatements: v.str('POSTGRES_STAT_STATEMENTS') === 'true',
    ...membersOf(v),
  };
}
