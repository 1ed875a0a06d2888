// The Dockerfile is checked for what matters (the image is built for real by the cluster tests),
// and the entrypoint script runs for real with a stand-in `java` that reports what it was given.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import { javaFlags } from '../../lib/digdag.ts';
import { assembleContext, UI_LOGIN_CONTEXT_DIR } from '../../lib/kube/build-image.ts';
import { uiConfigJs } from '../../lib/ui-login.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

const FLAGS = javaFlags(17).join(' ');

const dockerfile = fs.readFileSync(path.join(ROOT, 'docker', 'Dockerfile'), 'utf8');
const ENTRYPOINT = path.join(ROOT, 'docker', 'entrypoint.sh');

test('Dockerfile: base pinned by digest, Java 11 JRE', () => {
  assert.match(dockerfile, /^ARG BASE_IMAGE=eclipse-temurin:11-jre[\w.-]*@sha256:[0-9a-f]{64}$/m);
  assert.match(dockerfile, /^FROM \$\{BASE_IMAGE\}$/m);
});

test('Dockerfile: Digdag from the build context build-image assembles (checksums verified), never downloaded; a JRE from apt on a base without java', () => {
  assert.match(dockerfile, /^COPY digdag\/ \$\{DIGDAG_HOME\}\/lib\/$/m);
  assert.match(dockerfile, /sha256sum -c SHA256SUMS/);
  assert.doesNotMatch(dockerfile, /github\.com\/treasure-data|releases\/download/);
  assert.match(dockerfile, /^ARG JRE_PACKAGE=openjdk-17-jre-headless$/m);
  assert.match(dockerfile, /if ! command -v java >\/dev\/null; then[\s\S]*"\$\{JRE_PACKAGE\}"/);
  assert.doesNotMatch(dockerfile, /^COPY --chmod/m, 'the legacy builder (DOCKER_BUILDKIT=0) has no COPY --chmod');
  const entry = fs.readFileSync(ENTRYPOINT, 'utf8');
  assert.match(entry, /java \$JAVA_MODULE_FLAGS \$\(cds_flag "\$DIGDAG_CP"\) \$JAVA_OPTS -cp "\$DIGDAG_CP" io\.digdag\.cli\.Main/);
  assert.doesNotMatch(dockerfile + entry, /AggressiveOpts|\/usr\/local\/bin\/digdag\b(?!-)/, 'never the self-running launcher');
});

test('entrypoint passes the Java 17 --add-opens flags lib/digdag.ts gives the local target', () => {
  const entry = fs.readFileSync(ENTRYPOINT, 'utf8');
  const flags = /^JAVA_MODULE_FLAGS="([^"]+)"$/m.exec(entry)?.[1];
  assert.equal(flags, javaFlags(17).join(' '));
});

test('PostgreSQL image (cluster target): Debian postgresql-15 as uid 70 like the official image; initdb from POSTGRES_PASSWORD via a file', () => {
  const pgDockerfile = fs.readFileSync(path.join(ROOT, 'docker', 'postgres', 'Dockerfile'), 'utf8');
  const pgEntry = fs.readFileSync(path.join(ROOT, 'docker', 'postgres', 'entrypoint.sh'), 'utf8');
  assert.match(pgDockerfile, /useradd --system --uid 70 --gid 70/);
  assert.match(pgDockerfile, /^USER 70:70$/m);
  assert.match(pgDockerfile, /postgresql-15/);
  assert.match(pgEntry, /--pwfile=/);
  assert.doesNotMatch(pgEntry, /initdb[^\n]*POSTGRES_PASSWORD/, 'the password is never on a command line');
});

