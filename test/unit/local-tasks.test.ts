// Local tasks with the recording runner: the exact commands each one issues, secrets kept off
// every command line, and build-image's answers when the runtime cannot be had.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { clientConfigFile } from '../../lib/auth.ts';
import { ensureSecrets } from '../../lib/credentials.ts';
import { writeRuntime, javaFlags, cacheDir } from '../../lib/digdag.ts';
import { localDigdagPatchesDir } from '../../lib/digdag-patches.ts';
import { JMX_EXPORTER_CONFIG } from '../../lib/metrics.ts';
import { UserError } from '../../lib/errors.ts';
import { runStep } from '../../lib/pipeline.ts';
import { localPostgres, postmasterRunning, stopOwnedPostgres } from '../../lib/postgres.ts';
import { parseProperties } from '../../lib/properties.ts';
import { RecordingRunner, ShellRunner } from '../../lib/runner.ts';
import { planLocal } from '../../lib/local/apply.ts';
import { serverArgs } from '../../lib/local/target.ts';
import { expectedArgs } from '../../lib/verify-ha.ts';
import { revisionOf, sampleDir } from '../../lib/push-workflow.ts';
import { pushWorkflow } from '../../tasks/push-workflow.ts';
import { buildImage } from '../../tasks/build-image.ts';
import { initDb } from '../../tasks/init-db.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { freePortRange } from '../helpers/runtime.ts';

const javaAnswer = (argv: readonly string[]) => (argv[1] === '-version' ? { stderr: 'openjdk version "17.0.15" 2025-04-15' } : undefined);

