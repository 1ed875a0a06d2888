// One renderer for every Kubernetes object: chart/digdag-ha is the source; the toolkit renders it
// with values from its config, and manifests/ is it rendered with the defaults. Here: the committed
// generated files are current, the three forms are the same objects, what only TypeScript knows
// (role flags, properties, private ranges) reaches the chart through its generated files and is not
// restated in the templates, and a refusal of the chart or a missing helm stops apply before any change.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { UserError } from '../../lib/errors.ts';
import { chartGeneratedFiles, defaultConfig, MANIFEST_TARGETS, manifestFiles, toolkitData } from '../../lib/kube/chart-files.ts';
import { chartRefusal, helmTemplateArgv, parseObjects, PRIVATE_CIDRS, renderDir, renderManifests } from '../../lib/kube/render.ts';
import { valuesFromConfig } from '../../lib/kube/values.ts';
import { ROOT } from '../../lib/paths.ts';
import { runStep, runSteps } from '../../lib/pipeline.ts';
import { LAYOUT_FLAGS, LAYOUT_ROLES, LAYOUTS, roleFlags } from '../../lib/roles.ts';
import { RecordingRunner, ShellRunner, type Cmd } from '../../lib/runner.ts';
import { ALL_STEPS } from '../../tasks/all.ts';
import { apply } from '../../tasks/apply.ts';
import { createSecret } from '../../tasks/create-secret.ts';
import { CHART } from '../helpers/chart.ts';
import { tempDir, testConfig, testCtx } from '../helpers/fixtures.ts';
import { helmBin } from '../helpers/tools.ts';

const runner = new ShellRunner(false, () => {});
/** The manifest's objects without its header comment. */
const body = (text: string) => text.slice(text.indexOf('\n---\n') + 1);

test('the chart\'s generated files (role table, properties templates, monitoring copies) are current', () => {
  for (const [f, text] of Object.entries(chartGeneratedFiles())) {
    assert.equal(fs.readFileSync(path.join(ROOT, f), 'utf8'), text, `${f} is stale: run npm run generate`);
  }
});

test('manifests/ (the plain objects for kubectl apply, and their values) are current', async () => {
  const files = await manifestFiles(runner);
  assert.deepEqual(Object.keys(files).sort(), MANIFEST_TARGETS.flatMap((t) => [`manifests/${t}.values.yaml`, `manifests/${t}.yaml`]).sort());
  for (const [f, text] of Object.entries(files)) assert.equal(fs.readFileSync(path.join(ROOT, f), 'utf8'), text, `${f} is stale: run npm run manifests`);
  assert.deepEqual(fs.readdirSync(path.join(ROOT, 'manifests')).sort(), Object.keys(files).map((f) => path.basename(f)).sort(), 'nothing else under manifests/');
  for (const t of MANIFEST_TARGETS) assert.match(files[`manifests/${t}.yaml`]!, /do not edit/);
});

for (const target of MANIFEST_TARGETS) test(`${target} defaults: the toolkit's render, helm template with the same values and manifests/${target}.yaml are the same objects`, async () => {
  const config = defaultConfig(target, tempDir());
  const toolkit = await renderManifests(config, runner);
  const valuesFile = path.join(renderDir(config), 'values.yaml');
  assert.deepEqual(YAML.parse(fs.readFileSync(valuesFile, 'utf8')), valuesFromConfig(config), 'the values the toolkit rendered with are in the state dir');
  assert.deepEqual(YAML.parse(fs.readFileSync(path.join(ROOT, 'manifests', `${target}.values.yaml`), 'utf8')), valuesFromConfig(config));
  // helm itself, as a user would run it on the committed values file.
  const [, ...args] = helmTemplateArgv(config.k8s.namespace, path.join(ROOT, 'manifests', `${target}.values.yaml`));
  const helm = spawnSync(helmBin(), args, { encoding: 'utf8' });
  assert.equal(helm.status, 0, helm.stderr);
  const committed = body(fs.readFileSync(path.join(ROOT, 'manifests', `${target}.yaml`), 'utf8'));
  assert.equal(toolkit.yaml, helm.stdout);
  assert.equal(toolkit.yaml, committed);
  assert.deepEqual(parseObjects(committed), toolkit.objects);
  // As secure and as sized as the toolkit's render: policies, 2 workers, every pod under the deny.
  assert.ok(toolkit.objects.some((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'digdag-default-deny'));
  assert.equal(toolkit.objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'digdag-worker')!.spec.replicas, 2);
  assert.ok(toolkit.objects.every((o) => o.kind === 'Namespace' || o.metadata.namespace === 'digdag'), 'every object names its namespace');
  assert.ok(!toolkit.objects.some((o) => o.kind === 'Secret'), 'no generated secret in git: create-secret makes them');
});