test('Dockerfile: non-root user, tini as PID 1, gcloud from the context (never Google\'s apt repository), TZ/LANG overridable', () => {
  assert.match(dockerfile, /^USER 10001:10001$/m);
  assert.match(dockerfile, /^ENTRYPOINT \["\/usr\/bin\/tini", "--", "\/usr\/local\/bin\/digdag-entrypoint"\]$/m);
  assert.match(dockerfile, /^COPY google-cloud-sdk\/ \/usr\/lib\/google-cloud-sdk\/$/m);
  assert.match(dockerfile, /elif \[ "\$\{INSTALL_GCLOUD\}" = "true" \]; then[^\n]*\n[^\n]*exit 1/, 'INSTALL_GCLOUD=true with an empty SDK directory fails the build');
  assert.doesNotMatch(dockerfile, /packages\.cloud\.google\.com|google-cloud-cli|gnupg/, 'no Google apt repository');
  assert.match(dockerfile, /^ARG TZ=Asia\/Tokyo$/m);
  assert.match(dockerfile, /^ARG LANG=ja_JP\.UTF-8$/m);
});

test('Dockerfile: no secret is baked into the image', () => {
  assert.doesNotMatch(dockerfile, /^(ENV|ARG)\s+\S*(PASSWORD|SECRET|CREDENTIAL|PRIVATE_KEY)/im);
  assert.doesNotMatch(dockerfile, /COPY[^\n]*\.(json|pem|key)\b/i);
  assert.doesNotMatch(dockerfile, /GOOGLE_APPLICATION_CREDENTIALS/);
});

/** Runs the entrypoint with stand-ins for java and gcloud that record their arguments. */
function runEntrypoint(args: string[], opts: { secret?: boolean; key?: boolean; env?: Record<string, string> } = {}) {
  const dir = tempDir('entrypoint-');
  fs.mkdirSync(path.join(dir, 'cds'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'java'), `#!/bin/sh\necho "java $*" >> ${dir}/calls\nfor a; do case "$a" in */server.properties) stat -c %a "$a" >> ${dir}/calls; cat "$a" >> ${dir}/calls;; esac; done\necho "GOOGLE_CLOUD_PROJECT=$GOOGLE_CLOUD_PROJECT GOOGLE_APPLICATION_CREDENTIALS=$GOOGLE_APPLICATION_CREDENTIALS" >> ${dir}/calls\n`, { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'gcloud'), `#!/bin/sh\necho "gcloud $*" >> ${dir}/calls\necho "gcloud sees CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=$CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE REQUESTS_CA_BUNDLE=$REQUESTS_CA_BUNDLE" >> ${dir}/calls\n`, { mode: 0o755 });
  fs.mkdirSync(path.join(dir, 'config'));
  fs.writeFileSync(path.join(dir, 'config', 'agent.properties'), 'server.port = 65432\n');
  fs.writeFileSync(path.join(dir, 'config', 'migrate.properties'), 'database.type = postgresql\n');
  if (opts.secret !== false) fs.writeFileSync(path.join(dir, 'secret.properties'), 'database.password = s3cret\n');
  if (opts.key) fs.writeFileSync(path.join(dir, 'key.json'), '{}');
  const res = spawnSync('sh', [ENTRYPOINT, ...args], {
    encoding: 'utf8',
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
      DIGDAG_CONFIG_DIR: path.join(dir, 'config'),
      DIGDAG_SECRET_PROPERTIES: path.join(dir, 'secret.properties'),
      GCP_KEY_FILE: path.join(dir, 'key.json'),
      DIGDAG_WORK_DIR: path.join(dir, 'work'),
      DIGDAG_CDS_DIR: path.join(dir, 'cds'),
      DIGDAG_PATCHES_JAR: path.join(dir, 'no-patches.jar'),
      DIGDAG_UI_LOGIN_JAR: path.join(dir, 'no-ui-login.jar'),
      ...opts.env,
    },
  });
  const calls = fs.existsSync(path.join(dir, 'calls')) ? fs.readFileSync(path.join(dir, 'calls'), 'utf8') : '';
  return { ...res, calls, dir };
}

