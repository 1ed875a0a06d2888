// PostgreSQL for the local target: a server owned by the project (data dir in the state dir,
// loopback only) run as a non-root OS user when we are root, or an existing server by URL.
// As root, when that user cannot reach the state dir (a checkout under /root or another 0700
// home), the server's directory moves to /var/lib/digdag-ha/<hash of the state dir>/.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { UserError } from './errors.ts';
import type { Runner } from './runner.ts';
import { isAlive, listProcesses, unregisterProcess, waitFor, type ProcessEntry } from './processes.ts';
import { pickFreePort } from './ports.ts';
import { registerSecret } from './secrets.ts';
import { ensureDir } from './state.ts';

export interface DbEndpoint {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  /** The project runs this server (false: DATABASE_URL). */
  owned: boolean;
}

export function parseDatabaseUrl(url: string): Omit<DbEndpoint, 'owned'> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UserError('DATABASE_URL is not a URL', 'set DATABASE_URL=postgresql://digdag:PASSWORD@HOST:5432/digdag');
  }
  const out = {
    host: u.hostname,
    port: Number(u.port || 5432),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
  };
  if (!out.host || !out.database || !out.user) {
    throw new UserError('DATABASE_URL needs a host, a user and a database', 'set DATABASE_URL=postgresql://digdag:PASSWORD@HOST:5432/digdag');
  }
  registerSecret(out.password);
  return out;
}

export interface LocalPostgres {
  binDir: string;
  /** The server's own directory (data, socket, log): in the state dir, or outside it (external). */
  dir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  /** Always in the state dir: written by us, read by us. */
  portFile: string;
  /** OS user the server runs as: ourselves, or 'postgres' when we are root (it refuses root). */
  osUser: string | undefined;
  /** dir is outside the state dir (root, state dir unreachable for osUser); purge deletes it. */
  external: boolean;
}

/** Where root keeps PostgreSQL directories the postgres user could not reach in the state dir. */
export const ROOT_POSTGRES_BASE = '/var/lib/digdag-ha';
const PG_OS_USER = 'postgres';
const isRoot = () => process.getuid?.() === 0;

/** /var/lib/digdag-ha/<hash>: one directory per state dir, so two checkouts never share data. */
export function externalPostgresDir(stateDir: string, base = ROOT_POSTGRES_BASE): string {
  return path.join(base, crypto.createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 16));
}

/**
 * The server's directory for this state dir. Not root: in the state dir. Root: the server runs as
 * the postgres user, which must traverse every directory above the state root (we make our own
 * state dirs traversable, never the user's). Where it cannot — /root, a 0700 home, a parent not
 * created yet — the data goes to externalPostgresDir. A choice once made sticks: existing data
 * is never left behind because a permission changed.
 */
export function postgresHome(config: Pick<Config, 'stateDir'>, root = isRoot(), base = ROOT_POSTGRES_BASE): { dir: string; external: boolean } {
  const inState = path.join(config.stateDir, 'postgres');
  if (!root) return { dir: inState, external: false };
  const ext = externalPostgresDir(config.stateDir, base);
  if (fs.existsSync(ext)) return { dir: ext, external: true };
  if (fs.existsSync(path.join(inState, 'data'))) return { dir: inState, external: false };
  const stateRoot = path.dirname(path.resolve(config.stateDir));
  return blockingDir(path.dirname(stateRoot), PG_OS_USER) === undefined ? { dir: inState, external: false } : { dir: ext, external: true };
}

export function localPostgres(config: Config): LocalPostgres {
  const { dir, external } = postgresHome(config);
  return {
    binDir: findPostgresBinDir(config.db.binDir),
    dir,
    dataDir: path.join(dir, 'data'),
    socketDir: path.join(dir, 'run'),
    logFile: path.join(dir, 'postgres.log'),
    portFile: path.join(config.stateDir, 'postgres', 'port'),
    osUser: isRoot() ? PG_OS_USER : undefined,
    external,
  };
}

/** down --purge: deletes the external directory of this state dir's server (already stopped). */
export function purgeExternalPostgres(config: Pick<Config, 'stateDir'>, base = ROOT_POSTGRES_BASE): string | undefined {
  const ext = externalPostgresDir(config.stateDir, base);
  if (!fs.existsSync(ext)) return undefined;
  fs.rmSync(ext, { recursive: true, force: true });
  return `purged ${ext} (PostgreSQL data kept outside the state dir for the postgres user)`;
}

