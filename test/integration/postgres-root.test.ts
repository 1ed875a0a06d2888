// Real PostgreSQL as root with a checkout under a 0700 directory (like /root or a private home):
// the postgres OS user cannot reach the state dir, so the server's directory lives under
// /var/lib/digdag-ha/<hash>; nothing of the user's is chmod-ed, and down --purge deletes it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { readSecrets } from '../../lib/credentials.ts';
import { downLocal } from '../../lib/local/down.ts';
import { applySql } from '../../lib/local/init-db.ts';
import { runSteps } from '../../lib/pipeline.ts';
import { dbEndpoint, externalPostgresDir, localPostgres, postgresHome, queryAsApp, ROOT_POSTGRES_BASE } from '../../lib/postgres.ts';
import { listProcesses } from '../../lib/processes.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

const skip = process.getuid?.() !== 0 ? 'needs root: this is the case where PostgreSQL runs as the postgres OS user' : false;
const runner = new ShellRunner(false, () => {});
let home: string;
let config: Config;

before(() => {
  if (skip) return;
  // A private "home" (0700, mkdtemp's default) holding a checkout with its default .state.
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'digdag-ha-home-'));
  assert.equal(fs.statSync(home).mode & 0o777, 0o700);
  config = testConfig({ DIGDAG_HA_STATE_DIR: path.join(home, 'checkout', '.state') });
});

after(async () => {
  if (skip) return;
  await downLocal(testCtx(config, runner), true);
  fs.rmSync(home, { recursive: true, force: true });
});

test('as root under a 0700 directory: PostgreSQL runs from /var/lib/digdag-ha, the checkout stays private', { skip }, async () => {
  const pg = localPostgres(config);
  assert.equal(pg.external, true);
  assert.equal(pg.dir, externalPostgresDir(config.stateDir));
  assert.ok(pg.dir.startsWith(`${ROOT_POSTGRES_BASE}/`));

  await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
  const db = await dbEndpoint(config, readSecrets(config)!.dbPassword);
  await applySql(testCtx(config, runner), db);
  assert.equal(await queryAsApp(runner, config, db, 'SELECT current_user'), 'digdag');

  const st = fs.statSync(pg.dir);
  assert.equal(st.uid, Number(fs.readFileSync('/etc/passwd', 'utf8').match(/^postgres:[^:]*:(\d+):/m)![1]));
  assert.equal(st.mode & 0o777, 0o700, 'the data directory is the postgres user\'s alone');
  assert.equal(fs.statSync(ROOT_POSTGRES_BASE).uid, 0);
  assert.equal(fs.statSync(home).mode & 0o777, 0o700, 'the private parent was not chmod-ed');
  assert.equal(fs.readFileSync(path.join(pg.dir, 'STATE_DIR'), 'utf8').trim(), config.stateDir);
  assert.equal(listProcesses(config).find((p) => p.name === 'postgres')?.marker, pg.dataDir);
});

test('down keeps the external data and the next start uses it again; --purge deletes it', { skip }, async () => {
  const pg = localPostgres(config);
  assert.deepEqual(await downLocal(testCtx(config, runner), false), ['postgres: stopped']);
  assert.ok(fs.existsSync(path.join(pg.dataDir, 'PG_VERSION')), 'data kept');

  await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
  const db = await dbEndpoint(config, readSecrets(config)!.dbPassword);
  assert.equal(await queryAsApp(runner, config, db, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'"), '1');

  const lines = await downLocal(testCtx(config, runner), true);
  assert.deepEqual(lines.map((l) => l.split(' ')[0]), ['postgres:', 'purged', 'purged']);
  assert.match(lines[2]!, new RegExp(`^purged ${pg.dir} `));
  assert.equal(fs.existsSync(pg.dir), false);
  assert.equal(fs.existsSync(config.stateDir), false);
});

test('where the server directory goes: state dir unless root and the postgres user is blocked; a choice sticks', () => {
  const open = fs.mkdtempSync(path.join(os.tmpdir(), 'digdag-ha-open-'));
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'digdag-ha-base-'));
  try {
    fs.chmodSync(open, 0o711);
    const privateDir = path.join(open, 'private');
    fs.mkdirSync(privateDir, { mode: 0o700 });
    const reachable = { stateDir: path.join(open, '.state', 'local') };
    const blocked = { stateDir: path.join(privateDir, 'checkout', '.state', 'local') };
    assert.deepEqual(postgresHome(blocked, false, base), { dir: path.join(blocked.stateDir, 'postgres'), external: false }, 'not root: always the state dir');
    assert.deepEqual(postgresHome(reachable, true, base), { dir: path.join(reachable.stateDir, 'postgres'), external: false });
    assert.deepEqual(postgresHome(blocked, true, base), { dir: externalPostgresDir(blocked.stateDir, base), external: true });
    // Data created in the state dir earlier stays there; an external dir, once made, stays in use.
    fs.mkdirSync(path.join(blocked.stateDir, 'postgres', 'data'), { recursive: true });
    assert.equal(postgresHome(blocked, true, base).external, false);
    fs.mkdirSync(externalPostgresDir(reachable.stateDir, base));
    assert.equal(postgresHome(reachable, true, base).external, true);
    assert.notEqual(externalPostgresDir(reachable.stateDir, base), externalPostgresDir(blocked.stateDir, base));
  } finally {
    fs.rmSync(open, { recursive: true, force: true });
    fs.rmSync(base, { recursive: true, force: true });
  }
});