test('entrypoint server: ConfigMap + secret properties assembled 0600, role flags passed through', () => {
  const r = runEntrypoint(['server', '--disable-executor-loop', '--disable-scheduler'], { env: { DIGDAG_ROLE: 'agent', JAVA_OPTS: '-Xmx1g', GCP_PROJECT: 'my-proj' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.calls, new RegExp(`^java ${FLAGS} -Xmx1g -cp /opt/digdag/lib/\\* io.digdag.cli.Main server -c ${r.dir}/work/server.properties --disable-executor-loop --disable-scheduler$`, 'm'));
  assert.match(r.calls, /^600$/m);
  assert.match(r.calls, /server.port = 65432\n\ndatabase.password = s3cret/);
  assert.match(r.calls, /GOOGLE_CLOUD_PROJECT=my-proj GOOGLE_APPLICATION_CREDENTIALS=$/m, 'no key mounted: Application Default Credentials');
  assert.doesNotMatch(r.calls, /gcloud auth/);
});

test('entrypoint activates gcloud only when a service-account key is mounted', () => {
  const r = runEntrypoint(['server'], { key: true, env: { DIGDAG_ROLE: 'agent' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.calls, new RegExp(`gcloud auth activate-service-account --key-file ${r.dir}/key.json --quiet`));
  assert.match(r.calls, new RegExp(`GOOGLE_APPLICATION_CREDENTIALS=${r.dir}/key.json`));
});

test('entrypoint refuses to start without the secret, and without a role', () => {
  const noSecret = runEntrypoint(['server'], { secret: false, env: { DIGDAG_ROLE: 'agent' } });
  assert.notEqual(noSecret.status, 0);
  assert.match(noSecret.stderr, /secret.properties is missing/);
  assert.equal(noSecret.calls, '');
  const noRole = runEntrypoint(['server']);
  assert.notEqual(noRole.status, 0);
  assert.match(noRole.stderr, /DIGDAG_ROLE/);
});

test('entrypoint migrate runs `digdag migrate run` with the assembled properties', () => {
  const r = runEntrypoint(['migrate']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.calls, new RegExp(`^java ${FLAGS} -cp /opt/digdag/lib/\\* io.digdag.cli.Main migrate run -c ${r.dir}/work/server.properties$`, 'm'));
});

/** The API credentials Secret as mounted: username everywhere, the password only on UI pods. */
function credentialsDir(password?: string): string {
  const dir = tempDir('api-creds-');
  fs.writeFileSync(path.join(dir, 'username'), 'digdag');
  if (password) fs.writeFileSync(path.join(dir, 'password'), password);
  return dir;
}

test('entrypoint with DIGDAG_AUTH=basic: the UI pod gets the mounted password, the probe header matches it (0600)', () => {
  const r = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: credentialsDir('pw-Real_123') } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.calls, /server.authenticator.type = basic\nserver.authenticator.basic.username = digdag\nserver.authenticator.basic.password = pw-Real_123\nserver.authenticator.basic.admin = false/);
  const header = path.join(r.dir, 'work', 'probe-header');
  assert.equal(fs.readFileSync(header, 'utf8'), `Authorization: Basic ${Buffer.from('digdag:pw-Real_123').toString('base64')}\n`);
  assert.equal(fs.statSync(header).mode & 0o777, 0o600);
  assert.ok(!r.calls.split('\n').some((l) => l.startsWith('java') && l.includes('pw-Real_123')), 'the password is not on the java command line');
});

test('entrypoint with DIGDAG_AUTH=basic and no password mounted: a throw-away password only this pod knows', () => {
  const env = { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: credentialsDir() };
  const a = runEntrypoint(['server'], { env });
  const b = runEntrypoint(['server'], { env });
  assert.equal(a.status, 0, a.stderr);
  const pw = (r: typeof a) => /server.authenticator.basic.password = ([A-Za-z0-9_-]{32})\n/.exec(r.calls)?.[1];
  assert.ok(pw(a) && pw(b) && pw(a) !== pw(b), 'random per start');
  assert.equal(fs.readFileSync(path.join(a.dir, 'work', 'probe-header'), 'utf8'), `Authorization: Basic ${Buffer.from(`digdag:${pw(a)}`).toString('base64')}\n`);
});

test('entrypoint: DIGDAG_AUTH=none adds no auth keys; basic without the Secret refuses to start', () => {
  const none = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'none' } });
  assert.equal(none.status, 0, none.stderr);
  assert.doesNotMatch(none.calls, /authenticator/);
  assert.equal(fs.readFileSync(path.join(none.dir, 'work', 'probe-header'), 'utf8'), '');
  const missing = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: path.join(tempDir(), 'none') } });
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /digdag-api-credentials/);
  assert.equal(missing.calls, '');
});

