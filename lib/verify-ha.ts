// verify-ha, written once over a Target: prove each role of the layout by what it does, with
// evidence from Digdag's own records (task log files or the task lock table; the API for attempts
// and task states), not from process names or polls that can miss a short-lived state.
import { apiCredentials, authenticatedEndpoint } from './auth.ts';
import { attemptTasks, getAttempt, logFiles, waitAttempt, type Attempt } from './digdag-api.ts';
import { answersVersion } from './digdag.ts';
import { UserError } from './errors.ts';
import type { Ctx, Impl } from './pipeline.ts';
import { waitFor, withDeadline } from './processes.ts';
import { PUSH_TIMEOUT_MS } from './push-workflow.ts';
import { aRole, executorRoles, layoutRoles, roleFlags, runsTasks, taskRole, type Layout, type Role } from './roles.ts';
import { listFiles } from './state.ts';
import type { Budgets, RoleInstance, TargetOps } from './target.ts';
import { heldLocks, notInDryRun, proveAuth, proveScheduler, renderTable, report, retriedElsewhere, runParallel, shTaskIds, VERIFY_SOURCES, type Check } from './verify.ts';

/** The Digdag command line a role's instances must run with (after the program). */
export const expectedArgs = (layout: Layout, role: Role) => ['server', ...roleFlags(layout, role)];

/** Instances of a role that are ready, per role, against the configured replicas. */
function strength(ctx: Ctx, insts: readonly RoleInstance[]): { role: Role; ready: number; want: number }[] {
  return layoutRoles(ctx.config).map((role) => ({ role, ready: insts.filter((i) => i.role === role && i.ready).length, want: ctx.config.replicas[role] }));
}

/** What verify-ha is doing now: named in the error when the whole run outlasts its bound. */
export interface Stage {
  now: string;
}

/** A bound no run of verify-ha can outlast without something hanging: every wait it makes, summed,
 * plus time for the restores and the scheduler project's push. */
export function wholeRunMs(b: Budgets): number {
  return 4 * b.attemptMs + b.stallWindowMs + 2 * b.pickupMs + b.failoverMs(b.failoverRun.sleepSeconds) + 3 * b.dbFailoverMs + 180_000 + 2 * PUSH_TIMEOUT_MS;
}

