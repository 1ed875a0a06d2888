// The local target: Digdag's roles as processes on this machine (registered in the state dir),
// the project's own PostgreSQL, every task's implementation here, and the primitives verify-ha,
// status and down use (lib/target.ts).
import fs from 'node:fs';
import { authenticatedEndpoint } from '../auth.ts';
import type { Config } from '../config.ts';
import { requireSecrets } from '../credentials.ts';
import { answersVersion } from '../digdag.ts';
import { UserError } from '../errors.ts';
import type { Ctx, Impl, TaskName } from '../pipeline.ts';
import { dbEndpoint, queryAsApp, type DbEndpoint } from '../postgres.ts';
import { freeze, isAlive, isFrozen, listProcesses, processState, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { pushWorkflowOn } from '../push-workflow.ts';
import { instances, type Role } from '../roles.ts';
import type { RoleInstance, Target, TargetOps } from '../target.ts';
import { verifyHaOn } from '../verify-ha.ts';
import { apply, endpointOf, opensWithApiPassword, reconcileLocal, stopGraceMs } from './apply.ts';
import { buildImage } from './build-image.ts';
import { createSecret } from './create-secret.ts';
import { downLocal } from './down.ts';
import { initDb } from './init-db.ts';
import { startPostgres } from './start-postgres.ts';
import { localStatus } from './status.ts';

const roleEntries = (config: Config): ProcessEntry[] => listProcesses(config).filter((p) => p.role);

function entryOf(config: Config, inst: RoleInstance): ProcessEntry {
  const e = roleEntries(config).find((p) => p.name === inst.name);
  if (!e) throw new UserError(`${inst.name} is not registered as running`, 'run the apply task first');
  return e;
}

/** A Digdag process's command line after the program: `server` and its flags, without `-c <file>`. */
export function serverArgs(cmdline: readonly string[]): string[] {
  const at = cmdline.indexOf('server');
  if (at < 0) return [];
  const out: string[] = [];
  for (let i = at; i < cmdline.length; i++) {
    if (cmdline[i] === '-c') i++;
    else out.push(cmdline[i]!);
  }
  return out;
}

const cmdlineOf = (pid: number): string[] => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
};

// One database endpoint per run: verify-ha polls the lock table every 250 ms.
const dbOf = new WeakMap<Ctx, Promise<DbEndpoint>>();
const db = (ctx: Ctx) => {
  let d = dbOf.get(ctx);
  if (!d) dbOf.set(ctx, (d = dbEndpoint(ctx.config, requireSecrets(ctx.config).dbPassword)));
  return d;
};

