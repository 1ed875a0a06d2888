// An in-memory Target with a small simulated Digdag behind a real HTTP server: instances of the
// layout's roles, executor loops that move attempts, agents that take task locks, lock expiry
// after a kill, a scheduler that fires a due schedule, basic auth on every instance's port. For
// testing verify-ha's logic (lib/verify-ha.ts) on both evidence modes in seconds; `faults` make
// one behaviour wrong so a check can be seen failing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { apiCredentials, authenticatedEndpoint, authorizationHeader } from '../../lib/auth.ts';
import type { Config } from '../../lib/config.ts';
import type { Ctx } from '../../lib/pipeline.ts';
import { revisionOf } from '../../lib/push-workflow.ts';
import { executorRoles, holdsApiPassword, instances as layoutInstances, runsTasks, type Role } from '../../lib/roles.ts';
import type { DbMember, HaDatabase, RoleInstance, TargetOps } from '../../lib/target.ts';
import { expectedArgs } from '../../lib/verify-ha.ts';

export interface Faults {
  /** The first task of every fan-out runs on the ui (a role that must run none). */
  taskOnUi?: boolean;
  /** Attempts move on with every executor loop stopped. */
  loopEverywhere?: boolean;
  /** The schedule fires on a minute boundary between verify-ha's read and its skip (Digdag: 409). */
  scheduleFiresBeforeSkip?: boolean;
  /** Bringing stopped roles back never finishes (a start that neither succeeds nor fails). */
  restoreHangs?: boolean;
  /** With a replicated database: no replica takes over when the leader is killed. */
  dbNoFailover?: boolean;
}

interface SimInstance {
  name: string;
  role: Role;
  alive: boolean;
  deadAt?: number;
}

interface SimTask {
  id: string;
  fullName: string;
  holder?: string;
  startedAt?: number;
  done: boolean;
  ranBy: string[];
}

interface SimAttempt {
  id: string;
  project: string;
  workflow: string;
  sessionTime: string;
  createdAt: string;
  createdMs: number;
  sleepMs: number;
  root: string;
  tasks: SimTask[];
}

/** Simulated seconds: a task's `sleep_seconds` lasts this many milliseconds. */
const MS_PER_SECOND = 40;
const LOCK_RETENTION_MS = 200;

export interface FakeTarget extends TargetOps {
  close(): Promise<void>;
  /** What happened, for assertions: kills, stops, restores. */
  events: string[];
}