test('entrypoint: the UI login jar goes first on the classpath only with DIGDAG_AUTH=basic', () => {
  const login = path.join(tempDir('ui-login-'), 'ui-login.jar');
  fs.writeFileSync(login, 'a jar');
  const basic = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: credentialsDir('pw'), DIGDAG_UI_LOGIN_JAR: login } });
  assert.equal(basic.status, 0, basic.stderr);
  assert.match(basic.calls, new RegExp(`-cp ${login}:/opt/digdag/lib/\\* io.digdag.cli.Main server`));
  const none = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'none', DIGDAG_UI_LOGIN_JAR: login } });
  assert.match(none.calls, / -cp \/opt\/digdag\/lib\/\* io.digdag.cli.Main server/, 'AUTH=none: the UI as shipped');
});

/** Where the entrypoint looks for the archive of a classpath (cds_archive). */
const archiveOf = (cdsDir: string, cp: string) => path.join(cdsDir, `${crypto.createHash('sha256').update(cp).digest('hex').slice(0, 16)}.jsa`);

test('entrypoint: the patches jar goes first on every JVM\'s classpath, and each JVM maps the class-data-sharing archive made for exactly its classpath', () => {
  const dir = tempDir('cds-');
  const patches = path.join(dir, 'patches.jar');
  const login = path.join(dir, 'ui-login.jar');
  fs.writeFileSync(patches, 'a jar');
  fs.writeFileSync(login, 'a jar');
  const cds = path.join(dir, 'cds');
  fs.mkdirSync(cds);
  const plain = `${patches}:/opt/digdag/lib/*`;
  fs.writeFileSync(archiveOf(cds, plain), 'archive');
  const env = { DIGDAG_PATCHES_JAR: patches, DIGDAG_UI_LOGIN_JAR: login, DIGDAG_CDS_DIR: cds };
  const server = runEntrypoint(['server', '--disable-scheduler'], { env: { ...env, DIGDAG_ROLE: 'agent', JAVA_OPTS: '-Xmx1g' } });
  assert.equal(server.status, 0, server.stderr);
  assert.match(server.calls, new RegExp(`^java ${FLAGS} -XX:SharedArchiveFile=${archiveOf(cds, plain)} -Xmx1g -cp ${patches}:/opt/digdag/lib/\\* io.digdag.cli.Main server -c `, 'm'));
  // wait-migrated (the init container): the same classpath, so the same archive.
  const wait = runEntrypoint(['wait-migrated'], { env: { ...env, DIGDAG_DB_WAIT_TRIES: '1' } });
  assert.match(wait.calls, new RegExp(`^java ${FLAGS} -XX:SharedArchiveFile=${archiveOf(cds, plain)} -cp ${patches}:/opt/digdag/lib/\\* io.digdag.cli.Main migrate check -c `, 'm'));
  // With the login form the classpath differs: no archive for it here, so none is given.
  const basic = runEntrypoint(['server'], { env: { ...env, DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: credentialsDir('pw') } });
  assert.equal(basic.status, 0, basic.stderr);
  assert.match(basic.calls, new RegExp(`^java ${FLAGS} -cp ${login}:${patches}:/opt/digdag/lib/\\* io.digdag.cli.Main server`, 'm'));
  fs.writeFileSync(archiveOf(cds, `${login}:${plain}`), 'archive');
  const basic2 = runEntrypoint(['server'], { env: { ...env, DIGDAG_ROLE: 'agent', DIGDAG_AUTH: 'basic', DIGDAG_API_CREDENTIALS_DIR: credentialsDir('pw') } });
  assert.match(basic2.calls, new RegExp(`-XX:SharedArchiveFile=${archiveOf(cds, `${login}:${plain}`)} -cp ${login}:${patches}:`));
});

