// Scale to zero (AUTOSCALING_MIN_REPLICAS=0 → the chart's autoscaling.minReplicas): KEDA's
// ScaledObject with minReplicaCount 0 that activates on the first queued task, in both layouts;
// refused with the fix for an HPA (it cannot go to zero), without an autoscaler, and wherever no
// role outside the workers runs an executor loop (the rule reads lib/roles.ts through
// files/toolkit.yaml: a chart whose ui lost its loop refuses).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { UserError } from '../../lib/errors.ts';
import { renderManifests } from '../../lib/kube/render.ts';
import { valuesFromConfig } from '../../lib/kube/values.ts';
import { executorRoles, taskRole } from '../../lib/roles.ts';
import { ShellRunner } from '../../lib/runner.ts';
import { CHART, helmTemplate } from '../helpers/chart.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';
import { validateStrictly } from '../helpers/tools.ts';

const runner = new ShellRunner(false, () => {});
const scaledObject = (set: string[]) => {
  const r = helmTemplate(set);
  assert.equal(r.status, 0, r.stderr);
  return { so: r.objects.find((o) => o.kind === 'ScaledObject')!, objects: r.objects };
};

test('every layout keeps an executor loop outside the task-running role (what scale to zero relies on)', () => {
  assert.deepEqual(executorRoles('worker').filter((r) => r !== taskRole('worker')), ['ui']);
  assert.deepEqual(executorRoles('split').filter((r) => r !== taskRole('split')), ['workflow']);
});

test('KEDA from zero: minReplicaCount 0, active from the first queued task, the Deployment\'s count left to KEDA; valid objects; both layouts', async () => {
  for (const layout of ['worker', 'split']) {
    const { so, objects } = scaledObject([`layout=${layout}`, 'autoscaling.mode=keda', 'autoscaling.minReplicas=0', 'autoscaling.maxReplicas=4']);
    assert.equal(so.spec.minReplicaCount, 0, layout);
    assert.equal(so.spec.maxReplicaCount, 4);
    assert.equal(so.spec.scaleTargetRef.name, `digdag-${taskRole(layout as 'worker' | 'split')}`);
    assert.equal(so.spec.triggers[0].metadata.activationTargetQueryValue, '0', 'one queued task brings a pod up');
    assert.equal(so.spec.triggers[0].metadata.targetQueryValue, '4');
    const d = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === `digdag-${taskRole(layout as 'worker' | 'split')}`)!;
    assert.equal(d.spec.replicas, undefined, 'KEDA owns the count');
    assert.deepEqual(await validateStrictly(objects), []);
  }
  // The lower bound comes from minReplicas when set, from the role's replicas otherwise.
  assert.equal(scaledObject(['autoscaling.mode=keda', 'roles.worker.replicas=2', 'autoscaling.minReplicas=1']).so.spec.minReplicaCount, 1);
  assert.equal(scaledObject(['autoscaling.mode=keda', 'roles.worker.replicas=2']).so.spec.minReplicaCount, 2);
  const hpa = helmTemplate(['autoscaling.mode=hpa', 'autoscaling.minReplicas=3', 'autoscaling.maxReplicas=5']).objects.find((o) => o.kind === 'HorizontalPodAutoscaler')!;
  assert.equal(hpa.spec.minReplicas, 3);
});

test('refused with the fix: an HPA to zero, zero without an autoscaler, a negative bound, max below min', () => {
  const refused = (set: string[], re: RegExp) => {
    const r = helmTemplate(set);
    assert.notEqual(r.status, 0, set.join(' '));
    assert.match(r.stderr, re, set.join(' '));
  };
  refused(['autoscaling.mode=hpa', 'autoscaling.minReplicas=0'], /autoscaling.minReplicas=0 with autoscaling.mode=hpa: a HorizontalPodAutoscaler cannot scale the workers to zero .*set autoscaling.mode=keda for scale to zero, or autoscaling.minReplicas=1 or more/);
  refused(['layout=split', 'autoscaling.mode=hpa', 'autoscaling.minReplicas=0'], /cannot scale the agents to zero/);
  refused(['autoscaling.minReplicas=0'], /autoscaling.minReplicas=0 scales the workers to zero, which only autoscaling.mode=keda does.*set autoscaling.mode=keda, or leave autoscaling.minReplicas empty/);
  refused(['autoscaling.mode=keda', 'autoscaling.minReplicas=-1'], /autoscaling.minReplicas: Must be greater than or equal to 0/);
  refused(['autoscaling.mode=keda', 'autoscaling.minReplicas=4', 'autoscaling.maxReplicas=3'], /autoscaling.maxReplicas=3 is below autoscaling.minReplicas=4/);
});

