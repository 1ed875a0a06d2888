// Config section Roles: the layout, how many processes of each role, and the agents' timings.
import { UserError } from '../errors.ts';
import { LAYOUTS, layoutRoles, type Layout, type Role } from '../roles.ts';
import { group, int, oneOf, str, type Values, type VarSpec } from './spec.ts';

export const ROLES_VARIABLES: readonly VarSpec[] = group('Roles', [
  { name: 'DIGDAG_HA_LAYOUT', default: 'worker', kind: oneOf(LAYOUTS),
    description: 'Role layout. worker: ui, scheduler and worker processes, each worker running the executor loop and an agent together (every workflow step as fast as one digdag server). split: the seed\'s four roles ui, workflow (executor loop), scheduler and agent, each scaled on its own.' },
  { name: 'UI_REPLICAS', default: '1', kind: int(0, 20, '2'),
    description: 'UI/API processes (no executor loop, no agent, no scheduler). 0 is allowed on the local target: every role serves the API.' },
  { name: 'SCHEDULER_REPLICAS', default: '1', kind: int(0, 5, '1'),
    description: 'Scheduler processes (cron schedules only). 0 disables schedules.' },
  { name: 'WORKER_REPLICAS', default: '2', kind: int(1, 50, '4'),
    description: 'Layout worker: worker processes (executor loop + agent). At least 1; the lower bound when autoscaling unless AUTOSCALING_MIN_REPLICAS is set.' },
  { name: 'WORKFLOW_REPLICAS', default: '1', kind: int(1, 20, '2'),
    description: 'Layout split: workflow executor processes (executor loop + TTL enforcer). At least 1, or workflows stall.' },
  { name: 'AGENT_REPLICAS', default: '2', kind: int(1, 50, '4'),
    description: 'Layout split: agent processes that run tasks. At least 1; the lower bound when autoscaling unless AUTOSCALING_MIN_REPLICAS is set.' },
  { name: 'AGENT_MAX_TASK_THREADS', default: '4', kind: int(1, 256, '8'),
    description: 'agent.max-task-threads: tasks one worker (or agent) runs at once (Digdag default 0 = unbounded; always bounded here).' },
  { name: 'AGENT_HEARTBEAT_INTERVAL', default: '', kind: str('60', /^(\d+)?$/),
    description: 'agent.heartbeat-interval in seconds. Empty: 2 on local (fast failover for verify-ha), 10 on Kubernetes.' },
  { name: 'AGENT_LOCK_RETENTION_TIME', default: '', kind: str('300', /^(\d+)?$/),
    description: 'agent.lock-retention-time in seconds: how long a dead agent keeps its tasks. Empty: 8 on local, 60 on Kubernetes. Must be >= 3 x heartbeat.' },
  { name: 'LOCK_EXPIRE_INTERVAL', default: '', kind: str('10', /^(\d+)?$/),
    description: 'database.queue.expireLockInterval in seconds. Empty: 2 on local, 10 on Kubernetes.' },
  { name: 'AGENT_POLL_MILLIS', default: '50', kind: int(10, 60000, '50'),
    description: 'With DIGDAG_PATCHES=true: how long an agent that found no task waits before it looks again (Digdag as released: 1000). Tasks another process queues — a fan-out queued by the ui\'s or another worker\'s loop — wait up to this long for the other workers; each idle agent asks PostgreSQL once per wait (50: ~20 small transactions/s per idle worker; measured on 2 x 4 threads, 24 parallel tasks in 1.50 s against 1.59 s on server -m — README, Performance).' },
  { name: 'EXECUTOR_POLL_MILLIS', default: '500', kind: int(100, 60000, '500'),
    description: 'With DIGDAG_PATCHES=true: the longest wait of the executor loop between two rounds (Digdag as released: 5000, its back-off from 100 ms). The loop is woken early only by events in its own process, so where it runs apart from the agents (the split layout\'s workflow processes, and the worker layout\'s ui) each workflow step waits for its next round; each idle loop asks PostgreSQL a few small queries per round.' },
  { name: 'AGENT_TERMINATION_GRACE_SECONDS', default: '900', kind: int(30, 86400, '3600'),
    description: 'Kubernetes: how long a stopping worker (or agent) may finish its running tasks before SIGKILL (then they are retried after the lock retention).' },
  { name: 'WORKFLOW_MAX_TASKS', default: '1000', kind: int(10, 100000, '5000'),
    description: 'executor.task_max_run: the most tasks one attempt may have, generated ones included (Digdag\'s io.digdag.core.Limits; default 1000). Beyond it Digdag fails the attempt with "Too many tasks. Limit: 1000". Raise it for a wide fan-out: a loop> or for_each> of 1000 items is ~1004 tasks with the root, the loop, its ^sub and what follows. Every task is a row and the executor walks an attempt\'s tasks on each step, so a much larger limit means heavier attempts.' },
  { name: 'DB_POOL_SIZE', default: '8', kind: int(2, 200, '8'),
    description: 'database.maximumPoolSize = minimumPoolSize per Digdag process (Digdag default CPUs x 32 exhausts PostgreSQL).' },
]);

