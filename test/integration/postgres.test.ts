// Real PostgreSQL: start-postgres, the init-db SQL (role, database, uuid-ossp), idempotent
// re-runs, a port in use, teardown keeping data, and --purge. Nothing is faked here.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Config } from '../../lib/config.ts';
import { readSecrets } from '../../lib/credentials.ts';
import { UserError } from '../../lib/errors.ts';
import { runSteps, skipReason } from '../../lib/pipeline.ts';
import { dbEndpoint, localPostgres, queryAsApp } from '../../lib/postgres.ts';
import { isAlive, listProcesses } from '../../lib/processes.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { downLocal } from '../../lib/local/down.ts';
import { applySql } from '../../lib/local/init-db.ts';
import { startPostgres } from '../../tasks/start-postgres.ts';
import { testConfig, testCtx } from '../helpers/fixtures.ts';

let config: Config;
const runner = new ShellRunner(false, () => {});

before(async () => {
  config = testConfig();
  await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
});

after(async () => {
  // Whatever happened above, nothing this file started keeps running.
  await downLocal(testCtx(config, runner), true);
  assert.equal(listProcesses(config).length, 0);
});

const db = async () => dbEndpoint(config, readSecrets(config)!.dbPassword);

test('start-postgres runs a real server on loopback, registered for teardown', async () => {
  const [pg] = listProcesses(config);
  assert.equal(pg?.name, 'postgres');
  assert.ok(isAlive(pg!));
  const data = localPostgres(config).dataDir;
  assert.ok(fs.existsSync(path.join(data, 'PG_VERSION')));
  assert.match(fs.readFileSync(path.join(data, 'pg_hba.conf'), 'utf8'), /^host all all 127\.0\.0\.1\/32 scram-sha-256$/m);
  assert.match((await skipReason(startPostgres, testCtx(config, runner)))!, /up to date: inputs unchanged, PostgreSQL accepting connections/);
});

test('init-db SQL creates a NOSUPERUSER role, its database and uuid-ossp; twice is harmless', async () => {
  const ctx = testCtx(config, runner);
  const endpoint = await db();
  await applySql(ctx, endpoint);
  await applySql(ctx, endpoint);
  assert.equal(await queryAsApp(runner, config, endpoint, 'SELECT current_user'), 'digdag');
  assert.equal(await queryAsApp(runner, config, endpoint, "SELECT rolsuper::text || rolcreatedb::text || rolcreaterole::text FROM pg_roles WHERE rolname = 'digdag'"), 'falsefalsefalse');
  assert.equal(await queryAsApp(runner, config, endpoint, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'digdag'"), 'digdag');
  assert.match(await queryAsApp(runner, config, endpoint, 'SELECT uuid_generate_v4()::text'), /^[0-9a-f-]{36}$/);
});

test('a wrong password is refused over TCP (scram, not trust)', async () => {
  const endpoint = await db();
  await assert.rejects(queryAsApp(runner, config, { ...endpoint, password: 'wrong-password' }, 'SELECT 1'), /password authentication failed/);
});

test('a configured port that is in use fails with the fix, before touching anything', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as net.AddressInfo).port;
  const other = testConfig({ POSTGRES_PORT: String(port) });
  try {
    await assert.rejects(runSteps([createSecret, startPostgres], testCtx(other, runner), { renderer: 'silent' }), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.match(err.message, new RegExp(`port ${port} on 127.0.0.1 is in use`));
      assert.match(err.fix!, /POSTGRES_PORT/);
      return true;
    });
    assert.equal(fs.existsSync(localPostgres(other).dataDir), false, 'no data dir was created');
    assert.equal(listProcesses(other).length, 0);
  } finally {
    blocker.close();
  }
});

test('down keeps the data; the next start finds the role again; stamps make init idempotent', async () => {
  const ctx = testCtx(config, runner);
  const lines = await downLocal(ctx, false);
  assert.deepEqual(lines, ['postgres: stopped']);
  assert.equal(listProcesses(config).length, 0);
  assert.ok(fs.existsSync(path.join(localPostgres(config).dataDir, 'PG_VERSION')), 'data kept');
  await runSteps([createSecret, startPostgres], testCtx(config, runner), { renderer: 'silent' });
  assert.equal(await queryAsApp(runner, config, await db(), "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'"), '1');
});

test('--purge deletes the database, the secrets and the logs', async () => {
  const other = testConfig();
  await runSteps([createSecret, startPostgres], testCtx(other, runner), { renderer: 'silent' });
  const lines = await downLocal(testCtx(other, runner), true);
  assert.equal(lines[0], 'postgres: stopped');
  assert.match(lines[1]!, /^purged /);
  assert.equal(fs.existsSync(other.stateDir), false);
});
