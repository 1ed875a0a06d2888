// verify-ha on the local target: prove each role of the layout by what it does, with evidence
// from Digdag's own records (task log files name the agent that ran each task; the API gives
// attempts and tasks) rather than from polls that can miss a short-lived state.
import fs from 'node:fs';
import { apiCredentials, authenticatedEndpoint } from '../auth.ts';
import { requireSecrets } from '../credentials.ts';
import { attemptTasks, logFiles, waitAttempt } from '../digdag-api.ts';
import { answersVersion } from '../digdag.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { isAlive, listProcesses, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { apiEndpoint } from '../push-workflow.ts';
import { executorRoles, holdsApiPassword, instances, layoutRoles, runsTasks, taskRole, type Role } from '../roles.ts';
import { listFiles } from '../state.ts';
import { heldLocks, notInDryRun, proveAuth, proveScheduler, report, retriedElsewhere, runParallel, shTaskIds, VERIFY_SOURCES, type Check } from '../verify.ts';
import { opensWithApiPassword, reconcileLocal } from './apply.ts';

const roleProcs = (ctx: Ctx, role: Role): ProcessEntry[] => listProcesses(ctx.config).filter((p) => p.role === role);

/** Restarts what verify stopped; those are replacements, not part of what a failed run undoes. */
async function restoreLayout(ctx: Ctx): Promise<void> {
  const before = ctx.started.length;
  for (const line of await reconcileLocal(ctx)) ctx.runner.log(line);
  ctx.started.length = before;
}

/** How long an attempt may take once a task-running process was killed: the lock retention, two
 * expiry rounds, the task itself and slack for a loaded machine. */
const failoverBudgetMs = (ctx: Ctx, taskSeconds: number) =>
  (taskSeconds + ctx.config.agent.lockRetentionTime + 2 * ctx.config.agent.lockExpireInterval + 120) * 1000;

