// The chaos soak, written once over the target (lib/target.ts): steady submissions of the mixed
// sample workflow while a Digdag instance or the database leader is killed every K seconds; every
// attempt whose id came back is followed to its end and looked up in Digdag's own tables. What it
// proves is counted, not assumed: submitted / succeeded / failed / lost / unfinished attempts,
// retries from Digdag's task records, the longest time no submission was accepted, and each kill
// with its recovery.
import { attemptTasks, getAttempt, startAttempt, workflowId, type Attempt } from './digdag-api.ts';
import type { AuthEndpoint } from './digdag.ts';
import { UserError } from './errors.ts';
import type { Ctx } from './pipeline.ts';
import { waitFor } from './processes.ts';
import { SAMPLE_PROJECT } from './push-workflow.ts';
import type { DbMember, HaDatabase, RoleInstance, TargetOps } from './target.ts';

export const SOAK_WORKFLOW = 'mixed';
export const KILL_KINDS = ['digdag', 'db-postgres', 'db-pod'] as const;
export type KillKind = (typeof KILL_KINDS)[number];

export interface SoakOptions {
  durationMs: number;
  /** A kill every this long, the first one after it; 0: no kills (a baseline). */
  killEveryMs: number;
  /** One submission started every this long (the next waits while one is in flight). */
  submitEveryMs: number;
  /** What may be killed; each kill draws one (random order from the seed, or in turn). */
  kills: readonly KillKind[];
  order: 'random' | 'cycle';
  seed: number;
  /** After the last submission: how long attempts may take to end. */
  settleMs: number;
  /** How long one kill may take to recover before it is reported unrecovered. */
  recoverMs: number;
  fanout: number;
  log: (line: string) => void;
}

export interface KillRecord {
  n: number;
  /** Seconds after the soak started. */
  atS: number;
  kind: KillKind;
  victim: string;
  /** Seconds from the kill until the target is whole again (the role's instances ready again;
   * for the database: one leader and every member ready). null: not within recoverMs. */
  recoveredS: number | null;
  /** Database kills: the leader after the kill, and the first submission begun after the kill
   * that was accepted (leader loss → first successful write). */
  newLeader?: string;
  firstWriteS?: number | null;
  /** Median attempt time (created → finished) of attempts submitted in the minute after the kill. */
  attemptMedianAfterS?: number | null;
  note?: string;
}

export interface SoakReport {
  target: string;
  startedAt: string;
  durationS: number;
  killEveryS: number;
  submitEveryS: number;
  seed: number;
  submitted: number;
  succeeded: number;
  failed: number;
  /** Submitted (an id came back) but not in Digdag's session_attempts afterwards. */
  lost: number;
  /** Not ended within the settle time. */
  unfinished: number;
  /** Submissions that got no id (refused or cut off): nothing was promised for them. */
  refused: number;
  /** Task retries recorded by Digdag (state_params.retry_count) — the sample's flaky step. */
  retries: number;
  longestStallS: number;
  attemptSeconds: { p50: number | null; p95: number | null; max: number | null };
  kills: KillRecord[];
  failures: string[];
  ok: boolean;
}

/** mulberry32: a small seeded generator, so a run's kill sequence can be repeated. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function percentile(values: readonly number[], p: number): number | null {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The longest interval in [start, end] that holds no accepted submission. */
export function longestGap(acceptedAt: readonly number[], start: number, end: number): number {
  let prev = start;
  let longest = 0;
  for (const t of [...acceptedAt].sort((a, b) => a - b)) {
    longest = Math.max(longest, t - prev);
    prev = t;
  }
  return Math.max(longest, end - prev);
}

/** Refusals before anything is touched: what the target can kill, and settings that make sense. */
export function checkSoak(target: TargetOps, db: HaDatabase | undefined, o: Pick<SoakOptions, 'durationMs' | 'killEveryMs' | 'submitEveryMs' | 'kills'>): void {
  if (!(o.durationMs > 0)) throw new UserError('the soak needs a duration > 0', 'e.g. --minutes 30');
  if (!(o.submitEveryMs >= 200)) throw new UserError(`--submit-every ${o.submitEveryMs / 1000} s is too short`, 'use 0.2 s or more (e.g. --submit-every 3)');
  if (o.killEveryMs < 0 || (o.killEveryMs > 0 && o.killEveryMs < 10_000)) throw new UserError(`--kill-every ${o.killEveryMs / 1000} s: a kill needs time to recover`, 'use 10 s or more (e.g. --kill-every 120), or 0 for no kills');
  if (o.killEveryMs > 0 && !o.kills.length) throw new UserError('nothing to kill', `name kinds with --kill ${KILL_KINDS.join(',')}`);
  const dbKills = o.kills.filter((k) => k !== 'digdag');
  if (dbKills.length && !db) {
    throw new UserError(
      `--kill ${dbKills.join(',')}: the ${target.kind === 'local' ? 'local target runs one PostgreSQL (one machine has no database HA)' : 'deployment has no replicated in-cluster database (POSTGRES_MEMBERS < 2 or an external DATABASE_URL)'}`,
      target.kind === 'local' ? 'use --kill digdag on the local target' : 'deploy with POSTGRES_MEMBERS=3 (the default), or use --kill digdag',
    );
  }
}

