// verify-ha: prove each role by what it does, not by process names — tasks run only on agents,
// the executor loop lives only in the workflow role, the scheduler fires schedules, and a
// workflow survives an agent killed with SIGKILL mid-task. Prints a per-role table.
import { isMain, main } from '../lib/cli.ts';
import { requireSecrets } from '../lib/credentials.ts';
import { attemptTasks, getAttempt, listAttempts, logFiles, startAttempt, waitAttempt, workflowId } from '../lib/digdag-api.ts';
import { answersVersion } from '../lib/digdag.ts';
import { UserError } from '../lib/errors.ts';
import { expectedArgs, kubectl, requireCluster, startPortForward } from '../lib/kube.ts';
import { byTarget, type Ctx } from '../lib/pipeline.ts';
import { dbEndpoint, queryAsApp } from '../lib/postgres.ts';
import { isAlive, listProcesses, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../lib/processes.ts';
import { instances, ROLES, type Role } from '../lib/roles.ts';
import { reconcileLocal } from './apply.ts';
import { apiEndpoint, SAMPLE_PROJECT } from './push-workflow.ts';

export interface Check {
  role: Role;
  what: string;
  ok: boolean;
  detail: string;
}

export function renderTable(checks: readonly Check[]): string {
  const rows = checks.map((c) => [c.role, c.ok ? 'ok' : 'FAILED', c.what, c.detail]);
  const head = ['role', 'result', 'check', 'evidence'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]!))).join('  ');
  return [line(head), line(width.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Unique session times: one second apart, going back from now (sessions are unique on it). */
let sessionSeq = 0;
const nextSessionTime = () => new Date(Math.floor(Date.now() / 1000) * 1000 - 1000 * ++sessionSeq - 86_400_000);

const roleProcs = (ctx: Ctx, role: Role): ProcessEntry[] => listProcesses(ctx.config).filter((p) => p.role === role);

async function runParallel(endpoint: string, tasks: number, sleepSeconds: number) {
  const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
  return startAttempt(endpoint, wf, nextSessionTime(), { tasks, sleep_seconds: sleepSeconds });
}

/**
 * Task locks held for one attempt's tasks (the scheduled workflow fires every minute, so locks
 * of other attempts are about). queued_tasks.unique_name is the task id, with ".rN" on retries.
 */
export function locksOfAttemptSql(attemptId: string): string {
  return 'SELECT l.id, l.lock_agent_id FROM queued_task_locks l JOIN queued_tasks q ON q.id = l.id' +
    " JOIN tasks t ON t.id = split_part(q.unique_name, '.', 1)::bigint" +
    ` WHERE t.attempt_id = ${Number(attemptId)} AND l.lock_agent_id IS NOT NULL ORDER BY l.id`;
}

/** Restarts what verify stopped; those are replacements, not part of what a failed run undoes. */
async function restoreLayout(ctx: Ctx): Promise<void> {
  const before = ctx.started.length;
  for (const line of await reconcileLocal(ctx)) ctx.runner.log(line);
  ctx.started.length = before;
}

export async function verifyLocal(ctx: Ctx): Promise<Check[]> {
  const { config, runner } = ctx;
  const endpoint = apiEndpoint(ctx);
  const checks: Check[] = [];
  const agentNames = instances(config).filter((i) => i.role === 'agent').map((i) => i.name);
  const add = (role: Role, what: string, ok: boolean, detail: string) => {
    checks.push({ role, what, ok, detail });
    runner.log(`${ok ? 'ok' : 'FAILED'} ${role}: ${what} — ${detail}`);
  };

  for (const role of ROLES) {
    const procs = roleProcs(ctx, role);
    const alive = procs.filter(isAlive);
    if (procs.length !== config.replicas[role] || alive.length !== procs.length) {
      throw new UserError(`${role}: ${alive.length} of ${config.replicas[role]} processes running`, 'run the apply task first');
    }
  }

  // 1. The sample fan-out succeeds, every task ran on an agent, and none on ui/workflow/scheduler.
  const first = await runParallel(endpoint, 6, 2);
  const a1 = await waitAttempt(endpoint, first, 180_000);
  add('workflow', 'sample workflow (6 parallel sh> tasks) succeeds', a1.success, `attempt ${first}: ${a1.status ?? (a1.success ? 'success' : 'failed')}`);
  const files = await logFiles(endpoint, first);
  const shFiles = files.filter((f) => f.taskName.includes('^sub') || f.taskName.includes('+fanout') || f.taskName.includes('+done'));
  const byAgent = new Map<string, number>();
  for (const f of shFiles) byAgent.set(f.agentId, (byAgent.get(f.agentId) ?? 0) + 1);
  const foreign = [...byAgent.keys()].filter((a) => !agentNames.includes(a));
  add('agent', 'tasks ran on agent processes only', shFiles.length >= 7 && foreign.length === 0,
    `${shFiles.length} task logs by ${[...byAgent].map(([a, n]) => `${a}×${n}`).join(', ')}${foreign.length ? `; NOT agents: ${foreign.join(', ')}` : ''}`);
  const uiNames = instances(config).filter((i) => i.role !== 'agent').map((i) => i.name);
  add('ui', 'served the API and ran no task', !!(await answersVersion(endpoint)) && ![...byAgent.keys()].some((a) => uiNames.includes(a)),
    `all calls went to ${endpoint}; task logs name only ${[...byAgent.keys()].join(', ')}`);

  // 2. The executor loop lives in the workflow role: without it an attempt does not move.
  const workflows = roleProcs(ctx, 'workflow');
  for (const w of workflows) {
    await stopProcess(w, 60_000);
    unregisterProcess(config, w.name);
  }
  const stalled = await runParallel(endpoint, 2, 1);
  const moved = await waitFor(async () => (await logFiles(endpoint, stalled)).length > 0, 10_000, 1000);
  await restoreLayout(ctx);
  const a2 = await waitAttempt(endpoint, stalled, 120_000);
  add('workflow', 'executor loop runs only in the workflow role', !moved && a2.success,
    `with ${workflows.length} workflow process(es) stopped, attempt ${stalled} ran ${moved ? 'SOME' : 'no'} task for 10s; restarted, it ${a2.success ? 'succeeded' : 'failed'}`);

  // 3. SIGKILL an agent holding tasks: the tasks are retried after lock expiry and the workflow succeeds.
  const secrets = requireSecrets(config);
  const db = await dbEndpoint(config, secrets.dbPassword);
  const killAttempt = await runParallel(endpoint, 4, 20);
  let held: { id: string; agent: string }[] = [];
  await waitFor(async () => {
    const rows = await queryAsApp(runner, config, db, locksOfAttemptSql(killAttempt));
    held = rows.split('\n').filter(Boolean).map((l) => {
      const [id, agent] = l.split('|');
      return { id: id!, agent: agent! };
    });
    return held.some((h) => agentNames.includes(h.agent));
  }, 60_000, 500);
  const victimName = held.find((h) => agentNames.includes(h.agent))?.agent;
  if (!victimName) throw new UserError('no agent picked up a task within 60s', 'read the agent logs in the state dir (logs/agent-*.log)');
  const victimLocks = held.filter((h) => h.agent === victimName).map((h) => h.id);
  const victim = roleProcs(ctx, 'agent').find((p) => p.name === victimName)!;
  process.kill(-victim.pid, 'SIGKILL');
  await waitFor(() => !isAlive(victim), 10_000, 100);
  runner.log(`killed ${victim.name} (pid ${victim.pid}) with SIGKILL while it held ${victimLocks.length} task lock(s) of attempt ${killAttempt}`);
  // The dead agent's locks expire after the retention time; then an agent takes the task again.
  // Watched while the agent is being restarted, which can take longer than the retried task.
  let retakenBy = '';
  const budget = (20 + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + 90) * 1000;
  const watch = waitFor(async () => {
    const rows = await queryAsApp(runner, config, db, `SELECT retry_count, coalesce(lock_agent_id, '') FROM queued_task_locks WHERE id IN (${victimLocks.map(Number).join(',')})`);
    const retaken = rows.split('\n').filter(Boolean).map((l) => l.split('|')).find(([n, agent]) => Number(n) > 0 && agent);
    if (retaken) retakenBy = retaken[1]!;
    return !!retaken || rows === '';
  }, budget, 250);
  // Like a pod restart: the supervisor (here: apply's reconcile) brings the agent back.
  await restoreLayout(ctx);
  await watch;
  const a3 = await waitAttempt(endpoint, killAttempt, budget);
  add('agent', 'workflow survives an agent killed with SIGKILL mid-task', a3.success && !!retakenBy,
    `attempt ${killAttempt} ${a3.success ? 'succeeded' : 'FAILED'}; ${victim.name}'s task lock expired after ~${config.agent.lockRetentionTime}s and was retried by ${retakenBy || 'NOBODY SEEN'}`);

  // 4. The scheduler fired the scheduled workflow (nobody starts it by hand).
  let fired: string | undefined;
  await waitFor(async () => {
    const done = (await listAttempts(endpoint, SAMPLE_PROJECT, 'scheduled')).find((a) => a.done && a.success);
    fired = done ? `attempt ${done.id} for session ${done.sessionTime}` : undefined;
    return !!fired;
  }, 150_000, 2000);
  add('scheduler', 'fired a minutes_interval schedule', !!fired, fired ?? 'no successful scheduled attempt within 150s');

  // Every role still whole after the disruption.
  const whole = (await Promise.all(listProcesses(config).filter((p) => p.role).map((p) => answersVersion(`http://127.0.0.1:${p.port}`)))).every(Boolean);
  add('agent', 'layout whole again after the kill', whole, `${listProcesses(config).filter((p) => p.role && isAlive(p)).length} role processes answering`);
  const tasks = await attemptTasks(endpoint, first);
  add('workflow', 'task states consistent', tasks.every((t) => t.state === 'success'), `${tasks.length} tasks in attempt ${first}, all success`);
  return checks;
}

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
  if (!ingress) endpoint = ctx.facts.endpoint = await startPortForward(ctx);
  const budget = (30 + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + config.k8s.rolloutTimeoutSeconds) * 1000;
  const a2 = await waitAttempt(endpoint, disrupted, budget);
  add('agent', 'workflow survives deleting one pod of every role mid-run', a2.success, `attempt ${disrupted} ${a2.success ? 'succeeded' : 'FAILED'} after deleting ${deleted.join(', ')}`);
  return checks;
}

/** Records the checks, prints the table, and fails the task if any check failed. */
function report(ctx: Ctx, checks: Check[], where: string): void {
  ctx.facts.checks = checks;
  ctx.facts.summary = renderTable(checks);
  const failed = checks.filter((c) => !c.ok);
  if (failed.length) throw new UserError(`${failed.length} HA check(s) failed:\n${renderTable(checks)}`, where);
}

const notInDryRun = (ctx: Ctx) => (ctx.runner.dryRun ? 'dry run: verify-ha starts workflows and kills processes, so it does not run' : undefined);

export const verifyHa = byTarget('verify-ha', 'Verify every role by its behaviour', {
  local: { notApplicable: notInDryRun, run: async (ctx) => report(ctx, await verifyLocal(ctx), 'read the role logs under the state dir (logs/*.log)') },
  kube: {
    notApplicable: notInDryRun,
    run: async (ctx) => report(ctx, await verifyKube(ctx), `kubectl -n ${ctx.config.k8s.namespace} get events; kubectl -n ${ctx.config.k8s.namespace} logs -l app.kubernetes.io/name=digdag`),
  },
});

if (isMain(import.meta.url)) await main([verifyHa], 'tasks/verify-ha.ts');