export function findPostgresBinDir(configured: string): string {
  if (configured) {
    if (!fs.existsSync(path.join(configured, 'pg_ctl'))) {
      throw new UserError(`POSTGRES_BIN_DIR=${configured} has no pg_ctl`, 'point POSTGRES_BIN_DIR at the directory holding initdb and pg_ctl (e.g. /usr/lib/postgresql/15/bin)');
    }
    return configured;
  }
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base)
    ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0]) return path.join(base, versions[0], 'bin');
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && fs.existsSync(path.join(dir, 'pg_ctl'))) return dir;
  throw new UserError('no PostgreSQL server binaries (initdb, pg_ctl) found', 'install them (Debian: apt-get install postgresql) or set POSTGRES_BIN_DIR, or use an existing server with DATABASE_URL');
}

/** Prefix that runs a PostgreSQL binary as the server's OS user. */
export function asPgUser(pg: LocalPostgres, argv: string[]): string[] {
  return pg.osUser ? ['runuser', '-u', pg.osUser, '--', ...argv] : argv;
}

const picked = new Map<string, number>();

/** The port of the owned server: configured, or picked once and remembered (persisted only
 * when `persist`, i.e. when the server is really started — a dry run leaves no trace). */
export async function ownedPort(config: Config, pg: LocalPostgres, persist = false): Promise<number> {
  if (config.db.port) return config.db.port;
  if (fs.existsSync(pg.portFile)) return Number(fs.readFileSync(pg.portFile, 'utf8').trim());
  const port = picked.get(pg.portFile) ?? (await pickFreePort());
  picked.set(pg.portFile, port);
  if (persist) {
    ensureDir(path.dirname(pg.portFile));
    fs.writeFileSync(pg.portFile, `${port}\n`);
  }
  return port;
}

/** Data dir and socket dir exist and belong to the server's OS user. */
export async function prepareDirs(runner: Runner, pg: LocalPostgres): Promise<void> {
  // Under --dry-run none of these directories is made (nor are the commands printed).
  await runner.change(undefined, async () => {
    if (pg.external) {
      prepareExternalBase(path.dirname(pg.dir));
      fs.mkdirSync(pg.dir, { mode: 0o700, recursive: true });
      fs.chmodSync(pg.dir, 0o700);
      // For whoever finds this directory: which state dir it belongs to (down --purge there deletes it).
      fs.writeFileSync(path.join(pg.dir, 'STATE_DIR'), `${path.dirname(path.dirname(pg.portFile))}\n`);
    } else {
      ensureDir(pg.dir, 0o755);
    }
    for (const d of [pg.socketDir]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    if (pg.osUser) {
      if (!pg.external) {
        // Our own state dirs (0700 by default) become traversable, not readable, for the server's
        // user; secrets/ and logs/ stay 0700.
        const stateRoot = path.dirname(path.dirname(pg.dir));
        for (let d = path.dirname(pg.dir); d.startsWith(stateRoot); d = path.dirname(d)) fs.chmodSync(d, fs.statSync(d).mode | 0o011);
        assertTraversable(pg.dir, pg.osUser);
      }
      await runner.run({ argv: ['chown', '-R', `${pg.osUser}:`, pg.dir], mutates: true });
    }
  });
}

/** /var/lib/digdag-ha: root's, traversable, writable by nobody else (no one may plant a link in it). */
function prepareExternalBase(base: string): void {
  fs.mkdirSync(base, { recursive: true, mode: 0o755 });
  const st = fs.lstatSync(base);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new UserError(`${base} must be a directory owned by root and writable only by root`, `remove it or fix it: chown root: ${base} && chmod 755 ${base}`);
  }
  if ((st.mode & 0o001) === 0) fs.chmodSync(base, st.mode | 0o011);
}

/** The first directory above `dir` that `user` cannot traverse (or that does not exist yet). */
function blockingDir(dir: string, user: string): string | undefined {
  const uid = uidOf(user);
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    let st: fs.Stats;
    try {
      st = fs.statSync(d);
    } catch {
      return d;
    }
    if ((st.mode & 0o001) === 0 && !(st.uid === uid && (st.mode & 0o100) !== 0)) return d;
    if (d === path.dirname(d)) return undefined;
  }
}

/** The postgres OS user must reach the data dir; say so plainly if a parent (e.g. /root) blocks it. */
function assertTraversable(dir: string, user: string): void {
  const d = blockingDir(path.dirname(path.resolve(dir)), user);
  if (d !== undefined) {
    throw new UserError(
      `PostgreSQL runs as the OS user "${user}" (it refuses root), but ${d} is not traversable by other users`,
      `its data was created in the state dir earlier and stays there: chmod o+x ${d}, or move that data away (down --purge deletes it) so the next start keeps it under ${ROOT_POSTGRES_BASE}`,
    );
  }
}

function uidOf(user: string): number {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new UserError(`the OS user "${user}" does not exist`, `create it (useradd --system ${user}) or install PostgreSQL from Debian, which creates it`);
  return Number(line.split(':')[2]);
}