interface Submission {
  startedAt: number;
  acceptedAt?: number;
  id?: string;
}

/** Runs the soak against a deployed, verified stack; never throws for what it measures. */
export async function soak(ctx: Ctx, target: TargetOps, o: SoakOptions): Promise<SoakReport> {
  const db = target.haDatabase?.(ctx.config);
  checkSoak(target, db, o);
  const rand = seeded(o.seed);
  let endpoint: AuthEndpoint = await target.endpoint(ctx);
  let refreshing: Promise<void> | undefined;
  // A lost port-forward (its pod was killed) or a restarted ui: find the endpoint again, once at a time.
  const refresh = () =>
    (refreshing ??= target
      .endpoint(ctx)
      .then((e) => void (endpoint = e))
      .catch(() => undefined)
      .finally(() => (refreshing = undefined)));
  const wf = await workflowId(endpoint, SAMPLE_PROJECT, SOAK_WORKFLOW).catch((e: Error) => {
    throw new UserError(`the soak's workflow ${SAMPLE_PROJECT}/${SOAK_WORKFLOW} is not on the deployment: ${e.message}`, 'run the pipeline first (npx tsx tasks/all.ts), which pushes it');
  });

  const start = Date.now();
  const end = start + o.durationMs;
  const since = (t: number) => Number(((t - start) / 1000).toFixed(1));
  const subs: Submission[] = [];
  const ended = new Map<string, Attempt>();
  let session = Math.floor(Date.now() / 1000) * 1000;
  o.log(`soak: ${o.durationMs / 60_000} min, a submission every ${o.submitEveryMs / 1000} s, ${o.killEveryMs ? `a kill every ${o.killEveryMs / 1000} s of ${o.kills.join('/')} (${o.order}, seed ${o.seed})` : 'no kills'}`);

  // Follows pending attempts: a few per round, oldest first, so the end is not one big batch.
  const followSome = async (n: number) => {
    const pending = subs.filter((s) => s.id && !ended.has(s.id)).slice(0, n);
    for (const s of pending) {
      try {
        const a = await getAttempt(endpoint, s.id!);
        if (a.done) ended.set(s.id!, a);
      } catch {
        await refresh();
        return;
      }
    }
  };

  let lastNote = start;
  const submitter = (async () => {
    while (Date.now() < end) {
      const round = Date.now();
      if (round - lastNote >= 60_000) {
        lastNote = round;
        const accepted = subs.filter((s) => s.id).length;
        o.log(`soak: ${since(round)} s: ${accepted} attempts submitted, ${[...ended.values()].filter((a) => a.success).length} succeeded, ${[...ended.values()].filter((a) => !a.success).length} failed so far, ${subs.length - accepted} submissions refused`);
      }
      const sub: Submission = { startedAt: round };
      subs.push(sub);
      session = Math.max(session + 1000, Math.floor(round / 1000) * 1000);
      try {
        sub.id = await startAttempt(endpoint, wf, new Date(session), { fanout: o.fanout });
        sub.acceptedAt = Date.now();
      } catch {
        await refresh();
      }
      await followSome(3);
      const wait = round + o.submitEveryMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, end - Date.now() + 1)));
    }
  })();

  const kills: KillRecord[] = [];
  const killer = (async () => {
    if (!o.killEveryMs) return;
    for (let n = 1; ; n++) {
      const due = start + n * o.killEveryMs;
      if (due >= end) return;
      await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
      const kind = o.order === 'cycle' ? o.kills[(n - 1) % o.kills.length]! : o.kills[Math.floor(rand() * o.kills.length)]!;
      try {
        kills.push(await killOne(ctx, target, db, kind, n, o, since, rand));
      } catch (e) {
        // A kill that could not be made (e.g. no leader to find yet) is reported, not fatal: the
        // submissions go on and the report says NOT OK.
        kills.push({ n, atS: since(Date.now()), kind, victim: '(kill failed)', recoveredS: null, note: (e as Error).message.split('\n')[0]! });
      }
      const k = kills.at(-1)!;
      o.log(`soak: kill ${n} at ${k.atS} s: ${k.kind} ${k.victim} → ${k.recoveredS === null ? `NOT whole again within ${o.recoverMs / 1000} s` : `whole again after ${k.recoveredS} s`}${k.newLeader ? ` (leader now ${k.newLeader})` : ''}`);
    }
  })();

  await Promise.all([submitter, killer]);
  const lastSubmit = Date.now();
  // Every attempt whose id came back is followed to its end (bounded).
  await waitFor(async () => {
    await followSome(50);
    return subs.every((s) => !s.id || ended.has(s.id));
  }, o.settleMs, 1000);

  const ids = subs.filter((s) => s.id).map((s) => s.id!);
  const inDb = new Set(ids.length ? (await target.query(ctx, `select id from session_attempts where id in (${ids.join(',')})`)).split('\n').map((l) => l.trim()).filter(Boolean) : []);
  // Finished attempts' tasks live in task_archives (one JSON array per attempt), running ones in tasks.
  const idList = ids.join(',');
  const retries = ids.length
    ? Number((await target.query(ctx, `select coalesce((select sum((t->>'retryCount')::int) from task_archives a, json_array_elements(a.tasks::json) t where a.id in (${idList})), 0) + coalesce((select sum(retry_count) from tasks where attempt_id in (${idList})), 0)`)).trim() || 0)
    : 0;
  const failedIds = ids.filter((id) => ended.get(id) && !ended.get(id)!.success);
  // Why each failed: the error Digdag recorded on its tasks.
  const errors = new Map<string, string[]>();
  if (failedIds.length) {
    const rows = await target.query(ctx, `select a.id || '|' || (t->>'fullName') || '|' || replace(t->'error'->>'message', E'\\n', ' ') from task_archives a, json_array_elements(a.tasks::json) t where a.id in (${failedIds.join(',')}) and t->'error'->>'message' is not null`).catch(() => '');
    for (const row of rows.split('\n').filter(Boolean)) {
      const [id, task, ...msg] = row.split('|');
      errors.set(id!, [...(errors.get(id!) ?? []), `${task}: ${msg.join('|').slice(0, 200)}`]);
    }
  }
  const failures: string[] = [];
  for (const id of failedIds) {
    const why = errors.get(id);
    if (why) {
      failures.push(`${id}: ${why.join('; ')}`);
      continue;
    }
    const tasks = await attemptTasks(endpoint, id).catch(() => []);
    failures.push(`${id}: ${tasks.filter((t) => !['success', 'planned', 'blocked'].includes(t.state)).map((t) => `${t.fullName} ${t.state}`).join(', ') || ended.get(id)!.status || 'failed'}`);
  }
  const durations = (from: number, to: number) =>
    subs.filter((s) => s.id && ended.get(s.id)?.finishedAt && s.startedAt >= from && s.startedAt < to)
      .map((s) => { const a = ended.get(s.id!)!; return (Date.parse(a.finishedAt!) - Date.parse(a.createdAt)) / 1000; });
  for (const k of kills) {
    const at = start + k.atS * 1000;
    k.attemptMedianAfterS = percentile(durations(at, at + 60_000), 50);
    if (k.kind !== 'digdag') {
      const first = subs.find((s) => s.startedAt >= at && s.acceptedAt);
      k.firstWriteS = first ? Number(((first.acceptedAt! - at) / 1000).toFixed(1)) : null;
    }
  }
  const all = durations(0, Infinity);
  const r1 = (n: number | null) => (n === null ? null : Number(n.toFixed(1)));
  const report: SoakReport = {
    target: target.kind,
    startedAt: new Date(start).toISOString(),
    durationS: since(lastSubmit),
    killEveryS: o.killEveryMs / 1000,
    submitEveryS: o.submitEveryMs / 1000,
    seed: o.seed,
    submitted: ids.length,
    succeeded: ids.filter((id) => ended.get(id)?.success).length,
    failed: failures.length,
    lost: ids.filter((id) => !inDb.has(id)).length,
    unfinished: ids.filter((id) => !ended.has(id)).length,
    refused: subs.length - ids.length,
    retries,
    longestStallS: Number((longestGap(subs.flatMap((s) => (s.acceptedAt ? [s.acceptedAt] : [])), start, lastSubmit) / 1000).toFixed(1)),
    attemptSeconds: { p50: r1(percentile(all, 50)), p95: r1(percentile(all, 95)), max: r1(percentile(all, 100)) },
    kills,
    failures,
    ok: false,
  };
  report.ok = report.failed === 0 && report.lost === 0 && report.unfinished === 0 && report.submitted > 0 && kills.every((k) => k.recoveredS !== null);
  return report;
}