test('Dockerfile: the login form and the patches become jars, then cds-archive makes the archives, after every COPY that is on the classpath', () => {
  const at = (re: RegExp) => {
    const m = re.exec(dockerfile);
    assert.ok(m, `${re} in the Dockerfile`);
    return m.index;
  };
  const run = at(/digdag-entrypoint cds-archive/);
  for (const re of [/^COPY digdag\/ /m, /^COPY ui-login\/ /m, /^COPY digdag-patches\/ /m, /^COPY entrypoint\.sh /m, /zip -qrX \/opt\/digdag\/ui-login\.jar/, /zip -qrX \/opt\/digdag\/patches\.jar/]) assert.ok(at(re) < run, `${re} before cds-archive`);
  assert.match(dockerfile, /if \[ -f patches\/\.digdag-ha-key \]; then[^\n]*patches\.jar/, 'the patches jar only once every class compiled');
  const entry = fs.readFileSync(ENTRYPOINT, 'utf8');
  assert.match(entry, /UI_LOGIN_JAR=\$\{DIGDAG_UI_LOGIN_JAR:-\/opt\/digdag\/ui-login\.jar\}/);
  assert.match(entry, /DIGDAG_PATCHES_JAR=\$\{DIGDAG_PATCHES_JAR:-\/opt\/digdag\/patches\.jar\}/);
  assert.match(entry, /-Xshare:on -XX:SharedArchiveFile="\$archive"/, 'the build proves each archive maps');
});

test('the image build context carries the login config.js the Dockerfile copies (no secret in it)', () => {
  const state = tempDir('ctx-');
  const jar = path.join(state, 'digdag.jar');
  fs.writeFileSync(jar, 'not really a jar');
  const agent = path.join(state, 'jmx_prometheus_javaagent-1.0.1.jar');
  fs.writeFileSync(agent, 'agent');
  const dir = assembleContext(testConfig({ DIGDAG_HA_STATE_DIR: state }), { kind: 'jar', path: jar, source: 'jar', version: '0.10.5.1' } as never, agent);
  assert.equal(fs.readFileSync(path.join(dir, UI_LOGIN_CONTEXT_DIR, 'public', 'config.js'), 'utf8'), uiConfigJs());
  assert.match(fs.readFileSync(path.join(ROOT, 'docker', 'Dockerfile'), 'utf8'), new RegExp(`^COPY ${UI_LOGIN_CONTEXT_DIR}/ /opt/digdag/ui-login/$`, 'm'));
});

test('entrypoint probe: curl reads the header from the file, fails on a non-2xx', () => {
  const dir = tempDir('probe-');
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'curl'), `#!/bin/sh\necho "curl $*" > ${dir}/calls\nexit 22\n`, { mode: 0o755 });
  const r = spawnSync('sh', [ENTRYPOINT, 'probe'], { encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin`, DIGDAG_WORK_DIR: path.join(dir, 'work') } });
  assert.equal(r.status, 22, 'a 401 (curl -f: 22) fails the probe');
  assert.equal(fs.readFileSync(path.join(dir, 'calls'), 'utf8').trim(), `curl -fsS -o /dev/null --max-time 4 -H @${dir}/work/probe-header http://127.0.0.1:65432/api/projects?name=readiness-probe`);
});

