// verify-ha on Kubernetes: pods ready with the role's args, the API, the sample workflow, and
// one pod of every role deleted mid-run.
import { getAttempt, logFiles, waitAttempt } from '../digdag-api.ts';
import { answersVersion } from '../digdag.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { waitFor } from '../processes.ts';
import { apiEndpoint } from '../push-workflow.ts';
import { ROLES, ROLE_FLAGS, type Role } from '../roles.ts';
import { notInDryRun, report, runParallel, type Check } from '../verify.ts';
import { kubectl, requireCluster } from './kubectl.ts';
import { startPortForward } from './port-forward.ts';

/** The container args a role's pods must run with. */
export const expectedArgs = (role: Role) => ['server', ...ROLE_FLAGS[role]];

/** Kubernetes: pods ready with the role's args, the API through the Ingress, the sample
 * workflow, and one pod of every role deleted mid-run without failing the workflow. */
export async function verifyKube(ctx: Ctx): Promise<Check[]> {
  const { config, runner } = ctx;
  const checks: Check[] = [];
  const add = (role: Role, what: string, ok: boolean, detail: string) => {
    checks.push({ role, what, ok, detail });
    runner.log(`${ok ? 'ok' : 'FAILED'} ${role}: ${what} — ${detail}`);
  };
  await requireCluster(ctx);
  const podsOf = async (role: Role) => {
    const res = await runner.run({ argv: kubectl(config, 'get', 'pods', '-l', `app.kubernetes.io/component=${role}`, '-o', 'json'), quiet: true });
    return (JSON.parse(res.stdout || '{"items":[]}') as { items: { metadata: { name: string; deletionTimestamp?: string }; spec: { containers: { args?: string[] }[] }; status: { conditions?: { type: string; status: string }[] } }[] }).items;
  };
  for (const role of ROLES) {
    const pods = (await podsOf(role)).filter((p) => !p.metadata.deletionTimestamp);
    const ready = pods.filter((p) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    const argsOk = pods.every((p) => JSON.stringify(p.spec.containers[0]?.args) === JSON.stringify(expectedArgs(role)));
    add(role, 'pods ready with the role\'s flags', ready.length >= Math.min(1, config.replicas[role]) && argsOk, `${ready.length}/${pods.length} ready; args ${expectedArgs(role).join(' ')}`);
  }
  const ingress = ctx.facts.ingressEndpoint as string | undefined;
  if (ingress) add('ui', 'API answers through the Ingress', !!(await answersVersion(ingress)), `${ingress}/api/version`);
  let endpoint = apiEndpoint(ctx);
  const first = await runParallel(endpoint, 6, 2);
  const a1 = await waitAttempt(endpoint, first, 300_000);
  add('workflow', 'sample workflow (6 parallel sh> tasks) succeeds', a1.success, `attempt ${first}: ${a1.status ?? ''}`);
  const files = await logFiles(endpoint, first).catch(() => []);
  if (files.length) {
    const agentPods = new Set((await podsOf('agent')).map((p) => p.metadata.name));
    const foreign = files.filter((f) => ![...agentPods].some((pod) => f.agentId.endsWith(`@${pod}`)));
    add('agent', 'tasks ran on agent pods only', foreign.length === 0, `${files.length} task logs; agent ids ${[...new Set(files.map((f) => f.agentId))].join(', ')}`);
  }
  // One pod of every role deleted while the workflow runs: Kubernetes replaces them, the
  // agent's tasks are retried after the lock retention, and the attempt still succeeds.
  const disrupted = await runParallel(endpoint, 4, 30);
  await waitFor(async () => (await logFiles(endpoint, disrupted).catch(() => [])).length > 0 || (await getAttempt(endpoint, disrupted)).done, 120_000, 2000);
  const deleted: string[] = [];
  for (const role of ROLES) {
    const pod = (await podsOf(role))[0];
    if (!pod) continue;
    await runner.run({ argv: kubectl(config, 'delete', 'pod', pod.metadata.name, '--wait=false'), mutates: true });
    deleted.push(pod.metadata.name);
  }
  for (const role of ROLES) await runner.run({ argv: kubectl(config, 'rollout', 'status', `deployment/digdag-${role}`, `--timeout=${config.k8s.rolloutTimeoutSeconds}s`), mutates: true });
  // The forward was bound to a deleted UI pod; re-establish it.
  if (!ingress) { ctx.facts.endpoint = await startPortForward(ctx); endpoint = apiEndpoint(ctx); }
  const budget = (30 + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + config.k8s.rolloutTimeoutSeconds) * 1000;
  const a2 = await waitAttempt(endpoint, disrupted, budget);
  add('agent', 'workflow survives deleting one pod of every role mid-run', a2.success, `attempt ${disrupted} ${a2.success ? 'succeeded' : 'FAILED'} after deleting ${deleted.join(', ')}`);
  return checks;
}


export const verifyHa: Impl = {
  notApplicable: notInDryRun,
  run: async (ctx) => report(ctx, await verifyKube(ctx), `kubectl -n ${ctx.config.k8s.namespace} get events; kubectl -n ${ctx.config.k8s.namespace} logs -l app.kubernetes.io/name=digdag`),
};
