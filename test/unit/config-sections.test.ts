// Config sections (lib/config/*.ts): every section refuses a bad value naming the variable, the
// rule and an example; each section's own rules, checked on the section alone.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { loadConfig, VARIABLES } from '../../lib/config.ts';
import { clusterSection } from '../../lib/config/cluster.ts';
import { localConfig } from '../../lib/config/local.ts';
import { metricsConfig } from '../../lib/config/metrics.ts';
import { rolesConfig } from '../../lib/config/roles.ts';
import { runtimeConfig } from '../../lib/config/runtime.ts';
import { securityConfig } from '../../lib/config/security.ts';
import { parseValue, Values, type Target, type VarSpec } from '../../lib/config/spec.ts';
import { workflowsConfig } from '../../lib/config/workflows.ts';
import { UserError } from '../../lib/errors.ts';
import { ROOT } from '../../lib/paths.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

/** Every variable at its default, then `vars`, parsed as loadConfig would. */
function values(vars: Record<string, string> = {}, target: Target = 'local', env: Record<string, string | undefined> = {}): Values {
  const parsed = Object.fromEntries(VARIABLES.map((s) => [s.name, parseValue(s, vars[s.name] ?? s.default, 'test')]));
  return new Values(parsed, target, ROOT, env);
}

function refuses(fn: () => unknown, message: RegExp, fix: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError, got ${String(err)}`);
    assert.match(err.message, message);
    assert.match(err.fix ?? '', fix);
    return true;
  });
}

/** A value the declaration refuses, and what the message says about it. */
function badValue(spec: VarSpec): [string, RegExp] | undefined {
  const k = spec.kind;
  if (k.type === 'int') return [String(k.max + 1), new RegExp(`is out of range \\(${k.min}\\.\\.${k.max}\\)`)];
  if (k.type === 'enum') return ['no-such-choice', /is not one of: /];
  if (k.type === 'bool') return ['maybe', /is not true or false/];
  const candidate = ['has spaces and !', '-', 'UPPER CASE', '@@'].find((c) => k.pattern && !k.pattern.test(c));
  return candidate === undefined ? undefined : [candidate, /has the wrong form/];
}

test('every section refuses a bad value naming the variable, the rule and an example', () => {
  const groups = new Set<string>();
  for (const spec of VARIABLES) {
    const bad = badValue(spec);
    if (!bad) continue;
    groups.add(spec.group);
    const shown = spec.secret ? '\\*\\*\\*' : JSON.stringify(bad[0]).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    refuses(() => parseValue(spec, bad[0], 'environment'), new RegExp(`^${spec.name}=${shown} \\(from environment\\) ${bad[1].source}`), new RegExp(`^set ${spec.name} to a value like ${spec.name}=`));
  }
  // Every section has a variable with a rule of its form (the test cluster's: CLUSTER_ADDONS; its others are the section's own, below).
  assert.deepEqual([...groups].sort(), [...new Set(VARIABLES.map((v) => v.group))].sort());
});

test('sections are listed in the documented order, each variable once', () => {
  const names = VARIABLES.map((v) => v.name);
  assert.equal(new Set(names).size, names.length);
  const order = [...new Set(VARIABLES.map((v) => v.group))];
  assert.deepEqual(order, ['General', 'Digdag runtime', 'Roles', 'Database', 'Workflows', 'Local target', 'Logs and GCP', 'GCP home (tasks/gcp.ts)', 'Kubernetes', 'Security', 'Metrics', 'Test cluster']);
});

test('runtime: a jar source needs an existing jar, and a jar needs the jar source', () => {
  refuses(() => runtimeConfig(values({ DIGDAG_SOURCE: 'jar' })), /DIGDAG_SOURCE=jar needs DIGDAG_JAR/, /DIGDAG_JAR=\/path\/to\/digdag/);
  refuses(() => runtimeConfig(values({ DIGDAG_JAR: '/x.jar' })), /DIGDAG_JAR is set but DIGDAG_SOURCE is not jar/, /DIGDAG_SOURCE=jar/);
  refuses(() => runtimeConfig(values({ DIGDAG_SOURCE: 'jar', DIGDAG_JAR: '/nonexistent/digdag.jar' })), /DIGDAG_JAR=\/nonexistent\/digdag.jar does not exist/, /DIGDAG_SOURCE=maven/);
  assert.equal(runtimeConfig(values({ MAVEN_REPO_URL: 'https://mirror.example.com/maven2//' })).mavenRepoUrl, 'https://mirror.example.com/maven2');
});

test('roles: timings default by target; the heartbeat rule is the section\'s', () => {
  assert.equal(rolesConfig(values()).agent.lockExpireInterval, 2);
  assert.equal(rolesConfig(values({}, 'gke')).agent.lockExpireInterval, 10);
  refuses(() => rolesConfig(values({ AGENT_HEARTBEAT_INTERVAL: '0' })), /AGENT_HEARTBEAT_INTERVAL must be at least 1 second/, /AGENT_HEARTBEAT_INTERVAL=10/);
  assert.equal(rolesConfig(values({ UI_REPLICAS: '0' })).replicas.ui, 0, 'local: every role serves the API');
});

test('workflows: the directory must exist; the project name defaults to its name', () => {
  refuses(() => workflowsConfig(values({ WORKFLOW_DIR: '/nonexistent/flows' })), /WORKFLOW_DIR=\/nonexistent\/flows does not exist/, /WORKFLOW_DIR/);
  const dir = tempDir('dh-flows-');
  assert.deepEqual(workflowsConfig(values({ WORKFLOW_DIR: dir })), { dir, project: path.basename(dir) });
  assert.deepEqual(workflowsConfig(values({ WORKFLOW_DIR: dir, WORKFLOW_PROJECT: 'mine' })), { dir, project: 'mine' });
  assert.deepEqual(workflowsConfig(values()), { dir: '', project: '' });
});

test('local target and metrics: the HTTP and metrics port ranges fit and do not overlap (local only)', () => {
  const roles = rolesConfig(values({ WORKER_REPLICAS: '10' }));
  refuses(() => localConfig(values({ LOCAL_PORT_BASE: '65500', WORKER_REPLICAS: '50' }), rolesConfig(values({ WORKER_REPLICAS: '50' }))), /LOCAL_PORT_BASE=65500 leaves no room for 52 processes/, /LOCAL_PORT_BASE=65432/);
  const local = localConfig(values({ LOCAL_PORT_BASE: '9400' }), roles);
  refuses(() => metricsConfig(values({ LOCAL_METRICS_PORT_BASE: '9405' }), roles, local), /LOCAL_METRICS_PORT_BASE=9405 \(ports 9405-9429\) overlaps the HTTP ports 9400-9411/, /LOCAL_METRICS_PORT_BASE=9412/);
  assert.equal(metricsConfig(values({ LOCAL_METRICS_PORT_BASE: '9405' }, 'gke'), roles, local).localPortBase, 9405, 'Kubernetes: pods have their own ports');
});

test('security: nginx basic auth needs Digdag\'s password; egress CIDRs are CIDRs', () => {
  refuses(() => securityConfig(values({ EDGE_AUTH: 'nginx-basic', AUTH: 'none' }, 'gke')), /EDGE_AUTH=nginx-basic uses the UI\/API user/, /AUTH=basic/);
  refuses(() => securityConfig(values({ EGRESS_CIDRS: ',' })), /EGRESS_CIDRS="," names no CIDR/, /EGRESS_CIDRS=0.0.0.0\/0/);
  refuses(() => securityConfig(values({ EGRESS_CIDRS: '10.0.0.0' })), /EGRESS_CIDRS has "10.0.0.0", which is not a CIDR/, /EGRESS_CIDRS=0.0.0.0\/0/);
  assert.deepEqual(securityConfig(values({ EGRESS_CIDRS: 'none' })).egressCidrs, []);
  assert.deepEqual(securityConfig(values({ INGRESS_CONTROLLER_LABELS: 'a=b,c=d' })).ingressControllerLabels, { a: 'b', c: 'd' });
});

test('test cluster: state and cache dirs default from the state dir and XDG_CACHE_HOME/HOME; images and mirror are checked', () => {
  const d = clusterSection(values({}, 'local', { HOME: '/home/u' }));
  assert.equal(d.dir, path.join(ROOT, '.state', 'test-cluster'));
  assert.equal(d.kubeconfig, path.join(ROOT, '.state', 'test-cluster', 'kubeconfig'));
  assert.equal(d.cacheDir, '/home/u/.cache/digdag-ha');
  assert.equal(d.baseImage, 'digdag-ha-base:bookworm');
  assert.equal(d.debianMirror, 'http://deb.debian.org/debian');
  assert.equal(clusterSection(values({}, 'local', { HOME: '/home/u', XDG_CACHE_HOME: '/xdg' })).cacheDir, '/xdg/digdag-ha');
  assert.equal(clusterSection(values({ DIGDAG_HA_CACHE_DIR: '/c', DIGDAG_HA_CLUSTER_DIR: '/var/tmp/c' }, 'local', { XDG_CACHE_HOME: '/xdg' })).cacheDir, '/c');
  assert.equal(clusterSection(values({ DIGDAG_HA_STATE_DIR: '/s' })).dir, '/s/test-cluster');
  refuses(() => clusterSection(values({ CLUSTER_BASE_IMAGE: 'digdag-ha-base' })), /CLUSTER_BASE_IMAGE=digdag-ha-base is not an image name with a tag/, /CLUSTER_BASE_IMAGE=digdag-ha-base:bookworm/);
  refuses(() => clusterSection(values({ CLUSTER_DEBIAN_MIRROR: 'deb.debian.org' })), /CLUSTER_DEBIAN_MIRROR=deb.debian.org is not a URL/, /CLUSTER_DEBIAN_MIRROR=http:\/\/deb.debian.org\/debian/);
});

test('test cluster: the harness reads the same config — .env, environment and --set — not process.env', () => {
  const state = tempDir();
  const envFile = path.join(state, '.env');
  fs.writeFileSync(envFile, 'DIGDAG_HA_CLUSTER_DIR=/var/tmp/from-env-file\nCLUSTER_BASE_IMAGE=my-base:1\n');
  const saved = process.env.DIGDAG_HA_CLUSTER_DIR;
  process.env.DIGDAG_HA_CLUSTER_DIR = '/var/tmp/ignored';
  try {
    const config = testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_TARGET: 'cluster', CLUSTER_DEBIAN_MIRROR: 'http://mirror.example.com/debian' });
    assert.equal(loadClusterConfig(config).dir, path.join(state, 'test-cluster'), 'the process environment is not read behind loadConfig\'s back');
    const fromFile = loadConfig({ root: ROOT, envFile, env: {}, overrides: { DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_TARGET: 'cluster' } });
    const cc = loadClusterConfig(fromFile);
    assert.equal(cc.dir, '/var/tmp/from-env-file');
    assert.equal(cc.baseImage, 'my-base:1');
    assert.equal(fromFile.k8s.baseImage, 'my-base:1', 'the cluster target builds on the harness\'s base');
    assert.equal(loadClusterConfig(config).debianMirror, 'http://mirror.example.com/debian');
  } finally {
    if (saved === undefined) delete process.env.DIGDAG_HA_CLUSTER_DIR;
    else process.env.DIGDAG_HA_CLUSTER_DIR = saved;
  }
  const long = `/tmp/${'x'.repeat(80)}`;
  refuses(() => loadClusterConfig(testConfig({ DIGDAG_HA_CLUSTER_DIR: long })), /DIGDAG_HA_CLUSTER_DIR=.* is too long for the unix sockets/, /DIGDAG_HA_CLUSTER_DIR to a shorter path/);
  assert.ok(testConfig({ DIGDAG_HA_CLUSTER_DIR: long }), 'a long cluster dir fails only when the cluster is used');
});