/** A throw-away CA certificate (PEM) made by openssl. */
function testCa(dir: string, name: string): string {
  const pem = path.join(dir, `${name}.pem`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, `${name}.key`), '-out', pem, '-days', '1', '-subj', `/CN=${name}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return fs.readFileSync(pem, 'utf8');
}

const keytoolList = (store: string) => spawnSync('keytool', ['-list', '-keystore', store, '-storetype', 'PKCS12', '-storepass', 'changeit'], { encoding: 'utf8' });
const JRE_CACERTS = '/etc/ssl/certs/java/cacerts';

test('entrypoint with an extra CA bundle (googleApis.caBundle): the JVM trusts the JRE\'s CAs plus each extra one, gcloud/bq get the system bundle plus them, before gcloud runs', (t) => {
  if (spawnSync('keytool', ['-help'], { stdio: 'ignore' }).status !== 0 || !fs.existsSync(JRE_CACERTS)) return t.skip(`SKIPPED: needs keytool and ${JRE_CACERTS} (a JRE)`);
  const dir = tempDir('extra-ca-');
  const bundle = path.join(dir, 'ca.crt');
  fs.writeFileSync(bundle, `${testCa(dir, 'first-test-ca')}\n# a comment between certificates\n${testCa(dir, 'second-test-ca')}`);
  const system = path.join(dir, 'system.pem');
  fs.writeFileSync(system, testCa(dir, 'system-ca'));
  const r = runEntrypoint(['server'], { key: true, env: { DIGDAG_ROLE: 'agent', JAVA_OPTS: '-Xmx1g', DIGDAG_EXTRA_CA_FILE: bundle, DIGDAG_SYSTEM_CA_BUNDLE: system, DIGDAG_JAVA_CACERTS: JRE_CACERTS } });
  assert.equal(r.status, 0, r.stderr);
  const store = path.join(r.dir, 'work', 'extra-ca', 'truststore.p12');
  assert.match(r.calls, new RegExp(`^java ${FLAGS} -Xmx1g -Djavax.net.ssl.trustStore=${store} -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=PKCS12 -cp `, 'm'));
  const list = keytoolList(store);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /^digdag-extra-ca-1,/m);
  assert.match(list.stdout, /^digdag-extra-ca-2,/m);
  const jre = keytoolList(JRE_CACERTS).stdout.match(/Your keystore contains (\d+) entr/)?.[1];
  assert.equal(list.stdout.match(/Your keystore contains (\d+) entr/)?.[1], String(Number(jre) + 2), 'the JRE\'s CAs are kept');
  const pem = fs.readFileSync(path.join(r.dir, 'work', 'extra-ca', 'ca-bundle.pem'), 'utf8');
  assert.equal((pem.match(/BEGIN CERTIFICATE/g) ?? []).length, 3, 'system CA + the two extra ones');
  assert.ok(pem.startsWith(fs.readFileSync(system, 'utf8')));
  // gcloud already sees the bundle when it activates the key (its token exchange needs it).
  const bundlePath = path.join(r.dir, 'work', 'extra-ca', 'ca-bundle.pem');
  assert.match(r.calls, new RegExp(`gcloud auth activate-service-account[^\n]*\ngcloud sees CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=${bundlePath} REQUESTS_CA_BUNDLE=${bundlePath}\n`));
});

test('entrypoint without an extra CA bundle changes nothing; one without a certificate refuses to start', () => {
  const none = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', JAVA_OPTS: '-Xmx1g', DIGDAG_EXTRA_CA_FILE: path.join(tempDir(), 'absent.crt') } });
  assert.equal(none.status, 0, none.stderr);
  assert.doesNotMatch(none.calls, /trustStore/);
  assert.equal(fs.existsSync(path.join(none.dir, 'work', 'extra-ca')), false);
  const junk = path.join(tempDir(), 'ca.crt');
  fs.writeFileSync(junk, 'not a certificate\n');
  const bad = runEntrypoint(['server'], { env: { DIGDAG_ROLE: 'agent', DIGDAG_EXTRA_CA_FILE: junk } });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /holds no PEM certificate/);
  assert.equal(bad.calls, '');
});
