// verify-ha on the local target: prove each role by what it does, not by process names.
import { requireSecrets } from '../credentials.ts';
import { attemptTasks, listAttempts, logFiles, waitAttempt } from '../digdag-api.ts';
import { answersVersion } from '../digdag.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { isAlive, listProcesses, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { apiEndpoint, SAMPLE_PROJECT } from '../push-workflow.ts';
import { instances, ROLES, type Role } from '../roles.ts';
import { locksOfAttemptSql, notInDryRun, report, runParallel, type Check } from '../verify.ts';
import { reconcileLocal } from './apply.ts';

const roleProcs = (ctx: Ctx, role: Role): ProcessEntry[] => listProcesses(ctx.config).filter((p) => p.role === role);

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


export const verifyHa: Impl = {
  notApplicable: notInDryRun,
  run: async (ctx) => report(ctx, await verifyLocal(ctx), 'read the role logs under the state dir (logs/*.log)'),
};