async function killOne(ctx: Ctx, target: TargetOps, db: HaDatabase | undefined, kind: KillKind, n: number, o: SoakOptions, since: (t: number) => number, rand: () => number): Promise<KillRecord> {
  if (kind === 'digdag') {
    const ready = (await target.instances(ctx)).filter((i) => i.ready);
    const victim: RoleInstance | undefined = ready[Math.floor(rand() * ready.length)];
    if (!victim) return { n, atS: since(Date.now()), kind, victim: '(no ready instance)', recoveredS: null };
    const before = ready.filter((i) => i.role === victim.role).length;
    await target.kill(ctx, victim);
    // Timed from when the kill was done, not asked for (kubectl's own round trip is not recovery).
    const at = Date.now();
    // A target without a supervisor (local processes) is brought back the way apply would.
    if (!target.replacesInstances) await target.restore(ctx);
    const whole = await waitFor(async () => {
      const now = (await target.instances(ctx).catch(() => [])).filter((i) => i.role === victim.role && i.ready);
      return now.length >= before && (!target.replacesInstances || !now.some((i) => i.name === victim.name));
    }, o.recoverMs, 500);
    return { n, atS: since(at), kind, victim: `${victim.role} ${victim.name}`, recoveredS: whole ? Number(((Date.now() - at) / 1000).toFixed(1)) : null };
  }
  const before = await db!.members(ctx);
  const old = await db!.killLeader(ctx, kind === 'db-pod' ? 'pod' : 'postgres');
  const at = Date.now();
  let members: DbMember[] = [];
  const read = async () => (members = await db!.members(ctx).catch(() => []));
  // Right after the kill the labels and readiness still show the old state: first see the loss
  // (the victim gone, not ready or no longer leader), then wait until the members are whole.
  const seen = await waitFor(async () => {
    const v = (await read()).find((m) => m.name === old);
    return !v || !v.ready || v.role !== 'leader';
  }, Math.min(o.recoverMs, 60_000), 250);
  const whole = await waitFor(async () => {
    await read();
    return members.length >= before.length && members.every((m) => m.ready) && members.filter((m) => m.role === 'leader').length === 1;
  }, Math.max(0, o.recoverMs - (Date.now() - at)), 500);
  return {
    n, atS: since(at), kind, victim: old,
    recoveredS: whole && seen ? Number(((Date.now() - at) / 1000).toFixed(1)) : null,
    newLeader: members.find((m) => m.role === 'leader')?.name ?? '(none)',
    ...(seen ? {} : { note: `the loss of ${old} never showed in its labels or readiness within 60 s` }),
  };
}

