// verify-ha on Kubernetes: as strict as the local one — every role's pods ready with the layout's
// args, tasks only on task-running pods (seen in queued_task_locks while they run), a pod holding
// a task force-deleted (SIGKILL) plus one pod of every other role deleted mid-run and the attempt
// still succeeding with the task re-run by another pod, the executor loops scaled to zero → an
// attempt does not move, the scheduler firing a due schedule. No check drops out of the table.
import { apiCredentials, authenticatedEndpoint } from '../auth.ts';
import { attemptTasks, getAttempt, waitAttempt } from '../digdag-api.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { waitFor } from '../processes.ts';
import { apiEndpoint } from '../push-workflow.ts';
import { executorRoles, holdsApiPassword, layoutRoles, roleFlags, taskRole, type Layout, type Role } from '../roles.ts';
import { heldLocks, notInDryRun, proveAuth, proveScheduler, report, runParallel, shTaskIds, type Check } from '../verify.ts';
import { probeIngress } from './ingress-probe.ts';
import { kubectl, requireCluster, rollout } from './kubectl.ts';
import { startPortForward } from './port-forward.ts';
import { dbLocation } from './render.ts';

/** The container args a role's pods must run with. */
export const expectedArgs = (layout: Layout, role: Role) => ['server', ...roleFlags(layout, role)];

interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: { args?: string[] }[] };
  status: { phase?: string; conditions?: { type: string; status: string }[] };
}

async function podsOf(ctx: Ctx, role: Role): Promise<Pod[]> {
  const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', `app.kubernetes.io/component=${role}`, '-o', 'json'), quiet: true });
  return ((JSON.parse(res.stdout || '{"items":[]}') as { items: Pod[] }).items).filter((p) => !p.metadata.deletionTimestamp);
}

const isReady = (p: Pod) => !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/** A query against Digdag's database: through `kubectl exec` on the in-cluster server, or
 * directly with DATABASE_URL. */
export function dbQuery(ctx: Ctx): (sql: string) => Promise<string> {
  if (ctx.config.db.externalUrl) {
    return async (sql) => queryAsApp(ctx.runner, ctx.config, await dbEndpoint(ctx.config, ''), sql);
  }
  const db = dbLocation(ctx.config);
  return async (sql) =>
    (await ctx.runner.run({ argv: kubectl(ctx.config, 'exec', 'digdag-postgres-0', '-c', 'postgres', '--', 'psql', '-X', '-At', '-U', 'postgres', '-d', db.database, '-c', sql), quiet: true })).stdout.trim();
}

/** Digdag's default agent id is pid@pod-name. */
const podOfAgent = (agentId: string) => agentId.slice(agentId.indexOf('@') + 1);

async function scale(ctx: Ctx, role: Role, replicas: number): Promise<void> {
  await ctx.runner.run({ argv: kubectl(ctx.config, 'scale', `deployment/digdag-${role}`, `--replicas=${replicas}`), mutates: true });
}