function preparedConfig(vars: Record<string, string> = {}) {
  const config = testConfig({ POSTGRES_PORT: '55999', ...vars });
  const { secrets } = ensureSecrets(config);
  const jar = path.join(tempDir(), 'digdag.jar');
  fs.writeFileSync(jar, 'not really a jar');
  writeRuntime(config, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  return { config, secrets, jar };
}

test('init-db (owned server): three SQL files as superuser over the socket, then one migration', async () => {
  const { config, secrets, jar } = preparedConfig();
  const runner = new RecordingRunner(javaAnswer);
  await runStep(initDb, testCtx(config, runner));
  const pg = localPostgres(config);
  const psql = `runuser -u postgres -- ${pg.binDir}/psql -X -q -v ON_ERROR_STOP=1 -h ${pg.socketDir} -p 55999 -U postgres -d postgres -f -`;
  const props = path.join(config.stateDir, 'props', 'migrate.properties');
  assert.deepEqual(runner.commands(), [
    psql,
    psql,
    psql,
    'java -version',
    `java ${javaFlags(17).join(' ')} -Xmx256m -XX:TieredStopAtLevel=1 -jar ${jar} migrate run -c ${props}`,
    // Read-only: how many migrations the schema now has, for the log line.
    `${pg.binDir}/psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 55999 -U digdag -d digdag -c SELECT count(*) FROM schema_migrations`,
  ]);
  // The password reaches psql on stdin (masked in the record) and the migration through a 0600 file.
  assert.match(runner.calls[0]!.input!, /^\\set db_password '\*\*\*'$/m);
  assert.match(runner.calls[0]!.input!, /CREATE ROLE %I WITH LOGIN NOSUPERUSER/);
  assert.ok(runner.calls.every((c) => !c.argv.join(' ').includes(secrets.dbPassword)));
  assert.equal(fs.statSync(props).mode & 0o777, 0o600);
  assert.match(fs.readFileSync(props, 'utf8'), new RegExp(`database.password = ${secrets.dbPassword}`));
});

test('init-db with POSTGRES_STAT_STATEMENTS=true: pg_stat_statements created in Digdag\'s database, as the superuser', async () => {
  const { config } = preparedConfig({ POSTGRES_STAT_STATEMENTS: 'true' });
  const runner = new RecordingRunner(javaAnswer);
  await runStep(initDb, testCtx(config, runner));
  const pg = localPostgres(config);
  const create = runner.calls.findIndex((c) => c.input === 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n');
  assert.ok(create >= 3, 'after the three SQL files');
  assert.equal(runner.calls[create]!.argv.join(' '), `runuser -u postgres -- ${pg.binDir}/psql -X -q -v ON_ERROR_STOP=1 -h ${pg.socketDir} -p 55999 -U postgres -d digdag -f -`);
  const { config: plain } = preparedConfig();
  const r2 = new RecordingRunner(javaAnswer);
  await runStep(initDb, testCtx(plain, r2));
  assert.equal(r2.calls.filter((c) => c.input?.includes('pg_stat_statements')).length, 0, 'off by default');
});

test('init-db with --dry-run prints the changes and runs none of them', async () => {
  const { config } = preparedConfig();
  const runner = new RecordingRunner(javaAnswer, true);
  await runStep(initDb, testCtx(config, runner));
  assert.equal(runner.lines.filter((l) => l.startsWith('[dry-run]')).length, 4);
  assert.equal(fs.existsSync(path.join(config.stateDir, 'props', 'migrate.properties')), false);
});

test('apply plans the split layout: the seed\'s four roles with their flags', async () => {
  const { config, jar } = preparedConfig({ DIGDAG_HA_LAYOUT: 'split' });
  const plan = await planLocal(config, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  assert.deepEqual(plan.map((p) => `${p.instance.name}:${p.port}`), ['ui-1:65432', 'workflow-1:65433', 'scheduler-1:65434', 'agent-1:65435', 'agent-2:65436']);
  const flags = (name: string) => plan.find((p) => p.instance.name === name)!.argv.filter((a) => a.startsWith('--disable'));
  assert.deepEqual(flags('ui-1'), ['--disable-executor-loop', '--disable-local-agent', '--disable-scheduler'], 'the seed\'s API-only ui');
  assert.deepEqual(flags('workflow-1'), ['--disable-local-agent', '--disable-scheduler']);
  assert.deepEqual(flags('agent-2'), ['--disable-executor-loop', '--disable-scheduler']);
  assert.equal(parseProperties(plan[4]!.properties).get('agent.id'), 'agent-2');
  assert.equal(parseProperties(plan[1]!.properties).get('agent.id'), undefined);
});

test('apply plans one process per replica with its role flags, port and properties (layout worker)', async () => {
  const { config, secrets, jar } = preparedConfig();
  const plan = await planLocal(config, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  assert.deepEqual(plan.map((p) => `${p.instance.name}:${p.port}`), ['ui-1:65432', 'scheduler-1:65433', 'worker-1:65434', 'worker-2:65435']);
  const flags = (name: string) => plan.find((p) => p.instance.name === name)!.argv.filter((a) => a.startsWith('--disable'));
  assert.deepEqual(flags('ui-1'), ['--disable-local-agent', '--disable-scheduler'], 'the ui keeps an executor loop: submissions start at once');
  assert.deepEqual(flags('scheduler-1'), ['--disable-local-agent', '--disable-executor-loop']);
  assert.deepEqual(flags('worker-2'), ['--disable-scheduler'], 'a worker runs the executor loop and the agent');
  const worker = parseProperties(plan[3]!.properties);
  assert.equal(worker.get('agent.id'), 'worker-2');
  assert.equal(worker.get('server.port'), '65435');
  assert.equal(worker.get('database.migrate'), 'false');
  assert.equal(worker.get('database.port'), '55999');
  assert.equal(parseProperties(plan[0]!.properties).get('agent.id'), undefined, 'only task-running processes get an agent.id');
  // Metrics: queue exporter on 9400, then two ports per process (metrics, JMX), the agent on `server` only.
  assert.deepEqual(plan.map((p) => [p.metricsPort, p.jmxPort]), [[9401, 9402], [9403, 9404], [9405, 9406], [9407, 9408]]);
  assert.equal(worker.get('server.jmx.port'), '9408');
  assert.equal(worker.get('metrics.enable'), 'jmx');
  const w = plan[3]!.argv;
  assert.deepEqual(w.slice(w.indexOf('--add-exports'), w.indexOf('--add-exports') + 5), ['--add-exports', 'jdk.attach/sun.tools.attach=ALL-UNNAMED', '-Djdk.attach.allowAttachSelf=true', '-Dcom.sun.management.jmxremote.host=127.0.0.1', `-javaagent:${jar}=127.0.0.1:9407:${JMX_EXPORTER_CONFIG}`]);
  for (const p of plan) {
    assert.ok(!p.properties.includes(secrets.dbPassword) && !p.properties.includes(secrets.encryptionKey), 'plan text holds no secret');
    assert.ok(!p.argv.join(' ').includes(secrets.dbPassword));
    // digdag-ha's patches first on the classpath of every server (lib/digdag-patches.ts), and the
    // agent patch's wait in its environment (apply's env, part of the process's hash).
    // (and, on the ui with AUTH=basic, the login page before it).
    const login = p.instance.role === 'ui' ? [path.join(config.stateDir, 'ui-overlay')] : [];
    assert.deepEqual(p.argv.slice(p.argv.indexOf('-cp'), p.argv.indexOf('-cp') + 3), ['-cp', [...login, localDigdagPatchesDir(config), jar].join(':'), 'io.digdag.cli.Main'], p.instance.name);
  }
  const released = testConfig({ ...config.vars, DIGDAG_PATCHES: 'false' });
  const plain = await planLocal(released, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
  assert.ok(plain.filter((p) => p.instance.role !== 'ui').every((p) => p.argv.includes('-jar') && !p.argv.includes('-cp')), 'DIGDAG_PATCHES=false: Digdag as released');
});

test('apply re-plans a process only when its settings change', async () => {
  const { config, jar } = preparedConfig();
  const java = { bin: 'java', major: 17, flags: javaFlags(17) };
  const rt = { kind: 'jar' as const, path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar };
  const a = await planLocal(config, java, rt);
  const b = await planLocal(config, java, rt);
  assert.deepEqual(a.map((p) => p.hash), b.map((p) => p.hash));
  const more = await planLocal(testConfig({ DIGDAG_HA_STATE_DIR: path.dirname(config.stateDir), POSTGRES_PORT: '55999', AGENT_MAX_TASK_THREADS: '8' }), java, rt);
  assert.notEqual(more[3]!.hash, a[3]!.hash);
});

test('build-image from an empty Maven repository fails naming the artifacts and the fix (real mvn)', async () => {
  const repo = tempDir('empty-maven-');
  const config = testConfig({ MAVEN_REPO_URL: `file://${repo}` });
  const runner = new ShellRunner(false, () => {});
  await assert.rejects(runStep(buildImage, testCtx(config, runner)), (err: unknown) => {
    assert.ok(err instanceof UserError, String(err));
    assert.match(err.message, /Digdag 0\.10\.5\.1 is not in the Maven repository file:\/\/.*io\.digdag:digdag-cli:jar:0\.10\.5\.1/);
    assert.match(err.fix!, /DIGDAG_SOURCE=release/);
    return true;
  });
  assert.equal(fs.existsSync(path.join(cacheDir(config), 'runtime.json')), false, 'nothing half-made is recorded');
});

test('build-image refuses a jar whose checksum does not match', async () => {
  const jar = path.join(tempDir(), 'digdag.jar');
  fs.writeFileSync(jar, 'tampered');
  const config = testConfig({ DIGDAG_SOURCE: 'jar', DIGDAG_JAR: jar });
  await assert.rejects(runStep(buildImage, testCtx(config, new RecordingRunner(javaAnswer))), /has sha256 [0-9a-f]{64}, expected 4d1337d7/);
});

test('build-image refuses a Java Digdag does not run on', async () => {
  const { config } = preparedConfig();
  const runner = new RecordingRunner((argv) => (argv[1] === '-version' ? { stderr: 'openjdk version "25" 2025-09-16' } : undefined));
  await assert.rejects(runStep(buildImage, testCtx(config, runner)), /Java 25 is not supported/);
});

test('push-workflow: the revision check sends the Authorization header; digdag push reads it from the 0600 -c file, never argv', async () => {
  const port = await freePortRange(1, 46000);
  const { config, secrets, jar } = preparedConfig({ LOCAL_PORT_BASE: String(port) });
  const want = `Basic ${Buffer.from(`digdag:${secrets.apiPassword}`).toString('base64')}`;
  const seen: (string | undefined)[] = [];
  let revision = revisionOf(sampleDir());
  // Digdag's answers: 401 without the header (no WWW-Authenticate), the project list with it.
  const server = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    if (req.headers.authorization !== want) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"Authentication failed","status":401}');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ projects: [{ revision }] }));
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  try {
    const runner = new RecordingRunner(javaAnswer);
    await runStep(pushWorkflow, testCtx(config, runner));
    assert.deepEqual(seen, [want], 'one authenticated revision check');
    assert.ok(runner.lines.some((l) => l.includes(`already at revision ${revision}`)));
    assert.ok(!runner.commands().some((c) => c.includes(' push ')), 'an unchanged project is not pushed');

    revision = 'dh-older';
    const again = new RecordingRunner(javaAnswer);
    await runStep(pushWorkflow, testCtx(config, again, true));
    const file = clientConfigFile(config);
    assert.deepEqual(again.commands().filter((c) => c.includes(' push ')), [
      `java ${javaFlags(17).join(' ')} -Xmx256m -XX:TieredStopAtLevel=1 -jar ${jar} push ha-sample --project ${sampleDir()} -r ${revisionOf(sampleDir())} -c ${file}`,
    ]);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const props = parseProperties(fs.readFileSync(file, 'utf8'));
    assert.equal(props.get('client.http.endpoint'), `http://127.0.0.1:${port}`);
    assert.equal(props.get('client.http.headers.Authorization'), want);
    for (const c of again.calls) assert.ok(!c.argv.join(' ').includes(secrets.apiPassword) && !c.argv.join(' ').includes(want.slice(6)));
    assert.ok(again.lines.some((l) => l.includes(`-c ${file}`)), 'the hint names the client config');
  } finally {
    server.close();
  }
});

test('verify-ha reads a local process\'s role flags from its command line, as planned', async () => {
  for (const layout of ['worker', 'split'] as const) {
    const { config, jar } = preparedConfig({ DIGDAG_HA_LAYOUT: layout });
    const plan = await planLocal(config, { bin: 'java', major: 17, flags: javaFlags(17) }, { kind: 'jar', path: jar, version: '0.10.5.1', source: 'test', jmxAgent: jar });
    for (const p of plan) assert.deepEqual(serverArgs(p.argv), expectedArgs(layout, p.instance.role), p.instance.name);
  }
  assert.deepEqual(serverArgs(['java', '-jar', 'x.jar', 'migrate', 'run']), []);
});

test('down stops the postmaster of postmaster.pid, also when the registry kept another PID (a restarted server)', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'local' });
  const pg = localPostgres(config);
  fs.mkdirSync(pg.dataDir, { recursive: true });
  assert.equal(postmasterRunning(pg), false, 'no postmaster.pid');
  // A process that looks like a postmaster (argv[0] "postgres"), and one that does not.
  const postmaster = spawn('sleep', ['30'], { argv0: 'postgres' });
  const other = spawn('sleep', ['30']);
  try {
    fs.writeFileSync(path.join(pg.dataDir, 'postmaster.pid'), `${other.pid}\n${pg.dataDir}\n`);
    assert.equal(postmasterRunning(pg), false, 'a reused PID is not our server');
    assert.equal(await stopOwnedPostgres(config, new RecordingRunner()), 'not running');
    fs.writeFileSync(path.join(pg.dataDir, 'postmaster.pid'), `${postmaster.pid}\n${pg.dataDir}\n`);
    assert.equal(postmasterRunning(pg), true);
    const r = new RecordingRunner();
    assert.equal(await stopOwnedPostgres(config, r), 'stopped');
    assert.match(r.calls.map((c) => c.argv.join(' ')).join('\n'), /pg_ctl -D \S+ -m fast -w -t 60 stop/);
  } finally {
    postmaster.kill();
    other.kill();
    fs.rmSync(pg.dir, { recursive: true, force: true });
  }
});