export function pgHba(): string {
  return [
    '# digdag-ha: the socket directory is 0700, so only the server owner (and root) reach "local".',
    'local all all trust',
    'host all all 127.0.0.1/32 scram-sha-256',
    '',
  ].join('\n');
}

/** The extension POSTGRES_STAT_STATEMENTS loads (server option) and creates (init-db). */
export const STAT_STATEMENTS = 'pg_stat_statements';

/** Server settings: loopback only, keepalives, and no session may sit idle in a transaction forever;
 * with statStatements (POSTGRES_STAT_STATEMENTS) pg_stat_statements is loaded. Durability is
 * PostgreSQL's default (fsync, synchronous_commit on): never traded for speed here. */
export function serverOptions(port: number, socketDir: string, maxConnections: number, statStatements = false): string[] {
  return [
    ...(statStatements ? ['-c', `shared_preload_libraries=${STAT_STATEMENTS}`] : []),
    '-c', 'listen_addresses=127.0.0.1',
    '-c', `port=${port}`,
    '-c', `unix_socket_directories=${socketDir}`,
    '-c', `max_connections=${maxConnections}`,
    '-c', 'tcp_keepalives_idle=60',
    '-c', 'idle_in_transaction_session_timeout=600000',
  ];
}

export function postmasterPid(pg: LocalPostgres): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(pg.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
}

/** psql as the superuser over the private socket (owned server) — SQL comes on stdin. */
export function superuserPsql(pg: LocalPostgres, port: number, database = 'postgres'): string[] {
  return asPgUser(pg, [path.join(pg.binDir, 'psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', pg.socketDir, '-p', String(port), '-U', 'postgres', '-d', database, '-f', '-']);
}

/** Where Digdag's database is, with its credentials: the owned server, or DATABASE_URL. */
export async function dbEndpoint(config: Config, dbPassword: string): Promise<DbEndpoint> {
  if (config.db.externalUrl) return { ...parseDatabaseUrl(config.db.externalUrl), owned: false };
  const port = await ownedPort(config, localPostgres(config));
  return { host: '127.0.0.1', port, database: config.db.name, user: config.db.user, password: dbPassword, owned: true };
}

/** psql binary: beside the server binaries when we have them, else on PATH. */
export function psqlBin(config: Config): string {
  try {
    return path.join(findPostgresBinDir(config.db.binDir), 'psql');
  } catch {
    return 'psql';
  }
}

/** Runs one query as Digdag's role over TCP; the password travels in the environment, not argv. */
export async function queryAsApp(runner: Runner, config: Config, db: DbEndpoint, sql: string, quiet = true): Promise<string> {
  const res = await runner.run({
    argv: [psqlBin(config), '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', db.host, '-p', String(db.port), '-U', db.user, '-d', db.database, '-c', sql],
    env: { PGPASSWORD: db.password, PGCONNECT_TIMEOUT: '5' },
    // A query of the toolkit's never takes long; one that does must not stall a task forever.
    timeoutMs: 60_000,
    quiet,
  });
  return res.stdout.trim();
}

/** psql's \set lines that hand values to sql/*.sql over stdin (never on a command line). */
export function psqlVariables(vars: Record<string, string>): string {
  return Object.entries(vars)
    .map(([k, v]) => `\\set ${k} '${v.replace(/'/g, "''")}'`)
    .join('\n') + '\n';
}

/** The registry name of the project-owned server. */
export const POSTGRES_ENTRY = 'postgres';

export function ownedPostgresEntry(config: Config): ProcessEntry | undefined {
  return listProcesses(config).find((p) => p.name === POSTGRES_ENTRY);
}

/** Whether the postmaster named in the data dir's postmaster.pid runs — the server that actually
 * runs, whatever PID the registry kept (a `pg_ctl restart` gives the postmaster a new one). */
export function postmasterRunning(pg: LocalPostgres): boolean {
  const pid = postmasterPid(pg);
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A stale postmaster.pid whose PID now belongs to another program is not our server.
  try {
    return /postgres/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return true;
  }
}

/** Fast shutdown of the owned server (data kept); used by teardown and by failed runs. pg_ctl
 * stops the postmaster of postmaster.pid, so a server restarted under a new PID stops too. */
export async function stopOwnedPostgres(config: Config, runner: Runner): Promise<string> {
  const pg = localPostgres(config);
  const e = ownedPostgresEntry(config);
  if (!(e && isAlive(e)) && !postmasterRunning(pg)) {
    unregisterProcess(config, POSTGRES_ENTRY);
    return 'not running';
  }
  await runner.run({ argv: asPgUser(pg, [path.join(pg.binDir, 'pg_ctl'), '-D', pg.dataDir, '-m', 'fast', '-w', '-t', '60', 'stop']), mutates: true });
  await runner.change(undefined, () => unregisterProcess(config, POSTGRES_ENTRY));
  return 'stopped';
}
