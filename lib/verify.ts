// What verify-ha shares across targets: the check table, the sample workflow it starts, and
// how a run of checks becomes a result.
import type { Ctx } from './pipeline.ts';
import { startAttempt, workflowId } from './digdag-api.ts';
import { UserError } from './errors.ts';
import { SAMPLE_PROJECT } from './push-workflow.ts';
import type { Role } from './roles.ts';

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

export async function runParallel(endpoint: import('./digdag.ts').Endpoint, tasks: number, sleepSeconds: number) {
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

/** Records the checks, prints the table, and fails the task if any check failed. */
export function report(ctx: Ctx, checks: Check[], where: string): void {
  ctx.facts.checks = checks;
  ctx.facts.summary = renderTable(checks);
  const failed = checks.filter((c) => !c.ok);
  if (failed.length) throw new UserError(`${failed.length} HA check(s) failed:\n${renderTable(checks)}`, where);
}


export const notInDryRun = (ctx: Ctx) => (ctx.runner.dryRun ? 'dry run: verify-ha starts workflows and kills processes, so it does not run' : undefined);