test('the executor-loop rule follows lib/roles.ts: a chart whose ui had no loop refuses scale to zero in the worker layout, naming the fix', () => {
  const chart = path.join(tempDir('digdag-ha-loopless-'), 'digdag-ha');
  fs.cpSync(CHART, chart, { recursive: true });
  const file = path.join(chart, 'files', 'toolkit.yaml');
  const toolkit = YAML.parse(fs.readFileSync(file, 'utf8'));
  toolkit.layouts.worker.executorRoles = ['worker'];
  fs.writeFileSync(file, YAML.stringify(toolkit));
  const r = helmTemplate(['autoscaling.mode=keda', 'autoscaling.minReplicas=0'], chart);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /autoscaling.minReplicas=0: layout worker runs the executor loop only in its workers, so with none left a submitted attempt's tasks never reach the queue and nothing brings a worker back: set autoscaling.minReplicas=1 or more/);
  assert.equal(helmTemplate(['autoscaling.mode=keda', 'autoscaling.minReplicas=1'], chart).status, 0, 'a floor of one is fine');
});

test('from the toolkit: AUTOSCALING_MIN_REPLICAS reaches the chart; its refusals name the variables to change', async () => {
  const config = testConfig({ DIGDAG_HA_TARGET: 'minikube', AGENT_AUTOSCALING: 'keda', AUTOSCALING_MIN_REPLICAS: '0', AGENT_MAX_REPLICAS: '4' });
  assert.equal(config.k8s.autoscalingMinReplicas, 0);
  assert.equal((valuesFromConfig(config).autoscaling as { minReplicas: number }).minReplicas, 0);
  const { objects } = await renderManifests(config, runner);
  assert.equal(objects.find((o) => o.kind === 'ScaledObject')!.spec.minReplicaCount, 0);
  // Empty (the default): no value, so the chart's lower bound stays WORKER_REPLICAS.
  assert.equal('minReplicas' in (valuesFromConfig(testConfig({ DIGDAG_HA_TARGET: 'minikube' })).autoscaling as object), false);
  assert.throws(() => testConfig({ AUTOSCALING_MIN_REPLICAS: 'none' }), /AUTOSCALING_MIN_REPLICAS/);
  const refused = async (vars: Record<string, string>, message: RegExp, variables: RegExp) =>
    assert.rejects(renderManifests(testConfig({ DIGDAG_HA_TARGET: 'minikube', ...vars }), runner), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, message);
      assert.match(e.fix!, variables);
      return true;
    });
  await refused({ AGENT_AUTOSCALING: 'hpa', AUTOSCALING_MIN_REPLICAS: '0' }, /HorizontalPodAutoscaler cannot scale the workers to zero/, /autoscaling.minReplicas = AUTOSCALING_MIN_REPLICAS, autoscaling.mode = AGENT_AUTOSCALING/);
  await refused({ AUTOSCALING_MIN_REPLICAS: '0' }, /only autoscaling.mode=keda does/, /AUTOSCALING_MIN_REPLICAS.*AGENT_AUTOSCALING/);
  await refused({ AGENT_AUTOSCALING: 'keda', AUTOSCALING_MIN_REPLICAS: '5', AGENT_MAX_REPLICAS: '3' }, /autoscaling.maxReplicas=3 is below autoscaling.minReplicas=5/, /AGENT_MAX_REPLICAS.*AUTOSCALING_MIN_REPLICAS/);
});