export interface RolesConfig {
  readonly layout: Layout;
  /** Processes/pods per role; 0 for the roles the layout does not run. */
  readonly replicas: Readonly<Record<Role, number>>;
  readonly agent: {
    readonly maxTaskThreads: number;
    readonly heartbeatInterval: number;
    readonly lockRetentionTime: number;
    readonly lockExpireInterval: number;
    readonly terminationGraceSeconds: number;
    /** The patched agent's empty-round wait (lib/digdag-patches.ts). */
    readonly pollMillis: number;
  };
  readonly executor: {
    /** executor.task_max_run: the most tasks one attempt may have (Digdag's default 1000). */
    readonly taskMaxRun: number;
    /** The patched executor loop's longest wait between rounds (lib/digdag-patches.ts). */
    readonly pollMillis: number;
  };
}

export const REPLICA_VARIABLE: Readonly<Record<Role, string>> = { ui: 'UI_REPLICAS', scheduler: 'SCHEDULER_REPLICAS', worker: 'WORKER_REPLICAS', workflow: 'WORKFLOW_REPLICAS', agent: 'AGENT_REPLICAS' };

/** All Digdag processes (pods) the layout runs. */
export const processCount = (roles: Pick<RolesConfig, 'replicas'>): number => Object.values(roles.replicas).reduce((a, b) => a + b, 0);

export function rolesConfig(v: Values): RolesConfig {
  const heartbeat = v.orDefault('AGENT_HEARTBEAT_INTERVAL', 2, 10);
  const retention = v.orDefault('AGENT_LOCK_RETENTION_TIME', 8, 60);
  if (heartbeat < 1) throw new UserError('AGENT_HEARTBEAT_INTERVAL must be at least 1 second', 'set AGENT_HEARTBEAT_INTERVAL=10');
  if (retention < heartbeat * 3) {
    throw new UserError(
      `AGENT_LOCK_RETENTION_TIME=${retention} is less than 3 x AGENT_HEARTBEAT_INTERVAL=${heartbeat}: a live agent could lose its tasks between two heartbeats`,
      `set AGENT_LOCK_RETENTION_TIME=${heartbeat * 3} or more (Digdag's defaults are 60 and 300)`,
    );
  }
  // UI_REPLICAS=0 on Kubernetes is the chart's to refuse (chart/digdag-ha, rendered before anything is applied).
  const layout = v.str('DIGDAG_HA_LAYOUT') as Layout;
  const running = layoutRoles({ layout });
  const replicas = Object.fromEntries(
    Object.entries(REPLICA_VARIABLE).map(([role, name]) => [role, running.includes(role as Role) ? v.num(name) : 0]),
  ) as Record<Role, number>;
  return {
    layout,
    replicas,
    agent: {
      maxTaskThreads: v.num('AGENT_MAX_TASK_THREADS'),
      heartbeatInterval: heartbeat,
      lockRetentionTime: retention,
      lockExpireInterval: v.orDefault('LOCK_EXPIRE_INTERVAL', 2, 10),
      terminationGraceSeconds: v.num('AGENT_TERMINATION_GRACE_SECONDS'),
      pollMillis: v.num('AGENT_POLL_MILLIS'),
    },
    executor: { taskMaxRun: v.num('WORKFLOW_MAX_TASKS'), pollMillis: v.num('EXECUTOR_POLL_MILLIS') },
  };
}