for (const layout of LAYOUTS) test(`layout ${layout}: every role's args are lib/roles.ts's flags in every rendering`, async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', DIGDAG_HA_LAYOUT: layout });
  const { objects } = await renderManifests(config, runner);
  const committed = layout === 'worker' ? parseObjects(fs.readFileSync(path.join(ROOT, 'manifests', 'minikube.yaml'), 'utf8')) : [];
  for (const role of LAYOUT_ROLES[layout]) {
    for (const objs of [objects, ...(committed.length ? [committed] : [])]) {
      const d = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === `digdag-${role}`)!;
      assert.deepEqual(d.spec.template.spec.containers[0].args, ['server', ...roleFlags(layout, role)], role);
    }
  }
});

test('the values file in the state dir carries no secret (DATABASE_URL\'s password stays out)', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', DATABASE_URL: 'postgresql://dd:pw-secret-123@10.1.2.3:6432/dd_db' });
  const { yaml } = await renderManifests(config, runner);
  const values = fs.readFileSync(path.join(renderDir(config), 'values.yaml'), 'utf8');
  for (const text of [values, yaml]) assert.doesNotMatch(text, /pw-secret-123/);
  assert.match(values, /host: 10\.1\.2\.3/);
});

test('a role flag changed in lib/roles.ts reaches the chart through files/toolkit.yaml alone', () => {
  const copy = path.join(tempDir('digdag-ha-chart-'), 'digdag-ha');
  fs.cpSync(CHART, copy, { recursive: true });
  // What `npm run generate` writes after someone adds a flag to the worker role.
  const data = structuredClone(toolkitData()) as { layouts: Record<string, { flags: Record<string, string[]> }> };
  data.layouts.worker!.flags.worker = [...LAYOUT_FLAGS.worker.worker!, '--x-test-flag'];
  fs.writeFileSync(path.join(copy, 'files', 'toolkit.yaml'), YAML.stringify(data));
  const r = spawnSync(helmBin(), ['template', 'dd', copy, '--skip-tests'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const worker = parseObjects(r.stdout).find((o) => o.kind === 'Deployment' && o.metadata.name === 'digdag-worker')!;
  assert.deepEqual(worker.spec.template.spec.containers[0].args, ['server', '--disable-scheduler', '--x-test-flag']);
});

test('the templates restate nothing only TypeScript knows: no role flag, private range, queue query or Digdag property key', () => {
  const dir = path.join(CHART, 'templates');
  const templates = fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f)).map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')] as const);
  const forbidden = [/--disable-(local-agent|scheduler|executor-loop)/, ...PRIVATE_CIDRS.map((c) => new RegExp(c.replace(/[./]/g, '\\$&'))), /queued_task_locks/,
    /database\.maximumPoolSize|agent\.max-task-threads|server\.jmx\.port|executor\.enqueue_random_fetch/, /jdk\.attach|javaagent/];
  for (const [f, text] of templates) for (const re of forbidden) assert.doesNotMatch(text, re, `templates/${f} restates ${re}`);
});