/** The report as lines for a person. */
export function soakSummary(r: SoakReport): string[] {
  return [
    `soak on ${r.target}: ${r.durationS} s, ${r.kills.length} kills (every ${r.killEveryS} s), a submission every ${r.submitEveryS} s`,
    `attempts: ${r.submitted} submitted, ${r.succeeded} succeeded, ${r.failed} failed, ${r.lost} lost, ${r.unfinished} unfinished; ${r.refused} submissions refused (no id); ${r.retries} task retries`,
    `attempt time p50 ${r.attemptSeconds.p50} s, p95 ${r.attemptSeconds.p95} s, max ${r.attemptSeconds.max} s; longest stall (no submission accepted) ${r.longestStallS} s`,
    ...r.kills.map((k) => `kill ${k.n} at ${k.atS} s: ${k.kind} ${k.victim}: whole again ${k.recoveredS ?? 'NOT'} s${k.firstWriteS !== undefined ? `, first write ${k.firstWriteS ?? 'none'} s` : ''}${k.newLeader ? `, leader ${k.newLeader}` : ''}, attempts in the next minute p50 ${k.attemptMedianAfterS ?? '-'} s${k.note ? ` (${k.note})` : ''}`),
    ...r.failures.map((f) => `failed: ${f}`),
    r.ok ? 'soak: OK — nothing failed, nothing lost' : 'soak: NOT OK',
  ];
}