export async function verifyHa(ctx: Ctx, target: TargetOps, stage: Stage = { now: '' }): Promise<Check[]> {
  const { config, runner } = ctx;
  const budgets = target.budgets(config);
  const checks: Check[] = [];
  const started = Date.now();
  const step = (now: string) => {
    stage.now = now;
    runner.log(`verify-ha [${((Date.now() - started) / 1000).toFixed(0)}s]: ${now}`);
  };
  const add = (role: string, what: string, ok: boolean, detail: string) => {
    checks.push({ role, what, ok, detail });
    runner.log(`${ok ? 'ok' : 'FAILED'} ${role}: ${what} — ${detail}`);
  };
  const tasksRole = taskRole(config.layout);
  const query = (sql: string) => target.query(ctx, sql);
  const agentOf = (agentId: string) => target.instanceOfAgent(agentId);

  // The layout as apply made it: every role at its replica count, ready, running the role's flags.
  step('checking that every role runs as apply made it');
  let insts = await target.instances(ctx);
  const layout: Check[] = strength(ctx, insts).map(({ role, ready, want }) => {
    const args = expectedArgs(config.layout, role);
    const wrong = insts.filter((i) => i.role === role && JSON.stringify(i.args) !== JSON.stringify(args)).map((i) => i.name);
    return { role, what: "instances ready with the role's flags", ok: ready >= want && !wrong.length, detail: `${ready} of ${want} ready; args ${args.join(' ')}${wrong.length ? `; WRONG args on ${wrong.join(', ')}` : ''}` };
  });
  if (layout.some((c) => !c.ok)) throw new UserError(`the layout is not running as apply makes it:\n${renderTable(layout)}`, `run the apply task first; ${target.verifyHint(config)}`);
  for (const c of layout) add(c.role, c.what, c.ok, c.detail);
  for (const c of await target.edgeChecks(ctx)) add(c.role, c.what, c.ok, c.detail);

  // 0. Every instance's port refuses requests without the right credentials; task-running roles
  //    refuse even the UI/API password. Each is checked through its own URL.
  step('checking authentication on every instance\'s port');
  for (const inst of insts.filter((i) => i.ready)) {
    const url = await target.instanceUrl(ctx, inst);
    const authTarget = { role: inst.role, name: inst.name, url, opens: target.opensWithApiPassword(config, inst.role), log: () => target.instanceLog(ctx, inst) };
    for (const c of await proveAuth([authTarget], apiCredentials(config))) add(c.role, c.what, c.ok, c.detail);
  }
  let endpoint = await target.endpoint(ctx);

  // 1. The sample fan-out succeeds; every task ran where agents run, none on the other roles.
  const taskRunners = new Set(insts.filter((i) => runsTasks(i.role)).map((i) => i.name));
  const others = new Set(insts.filter((i) => !runsTasks(i.role)).map((i) => i.name));
  const { tasks, sleepSeconds } = budgets.placementRun;
  step(`running the sample (${tasks} parallel tasks) and reading where its tasks ran`);
  const first = await runParallel(endpoint, tasks, sleepSeconds);
  const ranOn = new Map<string, number>();
  let a1: Attempt;
  let enough: boolean;
  let seen: string;
  if (target.evidence === 'task-logs') {
    a1 = await waitAttempt(endpoint, first, budgets.attemptMs);
    const files = await logFiles(endpoint, first);
    for (const f of files) ranOn.set(agentOf(f.agentId), (ranOn.get(agentOf(f.agentId)) ?? 0) + 1);
    // One log per sh> task and one for the loop> that generates them.
    enough = files.length >= tasks + 1;
    seen = `${files.length} task logs by`;
  } else {
    // Each task holds its lock for sleepSeconds: sampling every 250 ms until the attempt ends sees them all.
    const holder = new Map<string, string>();
    await waitFor(async () => {
      for (const h of await heldLocks(query, first)) holder.set(h.taskId, agentOf(h.agent));
      return (await getAttempt(endpoint, first)).done;
    }, budgets.attemptMs, 250);
    a1 = await waitAttempt(endpoint, first, 30_000);
    for (const inst of holder.values()) ranOn.set(inst, (ranOn.get(inst) ?? 0) + 1);
    enough = holder.size > 0;
    seen = `${holder.size} task locks held by`;
  }
  const foreign = [...ranOn.keys()].filter((a) => !taskRunners.has(a));
  add(tasksRole, `sample workflow (${tasks} parallel sh> tasks) succeeds`, a1.success, `attempt ${first}: ${a1.status ?? (a1.success ? 'success' : 'failed')}`);
  add(tasksRole, `tasks ran on ${tasksRole} instances only`, enough && foreign.length === 0,
    `${seen} ${[...ranOn].map(([a, n]) => `${a}×${n}`).join(', ') || 'NOBODY SEEN'}${foreign.length ? `; NOT ${tasksRole}s: ${foreign.join(', ')}` : ''}`);
  add('ui', 'served the API and ran no task', !!(await answersVersion(endpoint)) && ![...ranOn.keys()].some((a) => others.has(a)),
    `all calls went to ${endpoint.url}; tasks ran only on ${[...ranOn.keys()].join(', ')}`);

  // 2. The executor loop lives only in the executor roles: with all of them stopped an attempt
  //    does not move (observed for a fixed window), and it finishes once they are back. It is
  //    submitted through an instance without a loop that holds the real API password (the
  //    scheduler, or the split layout's API-only ui; task-running roles have a throw-away one).
  const loops = executorRoles(config.layout);
  const via = insts.find((i) => i.ready && !loops.includes(i.role) && target.opensWithApiPassword(config, i.role));
  if (!via) {
    add(loops.join('+'), 'executor loop runs only where the layout puts it', true, 'not checkable: every role of this layout runs an executor loop, so none is left to submit through (SCHEDULER_REPLICAS=0)');
  } else {
    let stopped: string[] = [];
    let stalled = '';
    let moved = true;
    try {
      step(`taking ${loops.join(' and ')} out of action and watching an attempt not move`);
      stopped = await Promise.all(loops.map((r) => target.stopRole(ctx, r)));
      const viaEndpoint = authenticatedEndpoint(config, await target.instanceUrl(ctx, via));
      stalled = await runParallel(viaEndpoint, 2, 1);
      // Submission stores the task tree (a planned root, blocked children); only an executor loop moves it on.
      const states = async () => JSON.stringify((await attemptTasks(viaEndpoint, stalled)).map((t) => [t.id, t.state]));
      const submitted = await states();
      moved = await waitFor(async () => (await states()) !== submitted, budgets.stallWindowMs, Math.min(1000, budgets.stallWindowMs / 4));
    } finally {
      step(`bringing ${loops.join(' and ')} back`);
      await target.restore(ctx);
    }
    endpoint = await target.endpoint(ctx);
    step(`waiting for attempt ${stalled} to finish`);
    const a2 = await waitAttempt(endpoint, stalled, budgets.attemptMs);
    add(loops.join('+'), 'executor loop runs only where the layout puts it', !moved && a2.success,
      `with ${stopped.join(', ')} out of action, attempt ${stalled} (submitted through ${via.name}) ${moved ? 'MOVED' : 'did not move'} for ${budgets.stallWindowMs / 1000}s; once they were back it ${a2.success ? 'succeeded' : 'FAILED'}`);
  }

  // 3. SIGKILL a task-running instance while it holds tasks: their locks expire, another instance
  //    re-runs them, and the attempt succeeds. Where a supervisor replaces instances, one instance
  //    of every other role is deleted too, and the replacements must serve.
  step(`starting an attempt whose task holder will be killed`);
  insts = await target.instances(ctx);
  const runners = new Set(insts.filter((i) => runsTasks(i.role)).map((i) => i.name));
  const failover = budgets.failoverRun;
  const disrupted = await runParallel(endpoint, failover.tasks, failover.sleepSeconds);
  let held: { taskId: string; agent: string }[] = [];
  // Only the sleeping sh> tasks: the loop> task that generates them is short and writes no log.
  const shTasks = shTaskIds(endpoint, disrupted);
  let pollError = '';
  await waitFor(async () => {
    try {
      const sh = await shTasks();
      held = (await heldLocks(query, disrupted)).filter((h) => sh.has(h.taskId));
    } catch (err) {
      // One slow answer on a loaded machine is not the verdict: the budget is.
      pollError = String(err).split('\n')[0]!;
      return false;
    }
    return held.some((h) => runners.has(agentOf(h.agent)));
  }, budgets.pickupMs, 250);
  const victimAgent = held.find((h) => runners.has(agentOf(h.agent)))?.agent;
  if (!victimAgent) throw new UserError(`no ${tasksRole} picked up a task within ${budgets.pickupMs / 1000}s${pollError ? ` (last error reading the lock table: ${pollError})` : ''}`, target.verifyHint(config));
  const victim = insts.find((i) => i.name === agentOf(victimAgent))!;
  const victimTasks = held.filter((h) => h.agent === victimAgent).map((h) => h.taskId);
  await target.kill(ctx, victim);
  runner.log(`killed ${victim.name} with SIGKILL while it held ${victimTasks.length} task(s) of attempt ${disrupted}`);
  const deleted = [`${victim.name} (SIGKILL)`];
  if (target.replacesInstances) {
    for (const role of layoutRoles(config).filter((r) => r !== tasksRole)) {
      const one = insts.find((i) => i.role === role);
      if (!one) continue;
      await target.stop(ctx, one);
      deleted.push(one.name);
    }
  }
  const budget = budgets.failoverMs(failover.sleepSeconds);
  step(`waiting for attempt ${disrupted} to recover from the kill`);
  let rerunBy = '';
  if (target.evidence === 'task-locks') {
    // The re-run holds its lock for the task's whole sleep, so sampling the lock table cannot miss it.
    await waitFor(async () => {
      const again = (await heldLocks(query, disrupted).catch(() => [])).find((h) => victimTasks.includes(h.taskId) && agentOf(h.agent) !== victim.name);
      if (again) rerunBy = agentOf(again.agent);
      return !!again;
    }, budget, 250);
  }
  // Replaced instances come back under new names: restore at once (the endpoint with them).
  // Otherwise the victim stays down until the attempt ends, so "another instance" is unambiguous.
  if (target.replacesInstances) {
    await target.restore(ctx);
    endpoint = await target.endpoint(ctx);
  }
  let a3: Attempt;
  try {
    a3 = await waitAttempt(endpoint, disrupted, budget);
  } finally {
    if (!target.replacesInstances) await target.restore(ctx);
  }
  const retried = target.evidence === 'task-logs'
    ? await retriedElsewhere(endpoint, disrupted, victimTasks, victim.name)
    : { ok: !!rerunBy, detail: `were re-run by ${rerunBy || 'NOBODY SEEN'} (task locks)` };
  add(tasksRole, `workflow survives ${aRole(tasksRole)} killed with SIGKILL mid-task${target.replacesInstances ? ' and one instance of every other role deleted' : ''}`, a3.success && retried.ok,
    `attempt ${disrupted} ${a3.success ? 'succeeded' : 'FAILED'} after stopping ${deleted.join(', ')}; ${victim.name}'s ${victimTasks.length} task(s) ${retried.detail}`);

  // 4. Where the target runs its own replicated database: the leader's PostgreSQL SIGKILLed while
  //    the sample's tasks run — a replica takes over, the attempt succeeds, the old leader rejoins.
  const db = target.haDatabase?.(config);
  if (db) {
    step('starting an attempt and killing the database leader under it');
    const during = await runParallel(endpoint, 2, 3);
    await waitFor(async () => (await heldLocks(query, during).catch(() => [])).length > 0, budgets.pickupMs, 250);
    const killedAt = Date.now();
    const old = await db.killLeader(ctx, 'postgres');
    runner.log(`killed the PostgreSQL server of the database leader ${old} (SIGKILL) while attempt ${during} ran`);
    let leader = '';
    const took = await waitFor(async () => {
      leader = (await db.members(ctx).catch(() => [])).find((m) => m.role === 'leader' && m.ready)?.name ?? '';
      return leader !== '' && leader !== old;
    }, budgets.dbFailoverMs, 500);
    const tookS = ((Date.now() - killedAt) / 1000).toFixed(1);
    step(`waiting for attempt ${during} across the database failover`);
    const a4 = await waitAttempt(endpoint, during, budgets.attemptMs).catch((e: Error) => ({ success: false, status: e.message.split('\n')[0] }) as Attempt);
    let members = await db.members(ctx);
    const whole = await waitFor(async () => {
      members = await db.members(ctx).catch(() => []);
      return members.length > 1 && members.every((m) => m.ready) && members.filter((m) => m.role === 'leader').length === 1;
    }, 2 * budgets.dbFailoverMs, Math.min(1000, budgets.dbFailoverMs / 20));
    add('database', 'the sample survives the loss of the database leader', took && a4.success && whole,
      `${old}'s PostgreSQL SIGKILLed mid-attempt: ${took ? `${leader} leads after ${tookS} s` : 'NO replica took over'}; attempt ${during} ${a4.success ? 'succeeded' : `FAILED (${a4.status ?? 'error'})`}; ${whole ? `members whole again (${members.map((m) => `${m.name} ${m.role}`).join(', ')})` : `members NOT whole: ${members.map((m) => `${m.name} ${m.role}${m.ready ? '' : ' not ready'}`).join(', ')}`}`);
  }

  // 5. The scheduler fires a due schedule (a throw-away project, deleted afterwards).
  step('proving the scheduler with a throw-away project');
  const fired = await proveScheduler(ctx, endpoint);
  add('scheduler', 'fires a due schedule', fired.ok, fired.detail);

  // Every role whole again after the disruption.
  const after = strength(ctx, await target.instances(ctx));
  add(tasksRole, 'layout whole again after the disruption', after.every((s) => s.ready >= s.want), after.map((s) => `${s.role} ${s.ready}/${s.want} ready`).join(', '));
  return checks;
}