export async function fakeTarget(config: Config, mode: { evidence: 'task-logs' | 'task-locks'; replacesInstances: boolean; haDatabase?: boolean }, faults: Faults = {}): Promise<FakeTarget> {
  const events: string[] = [];
  let seq = 100;
  let replacement = 0;
  const sim: SimInstance[] = layoutInstances(config).map((i) => ({ name: i.name, role: i.role, alive: true }));
  const attempts: SimAttempt[] = [];
  let scheduleProject = true;
  // minutes_interval>: 1, as workflows/ha-verify-schedule.
  let scheduleNext = Math.ceil(Date.now() / 60_000) * 60_000;
  // Kubernetes-style agent ids (pid@pod) when the target replaces instances, names otherwise.
  const agentIdOf = (name: string) => (mode.replacesInstances ? `7@${name}` : name);
  const nameOfAgent = (agentId: string) => agentId.slice(agentId.indexOf('@') + 1);
  const creds = apiCredentials(config);
  const rightHeader = creds ? authorizationHeader(creds) : undefined;

  // A replicated database of three members: a killed leader's server is down, a replica leads
  // 30 ms later (unless faults.dbNoFailover), the old leader rejoins as a replica after 80 ms.
  const db: DbMember[] = ['pg-0', 'pg-1', 'pg-2'].map((name, i) => ({ name, role: i === 0 ? 'leader' : 'replica', ready: true }));
  let dbKill: { at: number; old: DbMember } | undefined;
  const dbNow = (): DbMember[] => {
    if (dbKill) {
      const t = Date.now() - dbKill.at;
      if (t >= 30 && !faults.dbNoFailover && !db.some((m) => m.role === 'leader')) db.find((m) => m !== dbKill!.old)!.role = 'leader';
      if (t >= 80 && db.some((m) => m.role === 'leader')) Object.assign(dbKill.old, { role: 'replica', ready: true });
    }
    return db.map((m) => ({ ...m }));
  };
  const haDatabase: HaDatabase = {
    members: async () => dbNow(),
    killLeader: async () => {
      const old = db.find((m) => m.role === 'leader')!;
      events.push(`kill database leader ${old.name}`);
      Object.assign(old, { role: 'unknown', ready: false });
      dbKill = { at: Date.now(), old };
      return old.name;
    },
  };

  const loopRunning = () => faults.loopEverywhere || sim.some((i) => i.alive && executorRoles(config.layout).includes(i.role));
  const advance = () => {
    if (!loopRunning()) return;
    const now = Date.now();
    const runners = sim.filter((i) => i.alive && runsTasks(i.role));
    let rr = 0;
    for (const a of attempts) {
      for (const [n, t] of a.tasks.entries()) {
        if (t.done) continue;
        const holder = sim.find((i) => i.name === t.holder);
        if (t.holder && (!holder || !holder.alive)) {
          const deadAt = holder?.deadAt ?? 0;
          if (now - deadAt >= LOCK_RETENTION_MS) t.holder = undefined;
          continue;
        }
        if (!t.holder) {
          const ui = sim.find((i) => i.alive && i.role === 'ui');
          const to = faults.taskOnUi && n === 0 && ui ? ui : runners[rr++ % Math.max(1, runners.length)];
          if (!to) continue;
          t.holder = to.name;
          t.startedAt = now;
          t.ranBy.push(to.name);
        } else if (now - t.startedAt! >= a.sleepMs) {
          t.done = true;
          t.holder = undefined;
        }
      }
    }
  };
  const attemptJson = (a: SimAttempt) => {
    const done = a.tasks.every((t) => t.done) && loopRunning();
    return { id: a.id, done, success: done, status: done ? 'success' : 'running', sessionTime: a.sessionTime, createdAt: a.createdAt, workflow: { name: a.workflow, id: '11' } };
  };
  const newAttempt = (project: string, workflow: string, tasks: number, sleepSeconds: number, sessionTime: string): SimAttempt => {
    const a: SimAttempt = {
      id: String(++seq), project, workflow, sessionTime, createdAt: new Date().toISOString(), createdMs: Date.now(), sleepMs: sleepSeconds * MS_PER_SECOND, root: String(++seq),
      tasks: Array.from({ length: tasks }, (_, i) => ({ id: String(++seq), fullName: `+${workflow}^sub+task-${i}`, done: false, ranBy: [] })),
    };
    attempts.push(a);
    return a;
  };
  // A loop plans an attempt's children a moment after submission; without one they stay blocked.
  const taskState = (a: SimAttempt, t: SimTask) => (t.done ? 'success' : t.holder ? 'running' : loopRunning() && Date.now() - a.createdMs >= 100 ? 'ready' : 'blocked');

  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const m = /^\/i\/([^/]+)(\/.*)$/.exec(req.url ?? '');
      const inst = m && sim.find((i) => i.name === m[1]);
      if (!m || !inst || !inst.alive) return send(503, { message: 'no such instance' });
      const url = new URL(m[2]!, 'http://x');
      if (url.pathname === '/api/version') return send(200, { version: '0.10.5.1' });
      // Task-running roles hold a throw-away password: the real one does not open them.
      if (rightHeader && (req.headers.authorization !== rightHeader || !holdsApiPassword(inst.role))) return send(401, { message: 'unauthorized' });
      advance();
      const p = url.pathname;
      const name = url.searchParams.get('name');
      if (req.method === 'GET' && p === '/api/projects') {
        const all = [{ id: '1', name: 'ha-sample', revision: 'r1' }, ...(scheduleProject ? [{ id: '2', name: 'ha-verify-schedule', revision: revisionOf(path.join(config.root, 'workflows', 'ha-verify-schedule')) }] : [])];
        return send(200, { projects: all.filter((x) => !name || x.name === name) });
      }
      if (p === '/api/projects/1/workflows') return send(200, { workflows: [{ id: '11', name: 'parallel' }] });
      if (p === '/api/projects/2/schedules') {
        const next = new Date(scheduleNext).toISOString();
        return send(200, { schedules: [{ id: '9', workflow: { name: 'scheduled', id: '21' }, nextRunTime: next, nextScheduleTime: next }] });
      }
      if (req.method === 'POST' && p === '/api/schedules/9/skip') {
        // The scheduler fires on the minute boundary first: its next session moves one interval on.
        if (faults.scheduleFiresBeforeSkip) scheduleNext += 60_000;
        // Digdag: only a skip past the schedule's current next session time is allowed.
        const asked = Math.floor(Date.parse(JSON.parse(body).nextTime) / 60_000) * 60_000;
        if (asked <= scheduleNext) return send(409, { message: 'Specified time to skip schedules is already past', status: 409 });
        scheduleNext = asked;
        if (sim.some((i) => i.alive && i.role === 'scheduler')) newAttempt('ha-verify-schedule', 'scheduled', 0, 0, new Date(asked).toISOString());
        return send(200, {});
      }
      if (req.method === 'DELETE' && p === '/api/projects/2') {
        scheduleProject = false;
        return send(200, {});
      }
      if (req.method === 'PUT' && p === '/api/attempts') {
        const b = JSON.parse(body) as { sessionTime: string; params: { tasks: number; sleep_seconds: number } };
        return send(200, attemptJson(newAttempt('ha-sample', 'parallel', b.params.tasks, b.params.sleep_seconds, b.sessionTime)));
      }
      if (req.method === 'GET' && p === '/api/attempts') {
        return send(200, { attempts: attempts.filter((a) => a.project === url.searchParams.get('project')).reverse().map(attemptJson) });
      }
      const am = /^\/api\/(attempts|logs)\/(\d+)(\/tasks|\/files)?$/.exec(p);
      const a = am && attempts.find((x) => x.id === am[2]);
      if (am && a) {
        if (am[1] === 'attempts' && !am[3]) return send(200, attemptJson(a));
        if (am[3] === '/tasks') return send(200, { tasks: [{ id: a.root, fullName: `+${a.workflow}`, state: loopRunning() ? 'running' : 'planned', updatedAt: '', upstreams: [] }, ...a.tasks.map((t) => ({ id: t.id, fullName: t.fullName, state: taskState(a, t), updatedAt: '', upstreams: [] }))] });
        // One log per run of a task, and one for the loop> that generated them.
        const runs = a.tasks.flatMap((t) => t.ranBy.map((by) => ({ fileName: `${t.id}.log`, taskName: t.fullName, agentId: agentIdOf(by), fileSize: 10 })));
        return send(200, { files: runs.length ? [{ fileName: 'loop.log', taskName: `+${a.workflow}^sub`, agentId: agentIdOf(a.tasks[0]!.ranBy[0]!), fileSize: 10 }, ...runs] : [] });
      }
      send(404, { message: `${req.method} ${p}` });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const urlOfInstance = (name: string) => `${base}/i/${name}`;
  const mainUi = () => sim.find((i) => i.role === 'ui' && i.alive)?.name ?? 'ui-1';

  const replace = (i: SimInstance) => {
    sim.splice(sim.indexOf(i), 1, { name: `${i.role}-r${++replacement}`, role: i.role, alive: true });
  };
  const down = (i: SimInstance) => {
    i.alive = false;
    i.deadAt = Date.now();
  };
  const find = (inst: RoleInstance) => sim.find((i) => i.name === inst.name)!;

  return {
    kind: mode.replacesInstances ? 'kube' : 'local',
    evidence: mode.evidence,
    replacesInstances: mode.replacesInstances,
    events,
    budgets: () => ({
      pickupMs: 5000,
      attemptMs: 10_000,
      failoverMs: (s) => s * MS_PER_SECOND + LOCK_RETENTION_MS + 5000,
      stallWindowMs: 600,
      placementRun: { tasks: 6, sleepSeconds: 2 },
      failoverRun: { tasks: 4, sleepSeconds: 20 },
    dbFailoverMs: 2000,
    }),
    apiUrl: () => urlOfInstance(mainUi()),
    endpoint: async () => authenticatedEndpoint(config, urlOfInstance(mainUi())),
    instances: async () => sim.map((i) => ({ name: i.name, role: i.role, ready: i.alive, args: expectedArgs(config.layout, i.role) })),
    instanceUrl: async (_ctx, inst) => urlOfInstance(inst.name),
    instanceLog: async () => '',
    opensWithApiPassword: (_c, role) => holdsApiPassword(role),
    instanceOfAgent: nameOfAgent,
    query: async (_ctx: Ctx, sql: string) => {
      advance();
      const id = /attempt_id = (\d+)/.exec(sql)?.[1];
      const a = attempts.find((x) => x.id === id);
      return (a?.tasks ?? []).filter((t) => t.holder).map((t) => `${t.id}|${agentIdOf(t.holder!)}`).join('\n');
    },
    stop: async (_ctx, inst) => {
      events.push(`stop ${inst.name}`);
      const i = find(inst);
      if (mode.replacesInstances) replace(i);
      else down(i);
    },
    kill: async (_ctx, inst) => {
      events.push(`kill ${inst.name}`);
      const i = find(inst);
      down(i);
      if (mode.replacesInstances) {
        // The dead pod keeps its locks until they expire; the replacement has a new name.
        sim.push({ name: `${i.role}-r${++replacement}`, role: i.role, alive: true });
      }
    },
    stopRole: async (_ctx, role) => {
      events.push(`stopRole ${role}`);
      for (const i of sim.filter((x) => x.role === role)) down(i);
      return role;
    },
    restore: async () => {
      events.push('restore');
      if (faults.restoreHangs) await new Promise(() => {});
      for (const i of [...sim]) {
        if (i.alive) continue;
        if (mode.replacesInstances) sim.splice(sim.indexOf(i), 1);
        else i.alive = true;
      }
      if (mode.replacesInstances) {
        for (const role of Object.keys(config.replicas) as Role[]) {
          while (sim.filter((i) => i.role === role).length < (layoutInstances(config).filter((x) => x.role === role).length)) sim.push({ name: `${role}-r${++replacement}`, role, alive: true });
        }
      }
    },
    edgeChecks: async () => [],
    ...(mode.haDatabase ? { haDatabase: () => haDatabase } : {}),
    verifyHint: () => 'the fake has no logs',
    status: async () => {
      throw new Error('not simulated');
    },
    down: async () => [],
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