const ops: TargetOps = {
  kind: 'local',
  evidence: 'task-logs',
  replacesInstances: false,
  budgets: (config) => ({
    pickupMs: 60_000,
    attemptMs: 180_000,
    // 240 s of slack for a loaded 2-core machine (CI saw a recovery outlast 120 s with both cores burned).
    failoverMs: (taskSeconds) => (taskSeconds + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + 240) * 1000,
    stallWindowMs: 10_000,
    placementRun: { tasks: 6, sleepSeconds: 2 },
    // Long enough for the kill to land mid-task (pickup is seen within a second or two, also with
    // both cores busy); the re-run's sleep is part of every run's time (12 s until 2026-12-03).
    failoverRun: { tasks: 4, sleepSeconds: 8 },
    dbFailoverMs: 60_000,
  }),
  apiUrl: (ctx) => endpointOf(ctx.config),
  endpoint: async (ctx) => authenticatedEndpoint(ctx.config, endpointOf(ctx.config)),
  instances: async (ctx) => {
    const order = instances(ctx.config).map((i) => i.name);
    const entries = roleEntries(ctx.config).sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    return Promise.all(entries.map(async (e) => {
      const alive = isAlive(e);
      return {
        name: e.name,
        role: e.role as Role,
        // A loaded machine may take a moment to answer; a dead process fails at once.
        ready: alive && (await waitFor(async () => !!(await answersVersion(`http://127.0.0.1:${e.port}`)) || !isAlive(e), 10_000, 500)) && isAlive(e),
        args: alive ? serverArgs(cmdlineOf(e.pid)) : [],
      };
    }));
  },
  instanceUrl: async (ctx, inst) => `http://127.0.0.1:${entryOf(ctx.config, inst).port}`,
  instanceLog: async (ctx, inst) => {
    const file = entryOf(ctx.config, inst).logFile;
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  },
  opensWithApiPassword: (config, role) => opensWithApiPassword(config, role),
  // agent.id is the instance name on this target (lib/properties.ts).
  instanceOfAgent: (agentId) => agentId,
  query: async (ctx, sql) => queryAsApp(ctx.runner, ctx.config, await db(ctx), sql),
  stop: async (ctx, inst) => {
    const e = entryOf(ctx.config, inst);
    await stopProcess(e, stopGraceMs(ctx.config, inst.role));
    unregisterProcess(ctx.config, e.name, e.pid);
  },
  kill: async (ctx, inst) => {
    const e = entryOf(ctx.config, inst);
    process.kill(-e.pid, 'SIGKILL');
    await waitFor(() => !isAlive(e), 10_000, 100);
    unregisterProcess(ctx.config, e.name, e.pid);
  },
  // Frozen, not stopped: SIGSTOP takes the role's executor loop (and everything else it does)
  // off the machine just as surely, and SIGCONT brings it back without a JVM start-up (25–30 s
  // per restore on a loaded 2-core machine). apply resumes a process an interrupted run left frozen.
  stopRole: async (ctx, role) => {
    const procs = roleEntries(ctx.config).filter((p) => p.role === role);
    await Promise.all(procs.map((p) => freeze(p, true)));
    const notFrozen = procs.filter((p) => !isFrozen(p)).map((p) => `${p.name} (pid ${p.pid}, ${isAlive(p) ? `state ${processState(p)}` : 'not running'})`);
    if (notFrozen.length) throw new Error(`SIGSTOP did not freeze ${notFrozen.join(', ')} within 15 s`);
    return procs.map((p) => `${p.name} (frozen)`).join(', ');
  },
  // What restore starts are replacements, not part of what a failed run undoes.
  restore: async (ctx) => {
    await Promise.all(roleEntries(ctx.config).filter(isFrozen).map((p) => freeze(p, false)));
    const before = ctx.started.length;
    // Only what is down comes back: a forced verify-ha must not restart every role (four JVM
    // start-ups per restore on a loaded 2-core machine).
    for (const line of await reconcileLocal({ ...ctx, force: false })) ctx.runner.log(line);
    ctx.started.length = before;
  },
  // The UI listens on 127.0.0.1: nothing stands in front of it.
  edgeChecks: async () => [],
  // Any process restarted (a new pid) or reconfigured (a new hash) and verify-ha runs again.
  verifiedState: (ctx) => ({ processes: roleEntries(ctx.config).map((p) => [p.name, p.pid, (p as { hash?: string }).hash]) }),
  verifyHint: () => 'read the role logs under the state dir (logs/*.log)',
  status: (ctx) => localStatus(ctx),
  down: (ctx, purge) => downLocal(ctx, purge),
};

const steps: Record<TaskName, Impl> = {
  'build-image': buildImage,
  'create-secret': createSecret,
  'start-postgres': startPostgres,
  'init-db': initDb,
  apply,
  ingress: {
    notApplicable: (ctx) => `local target: no ingress needed, the UI is at ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  'port-forward': {
    notApplicable: (ctx) => `local target: nothing to forward, the UI listens on ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  'push-workflow': pushWorkflowOn(ops),
  'verify-ha': verifyHaOn(ops),
};

export const localTarget: Target = { ...ops, steps };