export async function verifyLocal(ctx: Ctx): Promise<Check[]> {
  const { config, runner } = ctx;
  const endpoint = apiEndpoint(ctx);
  const checks: Check[] = [];
  const tasksRole = taskRole(config.layout);
  const taskRunners = instances(config).filter((i) => runsTasks(i.role)).map((i) => i.name);
  const others = instances(config).filter((i) => !runsTasks(i.role)).map((i) => i.name);
  const add = (role: string, what: string, ok: boolean, detail: string) => {
    checks.push({ role, what, ok, detail });
    runner.log(`${ok ? 'ok' : 'FAILED'} ${role}: ${what} — ${detail}`);
  };

  for (const role of layoutRoles(config)) {
    const procs = roleProcs(ctx, role);
    const alive = procs.filter(isAlive);
    if (procs.length !== config.replicas[role] || alive.length !== procs.length) {
      throw new UserError(`${role}: ${alive.length} of ${config.replicas[role]} processes running`, 'run the apply task first');
    }
  }

  // 0. Every role's port refuses requests without the right credentials.
  const authTargets = listProcesses(config).filter((p) => p.role && p.port).map((p) => ({
    role: p.role!,
    name: p.name,
    url: `http://127.0.0.1:${p.port}`,
    opens: opensWithApiPassword(config, p.role as Role),
    log: async () => (fs.existsSync(p.logFile) ? fs.readFileSync(p.logFile, 'utf8') : ''),
  }));
  for (const c of await proveAuth(authTargets, apiCredentials(config))) add(c.role, c.what, c.ok, c.detail);

  // 1. The sample fan-out succeeds; every task ran where agents run, none on the other roles.
  const first = await runParallel(endpoint, 6, 2);
  const a1 = await waitAttempt(endpoint, first, 180_000);
  add(tasksRole, 'sample workflow (6 parallel sh> tasks) succeeds', a1.success, `attempt ${first}: ${a1.status ?? (a1.success ? 'success' : 'failed')}`);
  const files = await logFiles(endpoint, first);
  const byAgent = new Map<string, number>();
  for (const f of files) byAgent.set(f.agentId, (byAgent.get(f.agentId) ?? 0) + 1);
  const foreign = [...byAgent.keys()].filter((a) => !taskRunners.includes(a));
  add(tasksRole, `tasks ran on ${tasksRole} processes only`, files.length >= 7 && foreign.length === 0,
    `${files.length} task logs by ${[...byAgent].map(([a, n]) => `${a}×${n}`).join(', ')}${foreign.length ? `; NOT ${tasksRole}s: ${foreign.join(', ')}` : ''}`);
  add('ui', 'served the API and ran no task', !!(await answersVersion(endpoint)) && ![...byAgent.keys()].some((a) => others.includes(a)),
    `all calls went to ${endpoint.url}; task logs name only ${[...byAgent.keys()].join(', ')}`);

  // 2. The executor loop lives only in the executor roles: with all of them stopped an attempt
  //    does not move (observed for a fixed window), and it finishes once they are back. It is
  //    submitted through a process without a loop (in the worker layout the ui has one too).
  const loops = executorRoles(config.layout);
  // Only a role holding the real API password can take the submission (task-running roles are
  // locked with a throw-away one): the scheduler, or the split layout's API-only ui.
  const via = listProcesses(config).find((p) => p.role && !loops.includes(p.role as Role) && holdsApiPassword(p.role as Role) && isAlive(p));
  if (!via) {
    add(loops.join('+'), 'executor loop runs only where the layout puts it', true, `not checkable: every process of this layout runs an executor loop, so none is left to submit through (SCHEDULER_REPLICAS=0)`);
  } else {
    const stopped = loops.flatMap((r) => roleProcs(ctx, r));
    await Promise.all(stopped.map((p) => stopProcess(p, 60_000)));
    for (const p of stopped) unregisterProcess(config, p.name, p.pid);
    const viaEndpoint = authenticatedEndpoint(config, `http://127.0.0.1:${via.port}`);
    const stalled = await runParallel(viaEndpoint, 2, 1);
    // Submission stores the task tree (a planned root, blocked children); only an executor loop moves it on.
    const states = async () => JSON.stringify((await attemptTasks(viaEndpoint, stalled)).map((t) => [t.id, t.state]));
    const submitted = await states();
    const moved = await waitFor(async () => (await states()) !== submitted, 10_000, 1000);
    await restoreLayout(ctx);
    const a2 = await waitAttempt(endpoint, stalled, 180_000);
    add(loops.join('+'), 'executor loop runs only where the layout puts it', !moved && a2.success,
      `with ${stopped.map((p) => p.name).join(', ')} stopped, attempt ${stalled} (submitted through ${via.name}) ${moved ? 'MOVED' : 'did not move'} for 10s; once they were back it ${a2.success ? 'succeeded' : 'FAILED'}`);
  }

  // 3. SIGKILL a task-running process while it holds tasks: their locks expire, another process
  //    re-runs them, and the attempt succeeds. The victim stays down until then, so "another
  //    process" is unambiguous; the evidence is Digdag's log records of the attempt.
  const secrets = requireSecrets(config);
  const db = await dbEndpoint(config, secrets.dbPassword);
  const killAttempt = await runParallel(endpoint, 4, 20);
  let held: { taskId: string; agent: string }[] = [];
  // Only the sleeping sh> tasks: the loop> task that generates them is short and writes no log.
  const shTasks = shTaskIds(endpoint, killAttempt);
  await waitFor(async () => {
    const sh = await shTasks();
    held = (await heldLocks((sql) => queryAsApp(runner, config, db, sql), killAttempt)).filter((h) => sh.has(h.taskId));
    return held.some((h) => taskRunners.includes(h.agent));
  }, 60_000, 250);
  const victimName = held.find((h) => taskRunners.includes(h.agent))?.agent;
  if (!victimName) throw new UserError(`no ${tasksRole} picked up a task within 60s`, `read the ${tasksRole} logs in the state dir (logs/${tasksRole}-*.log)`);
  const victimTasks = held.filter((h) => h.agent === victimName).map((h) => h.taskId);
  const victim = roleProcs(ctx, tasksRole).find((p) => p.name === victimName)!;
  process.kill(-victim.pid, 'SIGKILL');
  await waitFor(() => !isAlive(victim), 10_000, 100);
  unregisterProcess(config, victim.name, victim.pid);
  runner.log(`killed ${victim.name} (pid ${victim.pid}) with SIGKILL while it held ${victimTasks.length} task(s) of attempt ${killAttempt}`);
  let a3;
  try {
    a3 = await waitAttempt(endpoint, killAttempt, failoverBudgetMs(ctx, 20));
  } finally {
    await restoreLayout(ctx); // the supervisor's part: bring the killed process back
  }
  const retried = await retriedElsewhere(endpoint, killAttempt, victimTasks, victimName);
  add(tasksRole, `workflow survives a ${tasksRole} killed with SIGKILL mid-task`, a3.success && retried.ok,
    `attempt ${killAttempt} ${a3.success ? 'succeeded' : 'FAILED'}; ${victim.name}'s ${victimTasks.length} task(s) ${retried.detail}`);

  // 4. The scheduler fires a due schedule (a throw-away project, deleted afterwards).
  const fired = await proveScheduler(ctx, endpoint);
  add('scheduler', 'fires a due schedule', fired.ok, fired.detail);

  // Every role whole again after the disruption.
  const roleEntries = listProcesses(config).filter((p) => p.role);
  const whole = roleEntries.length === instances(config).length && (await Promise.all(roleEntries.map((p) => answersVersion(`http://127.0.0.1:${p.port}`)))).every(Boolean);
  add(tasksRole, 'layout whole again after the kill', whole, `${roleEntries.filter(isAlive).length} of ${instances(config).length} role processes answering`);
  return checks;
}

export const verifyHa: Impl = {
  notApplicable: notInDryRun,
  // What a pass proved: these processes (pids), running this config, with this sample and these
  // checks. Any of them changed — a process restarted, a config or check edited — and it runs again.
  inputs: (ctx) => ({
    values: { processes: listProcesses(ctx.config).filter((p) => p.role).map((p) => [p.name, p.pid, (p as { hash?: string }).hash]) },
    files: VERIFY_SOURCES.flatMap((f) => listFiles(f)),
  }),
  healthy: async (ctx) => {
    const entries = listProcesses(ctx.config).filter((p) => p.role);
    const ok = entries.length === instances(ctx.config).length && entries.every(isAlive) && (await Promise.all(entries.map((p) => answersVersion(`http://127.0.0.1:${p.port}`)))).every(Boolean);
    return ok ? `passed last time on these ${entries.length} processes, all still running` : false;
  },
  runWhenAlone: true,
  run: async (ctx) => report(ctx, await verifyLocal(ctx), 'read the role logs under the state dir (logs/*.log)'),
};