export async function verifyKube(ctx: Ctx): Promise<Check[]> {
  const { config, runner } = ctx;
  const checks: Check[] = [];
  const add = (role: string, what: string, ok: boolean, detail: string) => {
    checks.push({ role, what, ok, detail });
    runner.log(`${ok ? 'ok' : 'FAILED'} ${role}: ${what} — ${detail}`);
  };
  await requireCluster(ctx);
  const tasksRole = taskRole(config.layout);
  const query = dbQuery(ctx);

  for (const role of layoutRoles(config)) {
    const pods = await podsOf(ctx, role);
    const ready = pods.filter(isReady);
    const want = expectedArgs(config.layout, role);
    const wrong = pods.filter((p) => JSON.stringify(p.spec.containers[0]?.args) !== JSON.stringify(want)).map((p) => p.metadata.name);
    add(role, "pods ready with the role's flags", ready.length >= Math.min(1, config.replicas[role]) && !wrong.length,
      `${ready.length}/${pods.length} ready; args ${want.join(' ')}${wrong.length ? `; WRONG args on ${wrong.join(', ')}` : ''}`);
  }
  const ingress = ctx.facts.ingressAddress as string | undefined;
  if (ingress) {
    const r = await probeIngress(config, { address: ingress });
    add('ui', `through the Ingress (${r.url}): ${config.security.ingressTls === 'none' ? '' : 'HTTP redirected to HTTPS, '}401 without credentials, 200 with them`, r.ok, r.detail);
  }

  // 0. Every role's port (one pod each, through a port-forward to that pod) refuses requests
  //    without the right credentials; task-running pods refuse even the UI/API password.
  for (const role of layoutRoles(config)) {
    const pod = (await podsOf(ctx, role)).find(isReady);
    if (!pod) continue;
    const name = pod.metadata.name;
    // One tracked port-forward moves from pod to pod: each is checked while it points there.
    const url = await startPortForward(ctx, `pod/${name}`);
    const log = async () => (await runner.run({ argv: kubectl(config, 'logs', name, '-c', 'digdag'), quiet: true, nothrow: true })).stdout;
    for (const c of await proveAuth([{ role, name, url, opens: holdsApiPassword(role), log }], apiCredentials(config))) add(c.role, c.what, c.ok, c.detail);
  }
  ctx.facts.endpoint = await startPortForward(ctx);
  let endpoint = apiEndpoint(ctx);

  // 1. Tasks run only on task-running pods: every lock of a running fan-out is held by one of them.
  const taskPods = new Set((await podsOf(ctx, tasksRole)).map((p) => p.metadata.name));
  const first = await runParallel(endpoint, 4, 15);
  const holders = new Set<string>();
  // Each task holds its lock for 15 s: sampling every 250 ms until the attempt ends sees them all.
  await waitFor(async () => {
    for (const h of await heldLocks(query, first)) holders.add(podOfAgent(h.agent));
    return (await getAttempt(endpoint, first)).done;
  }, 300_000, 250);
  const a1 = await waitAttempt(endpoint, first, 30_000);
  const foreign = [...holders].filter((p) => !taskPods.has(p));
  add(tasksRole, 'sample workflow succeeds; its tasks ran only on task-running pods', a1.success && holders.size > 0 && !foreign.length,
    `attempt ${first} ${a1.success ? 'succeeded' : 'FAILED'}; task locks held by ${[...holders].join(', ') || 'NOBODY SEEN'}${foreign.length ? `; NOT ${tasksRole} pods: ${foreign.join(', ')}` : ''}`);

  // 2. Executor loops scaled to zero: an attempt submitted through a pod without a loop does not move.
  const loops = executorRoles(config.layout);
  const via = layoutRoles(config).find((r) => !loops.includes(r) && config.replicas[r] > 0);
  if (!via) {
    add(loops.join('+'), 'executor loop runs only where the layout puts it', true, 'not checkable: every role of this layout runs an executor loop (SCHEDULER_REPLICAS=0)');
  } else {
    const viaPod = (await podsOf(ctx, via)).find(isReady);
    if (!viaPod) throw new UserError(`no ready ${via} pod to submit through`, 'check the rollout (apply)');
    for (const r of loops) await scale(ctx, r, 0);
    try {
      await waitFor(async () => (await Promise.all(loops.map((r) => podsOf(ctx, r)))).every((p) => p.length === 0), config.k8s.rolloutTimeoutSeconds * 1000, 1000);
      const viaEndpoint = authenticatedEndpoint(config, await startPortForward(ctx, `pod/${viaPod.metadata.name}`));
      const stalled = await runParallel(viaEndpoint, 2, 1);
      const states = async () => JSON.stringify((await attemptTasks(viaEndpoint, stalled)).map((t) => [t.id, t.state]));
      const submitted = await states();
      const moved = await waitFor(async () => (await states()) !== submitted, 10_000, 1000);
      for (const r of loops) await scale(ctx, r, config.replicas[r]);
      for (const r of loops) await rollout(ctx, 'deployment', `digdag-${r}`, `app.kubernetes.io/component=${r}`);
      ctx.facts.endpoint = await startPortForward(ctx);
      endpoint = apiEndpoint(ctx);
      const a2 = await waitAttempt(endpoint, stalled, 300_000);
      add(loops.join('+'), 'executor loop runs only where the layout puts it', !moved && a2.success,
        `with ${loops.map((r) => `digdag-${r}`).join(', ')} scaled to 0, attempt ${stalled} (submitted through ${viaPod.metadata.name}) ${moved ? 'MOVED' : 'did not move'} for 10s; scaled back, it ${a2.success ? 'succeeded' : 'FAILED'}`);
    } finally {
      for (const r of loops) await scale(ctx, r, config.replicas[r]);
    }
  }

  // 3. Force-delete (SIGKILL, no grace) the pod holding a task and delete one pod of every other
  //    role: replacements come up, another pod re-runs the task, the attempt succeeds.
  const disrupted = await runParallel(endpoint, 4, 30);
  let held: { taskId: string; agent: string }[] = [];
  const shTasks = shTaskIds(endpoint, disrupted);
  await waitFor(async () => {
    const sh = await shTasks();
    return (held = (await heldLocks(query, disrupted)).filter((h) => sh.has(h.taskId))).length > 0;
  }, 120_000, 250);
  const victimAgent = held[0]?.agent;
  if (!victimAgent) throw new UserError(`no ${tasksRole} pod picked up a task within 120s`, `kubectl -n ${config.k8s.namespace} logs -l app.kubernetes.io/component=${tasksRole}`);
  const victimPod = podOfAgent(victimAgent);
  const victimTasks = held.filter((h) => h.agent === victimAgent).map((h) => h.taskId);
  await runner.run({ argv: kubectl(config, 'delete', 'pod', victimPod, '--grace-period=0', '--force', '--wait=false'), mutates: true });
  const deleted = [`${victimPod} (force)`];
  for (const role of layoutRoles(config).filter((r) => r !== tasksRole)) {
    const pod = (await podsOf(ctx, role))[0];
    if (!pod) continue;
    await runner.run({ argv: kubectl(config, 'delete', 'pod', pod.metadata.name, '--wait=false'), mutates: true });
    deleted.push(pod.metadata.name);
  }
  // The re-run holds its lock for the task's 30 s, so sampling the lock table cannot miss it.
  let rerunBy = '';
  const budget = (30 + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + config.k8s.rolloutTimeoutSeconds) * 1000;
  await waitFor(async () => {
    const again = (await heldLocks(query, disrupted).catch(() => [])).find((h) => victimTasks.includes(h.taskId) && podOfAgent(h.agent) !== victimPod);
    if (again) rerunBy = podOfAgent(again.agent);
    return !!again;
  }, budget, 250);
  for (const role of layoutRoles(config)) await rollout(ctx, 'deployment', `digdag-${role}`, `app.kubernetes.io/component=${role}`);
  if (!ingress) ctx.facts.endpoint = await startPortForward(ctx);
      endpoint = apiEndpoint(ctx);
  const a3 = await waitAttempt(endpoint, disrupted, budget);
  add(tasksRole, 'workflow survives SIGKILL of the pod holding a task and deleting one pod of every role', a3.success && !!rerunBy,
    `attempt ${disrupted} ${a3.success ? 'succeeded' : 'FAILED'} after deleting ${deleted.join(', ')}; ${victimPod}'s task re-run by ${rerunBy || 'NOBODY SEEN'}`);

  // 4. The scheduler fires a due schedule (a throw-away project, deleted afterwards).
  const fired = await proveScheduler(ctx, endpoint);
  add('scheduler', 'fires a due schedule', fired.ok, fired.detail);
  const whole = (await Promise.all(layoutRoles(config).map(async (r) => (await podsOf(ctx, r)).filter(isReady).length >= config.replicas[r]))).every(Boolean);
  add(tasksRole, 'every role back at full strength', whole, layoutRoles(config).map((r) => `${r} ${config.replicas[r]}`).join(', '));
  return checks;
}

export const verifyHa: Impl = {
  notApplicable: notInDryRun,
  runWhenAlone: true,
  run: async (ctx) => report(ctx, await verifyKube(ctx), `kubectl -n ${ctx.config.k8s.namespace} get events; kubectl -n ${ctx.config.k8s.namespace} logs -l app.kubernetes.io/name=digdag`),
};
