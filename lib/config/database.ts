// Config section Database: an existing PostgreSQL by URL, or the project's own, and whether
// every Digdag pool fits under its max_connections.
import { UserError } from '../errors.ts';
import { processCount, type RolesConfig } from './roles.ts';
import { group, int, str, type Values, type VarSpec } from './spec.ts';

export const DATABASE_VARIABLES: readonly VarSpec[] = group('Database', [
  { name: 'DATABASE_URL', default: '', kind: str('postgresql://digdag:secret@10.0.0.5:5432/digdag', /^(postgres(ql)?:\/\/.+)?$/), secret: true,
    description: 'Use an existing PostgreSQL (e.g. Cloud SQL) with this role and database instead of starting one. Empty: the project runs its own.' },
  { name: 'POSTGRES_PORT', default: '0', kind: int(0, 65535, '54320'),
    description: 'Local target: port of the project-owned PostgreSQL on 127.0.0.1. 0: a free port is picked once and kept.' },
  { name: 'POSTGRES_BIN_DIR', default: '', kind: str('/usr/lib/postgresql/15/bin'),
    description: 'Local target: directory with initdb, pg_ctl and postgres. Empty: the newest /usr/lib/postgresql/*/bin, else pg_config --bindir.' },
  { name: 'POSTGRES_MAX_CONNECTIONS', default: '200', kind: int(20, 10000, '200'),
    description: 'max_connections of the project-owned PostgreSQL; all Digdag pools together must fit under it.' },
  { name: 'DB_NAME', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Database Digdag uses.' },
  { name: 'DB_USER', default: 'digdag', kind: str('digdag', /^[a-z_][a-z0-9_]{0,62}$/),
    description: 'Role Digdag connects as (NOSUPERUSER).' },
]);

export interface DbConfig {
  readonly externalUrl: string;
  readonly name: string;
  readonly user: string;
  readonly poolSize: number;
  readonly port: number;
  readonly binDir: string;
  readonly maxConnections: number;
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
  return {
    externalUrl: v.str('DATABASE_URL'),
    name: v.str('DB_NAME'),
    user: v.str('DB_USER'),
    poolSize: v.num('DB_POOL_SIZE'),
    port: v.num('POSTGRES_PORT'),
    binDir: v.str('POSTGRES_BIN_DIR'),
    maxConnections: v.num('POSTGRES_MAX_CONNECTIONS'),
  };
}