test('a refusal of the chart is a UserError with its message and the variables to change; apply and create-secret change nothing', async () => {
  assert.equal(
    chartRefusal('Error: execution error at (digdag-ha/templates/ingress.yaml:3:4): ingress.tls.mode=gke-managed needs ingress.host: Google-managed certificates are issued per domain\n'),
    'ingress.tls.mode=gke-managed needs ingress.host: Google-managed certificates are issued per domain',
  );
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', INGRESS_TLS: 'gke-managed' });
  for (const step of [apply, createSecret]) {
    const r = new RecordingRunner((argv) => {
      if (argv[0] === 'helm') {
        const h = spawnSync(helmBin(), argv.slice(1), { encoding: 'utf8' });
        return { code: h.status ?? 1, stdout: h.stdout, stderr: h.stderr };
      }
      if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
      return undefined;
    });
    await assert.rejects(runStep(step, testCtx(config, r)), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.equal(e.message, 'the chart refuses this configuration: ingress.tls.mode=gke-managed needs ingress.host: Google-managed certificates are issued per domain. Set ingress.host=digdag.example.com (a DNS name pointing at the Ingress address), or ingress.tls.mode=cert-manager');
      assert.match(e.fix!, /ingress.tls.mode = INGRESS_TLS, ingress.host = INGRESS_HOST/);
      return true;
    });
    assert.ok(r.calls.every((c: Cmd) => !c.mutates), 'nothing was changed');
    assert.ok(!fs.existsSync(path.join(config.stateDir, 'secrets')), 'no secret generated for a refused configuration');
  }
});

test('the whole pipeline refuses what the chart refuses before build-image runs anything', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', INGRESS_TLS: 'gke-managed' });
  const r = new RecordingRunner((argv) => {
    if (argv[0] !== 'helm') return undefined;
    const h = spawnSync(helmBin(), argv.slice(1), { encoding: 'utf8' });
    return { code: h.status ?? 1, stdout: h.stdout, stderr: h.stderr };
  });
  await assert.rejects(runSteps(ALL_STEPS, testCtx(config, r), { renderer: 'silent' }), /the chart refuses this configuration: ingress\.tls\.mode=gke-managed needs ingress\.host/);
  assert.deepEqual(r.calls.map((c: Cmd) => c.argv[0]), ['helm'], 'only the chart was rendered: no image built, no cluster asked');
});

test('without helm: a UserError naming the fix, before anything changes', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  const r = new RecordingRunner((argv) => (argv[0] === 'helm' ? { code: 127, stderr: 'bash: line 1: helm: command not found' } : argv.includes('version') ? { stdout: '{"serverVersion":{}}' } : undefined));
  await assert.rejects(runStep(apply, testCtx(config, r)), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /helm is not on PATH/);
    assert.match(e.fix!, /bash \.ci\/install.*install helm 3\.16/);
    return true;
  });
  assert.ok(r.calls.every((c: Cmd) => !c.mutates));
});

test('a workload deployed before the chart was the renderer (other selector, immutable) is replaced, not a failed apply', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube' });
  let applies = 0;
  const r = new RecordingRunner((argv) => {
    if (argv[0] === 'helm') {
      const h = spawnSync(helmBin(), argv.slice(1), { encoding: 'utf8' });
      return { code: h.status ?? 1, stdout: h.stdout, stderr: h.stderr };
    }
    if (argv.includes('version')) return { stdout: '{"serverVersion":{}}' };
    if (argv.includes('apply') && applies++ === 0) {
      return { code: 1, stderr: 'The Deployment "digdag-ui" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app.kubernetes.io/component":"ui"}}: field is immutable\nThe StatefulSet "digdag-postgres" is invalid: spec: Forbidden: updates to statefulset spec for fields other than \'replicas\' are forbidden\n' };
    }
    return undefined;
  });
  await runStep(apply, testCtx(config, r));
  const K = `kubectl --context ${config.k8s.context} -n ${config.k8s.namespace}`;
  const cmds = r.commands();
  const i = cmds.indexOf(`${K} apply -f -`);
  assert.deepEqual(cmds.slice(i, i + 4), [`${K} apply -f -`, `${K} delete deployment digdag-ui --wait=true`, `${K} delete statefulset digdag-postgres --wait=true`, `${K} apply -f -`]);
  assert.ok(r.lines.some((l) => /digdag-ui has a selector from an older rendering/.test(l)));
});