/** The verify-ha task on a target: skipped while what it proved still stands (when the target
 * can say what that is), always run when asked for by name. */
export function verifyHaOn(target: TargetOps, bound: (b: Budgets) => number = wholeRunMs): Impl {
  return {
    notApplicable: notInDryRun,
    // What a pass proved: these instances, running this config, with this sample and these checks.
    inputs: (ctx) => (target.verifiedState ? { values: target.verifiedState(ctx), files: VERIFY_SOURCES.flatMap((f) => listFiles(f)) } : undefined),
    healthy: async (ctx) => {
      const insts = await target.instances(ctx);
      const whole = strength(ctx, insts).every((s) => s.ready === s.want) && insts.every((i) => i.ready);
      return whole ? `passed last time on these ${insts.length} instances, all still running` : false;
    },
    runWhenAlone: true,
    run: async (ctx) => {
      const stage: Stage = { now: 'starting' };
      const boundMs = bound(target.budgets(ctx.config));
      const checks = await withDeadline(verifyHa(ctx, target, stage), boundMs, () => new UserError(
        `verify-ha did not finish within ${boundMs / 1000}s: stuck while ${stage.now}`,
        `${target.verifyHint(ctx.config)}; roles verify-ha stopped may still be down: run the apply task to bring every role back`,
      ));
      report(ctx, checks, target.verifyHint(ctx.config));
    },
  };
}
