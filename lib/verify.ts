// What verify-ha shares across targets: the check table, the sample workflow it starts, the
// authentication check on every role's port, and how a run of checks becomes a result.
import crypto from 'node:crypto';
import path from 'node:path';
import { authorizationHeader, type ApiCredentials } from './auth.ts';
import { ROOT, WORKFLOWS_DIR } from './paths.ts';
import { attemptTasks, deleteProject, fireScheduleNow, listAttempts, logFiles, projectId, projectSchedules, startAttempt, waitAttempt, workflowId, type Attempt } from './digdag-api.ts';
import type { AuthEndpoint, Endpoint } from './digdag.ts';
import { UserError } from './errors.ts';
import { waitFor } from './processes.ts';
import type { Ctx } from './pipeline.ts';
import { pushProject, SAMPLE_PROJECT } from './push-workflow.ts';
import { registerSecret } from './secrets.ts';
import { changesApplied } from './runner.ts';

export interface Check {
  /** The role (or roles) the check proves. */
  role: string;
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

export async function runParallel(endpoint: Endpoint, tasks: number, sleepSeconds: number) {
  const wf = await workflowId(endpoint, SAMPLE_PROJECT, 'parallel');
  return startAttempt(endpoint, wf, nextSessionTime(), { tasks, sleep_seconds: sleepSeconds });
}

/**
 * Task locks held for one attempt's tasks (the scheduled workflow fires every minute, so locks
 * of other attempts are about). queued_tasks.unique_name is the task id, with ".rN" on retries.
 */
export function locksOfAttemptSql(attemptId: string): string {
  return 'SELECT t.id, l.lock_agent_id FROM queued_task_locks l JOIN queued_tasks q ON q.id = l.id' +
    " JOIN tasks t ON t.id = split_part(q.unique_name, '.', 1)::bigint" +
    ` WHERE t.attempt_id = ${Number(attemptId)} AND l.lock_agent_id IS NOT NULL ORDER BY l.id`;
}

/** What verify-ha's result depends on besides the running layout: the checks and the samples. */
export const VERIFY_SOURCES = ['lib/verify.ts', 'lib/verify-ha.ts', 'lib/target.ts', 'lib/local/target.ts', 'lib/kube/target.ts', 'workflows/ha-sample', 'workflows/ha-verify-schedule'].map((f) => path.join(ROOT, f));

/** The task locks of an attempt and the agent holding each, read with any psql-like query. */
export async function heldLocks(query: (sql: string) => Promise<string>, attemptId: string): Promise<{ taskId: string; agent: string }[]> {
  return (await query(locksOfAttemptSql(attemptId))).split('\n').filter(Boolean).map((l) => {
    const [taskId, agent] = l.split('|');
    return { taskId: taskId!, agent: agent! };
  });
}

/** The ids of an attempt's sh> tasks (the sample's `^sub` children), looked up until found. */
export function shTaskIds(endpoint: Endpoint, attemptId: string): () => Promise<Set<string>> {
  let ids = new Set<string>();
  return async () => {
    if (!ids.size) ids = new Set((await attemptTasks(endpoint, attemptId)).filter((t) => t.fullName.includes('^sub')).map((t) => t.id));
    return ids;
  };
}

/**
 * Whether tasks a killed process held were run again by another one — read from Digdag's own
 * log records of the attempt (each log file names the agent that wrote it), not from a poll of
 * the lock table that can miss a short retry.
 */
export async function retriedElsewhere(endpoint: Endpoint, attemptId: string, taskIds: readonly string[], victim: string): Promise<{ ok: boolean; detail: string }> {
  const names = new Map((await attemptTasks(endpoint, attemptId)).map((t) => [t.id, t.fullName]));
  const files = await logFiles(endpoint, attemptId);
  const by = taskIds.map((id) => {
    const name = names.get(id) ?? `task ${id}`;
    const agents = [...new Set(files.filter((f) => f.taskName === name).map((f) => f.agentId))];
    return { name, agents, rerun: agents.filter((a) => a !== victim) };
  });
  const ok = by.length > 0 && by.every((t) => t.rerun.length > 0);
  return { ok, detail: `were re-run by ${by.map((t) => `${t.name.split('^').pop()}: ${t.rerun.join(', ') || 'NOBODY (log records: ' + (t.agents.join(', ') || 'none') + ')'}`).join('; ')}` };
}

export const SCHEDULE_PROJECT = 'ha-verify-schedule';

/**
 * Proves the scheduler without leaving a schedule behind: pushes a project with a schedule, makes
 * its next session due now through the schedule API, waits for that session's attempt to
 * succeed, and deletes the project (its schedule goes with it) whatever happened.
 */
export async function proveScheduler(ctx: Ctx, endpoint: AuthEndpoint): Promise<{ ok: boolean; detail: string }> {
  await pushProject(ctx, endpoint, { name: SCHEDULE_PROJECT, dir: path.join(WORKFLOWS_DIR, SCHEDULE_PROJECT) });
  const pid = await projectId(endpoint, SCHEDULE_PROJECT);
  try {
    const [sched] = await projectSchedules(endpoint, pid);
    if (!sched) return { ok: false, detail: `project ${SCHEDULE_PROJECT} has no schedule` };
    // Skipping forward is all the API allows, and only past the schedule's next session time at
    // the moment of the call (409 "already past" otherwise). Two intervals ahead of the planned one
    // (or of now, if the scheduler is behind): a minute boundary passing between the read and the
    // skip — the scheduler then fires and moves its next time one interval on — still leaves the
    // skip ahead of it. Found on a busy machine, where the read and the skip can be seconds apart.
    const after = new Date(Math.max(Date.parse(sched.nextScheduleTime), Date.now()) + 120_000);
    const asked = Date.now();
    await fireScheduleNow(endpoint, sched.id, after);
    let attempt: Attempt | undefined;
    await waitFor(async () => {
      attempt = (await listAttempts(endpoint, SCHEDULE_PROJECT, sched.workflow.name))[0];
      return !!attempt;
    }, 60_000, 500);
    if (!attempt) return { ok: false, detail: 'no session was created within 60s of the schedule becoming due' };
    const done = await waitAttempt(endpoint, attempt.id, 120_000);
    const fireMs = Date.parse(attempt.createdAt) - asked;
    return { ok: done.success, detail: `due now → session ${attempt.sessionTime} created ${fireMs < 1000 ? 'within 1s' : `after ${(fireMs / 1000).toFixed(1)}s`}, attempt ${attempt.id} ${done.success ? 'succeeded' : 'FAILED'}; project deleted (no schedule left)` };
  } finally {
    await deleteProject(endpoint, pid);
  }
}

/** Records the checks, prints the table, and fails the task if any check failed. */
export function report(ctx: Ctx, checks: Check[], where: string): void {
  ctx.facts.checks = checks;
  ctx.facts.summary = renderTable(checks);
  const failed = checks.filter((c) => !c.ok);
  if (failed.length) throw new UserError(`${failed.length} HA check(s) failed:\n${renderTable(checks)}`, where);
}


export const notInDryRun = (ctx: Ctx) => (changesApplied(ctx.runner) ? undefined : 'dry run: verify-ha starts workflows and kills processes, so it does not run');

/** One role's API port as this machine reaches it, and whether the UI/API password opens it. */
export interface AuthTarget {
  role: string;
  /** The process or pod behind the URL. */
  name: string;
  url: string;
  /** True where the real password is configured; task-running roles are locked with a throw-away one. */
  opens: boolean;
  /** That process's log so far (checked for the wrong password). */
  log: () => Promise<string>;
}

const statusOf = async (url: string, authorization?: string) =>
  (await fetch(`${url}/api/projects`, { headers: authorization ? { authorization } : {}, signal: AbortSignal.timeout(10_000) })).status;

/**
 * Digdag's basic authenticator on every role's port: no credentials → 401, a wrong password →
 * 401 (and not in the log), the real password → 200 where it is configured and 401 on the
 * locked task-running roles. AUTH=none: one check saying every port is open.
 */
export async function proveAuth(targets: readonly AuthTarget[], creds: ApiCredentials | undefined): Promise<Check[]> {
  if (!creds) {
    const open = await Promise.all(targets.map(async (t) => `${t.name} ${await statusOf(t.url)}`));
    return [{ role: 'all', what: 'authentication', ok: true, detail: `AUTH=none (turned off): no credentials needed — ${open.join(', ')}` }];
  }
  const wrongPassword = `wrong-${crypto.randomBytes(9).toString('base64url')}`;
  registerSecret(wrongPassword);
  const wrong = authorizationHeader({ user: creds.user, password: wrongPassword });
  const right = authorizationHeader(creds);
  const checks: Check[] = [];
  for (const t of targets) {
    const none = await statusOf(t.url);
    const bad = await statusOf(t.url, wrong);
    const good = await statusOf(t.url, right);
    const leaked = (await t.log()).includes(wrongPassword);
    const want = t.opens ? 200 : 401;
    checks.push({
      role: t.role,
      what: t.opens ? 'API: 401 without or with a wrong password, 200 with the generated one' : 'API locked: 401 even with the UI/API password',
      ok: none === 401 && bad === 401 && good === want && !leaked,
      detail: `${t.name}: none → ${none}, wrong password → ${bad}, generated → ${good}${leaked ? '; THE WRONG PASSWORD IS IN ITS LOG' : '; log does not show the wrong password'}`,
    });
  }
  return checks;
}
