// What a deployment target offers the tasks and checks written once over it (verify-ha, status,
// down): its role instances, stopping / killing / restoring one, one instance's endpoint, a query
// against Digdag's database, and its pipeline steps. Implemented by lib/local/target.ts (processes
// on this machine) and lib/kube/target.ts (minikube, gke, the own cluster); neither imports the other.
import type { Config } from './config.ts';
import type { AuthEndpoint } from './digdag.ts';
import type { Ctx, Impl, TaskName } from './pipeline.ts';
import type { Role } from './roles.ts';
import type { StatusReport } from './status.ts';
import type { Check } from './verify.ts';

/** One running Digdag process of a role: a local process or a pod. */
export interface RoleInstance {
  /** ui-1, worker-2 (local) or the pod name. */
  name: string;
  role: Role;
  /** Running and answering (local: alive and /api/version answers; Kubernetes: the pod is Ready). */
  ready: boolean;
  /** The Digdag command line after the program: `server` and the role's flags (no -c file). */
  args: readonly string[];
}

/** How long verify-ha waits for what, on this target (derived from its config). */
export interface Budgets {
  /** A task-running instance must take a queued task within this. */
  pickupMs: number;
  /** An attempt, once the layout is whole, must finish within this. */
  attemptMs: number;
  /** An attempt whose task holder was killed: lock retention, two expiry rounds, the task and the
   * target's recovery slack (a loaded machine; a rollout on Kubernetes). */
  failoverMs(taskSeconds: number): number;
  /** How long an attempt must not move while every executor loop is stopped. */
  stallWindowMs: number;
  /** The fan-out whose placement is checked, and the one a kill interrupts. */
  placementRun: { tasks: number; sleepSeconds: number };
  failoverRun: { tasks: number; sleepSeconds: number };
  /** A replicated database: a replica must lead within this after the leader is killed, and the
   * members must be whole again within twice this. */
  dbFailoverMs: number;
}

/** One member of a highly available database (a Patroni pod). */
export interface DbMember {
  name: string;
  /** leader: takes writes; replica: follows; unknown: not labelled (starting, or cut off). */
  role: 'leader' | 'replica' | 'unknown';
  ready: boolean;
}

/** A replicated database the target runs itself (Kubernetes with POSTGRES_MEMBERS ≥ 2), for the
 * chaos soak: its members, and the two ways a leader is lost. */
export interface HaDatabase {
  members(ctx: Ctx): Promise<DbMember[]>;
  /** SIGKILL of the leader's postmaster ('postgres': the pod stays, Patroni sees its server die)
   * or deletion of the leader's pod ('pod': Patroni hands over on SIGTERM, the pod comes back).
   * Returns the member that was leader. */
  killLeader(ctx: Ctx, how: 'postgres' | 'pod'): Promise<string>;
}

/** What a target offers the checks written over it; Target adds its pipeline steps. */
export interface TargetOps {
  readonly kind: 'local' | 'kube';
  /**
   * Where the evidence of which agent ran a task comes from: Digdag's task log files through the
   * API (local: one log dir shared by every process), or the lock table sampled while the tasks
   * run (Kubernetes: each pod keeps its own logs).
   */
  readonly evidence: 'task-logs' | 'task-locks';
  /** A supervisor replaces a stopped instance under a new name at once (Kubernetes controllers);
   * locally a stopped process stays down until restore(). */
  readonly replacesInstances: boolean;
  budgets(config: Config): Budgets;

  /** The UI/API URL as this machine reaches it, without side effects (for stamps and reports). */
  apiUrl(ctx: Ctx): string;
  /** That endpoint, reachable now, with the Authorization header (Kubernetes: (re)starts the
   * port-forward to the UI Service if it points elsewhere). */
  endpoint(ctx: Ctx): Promise<AuthEndpoint>;
  /** The role instances that exist now (not ones being deleted), in layout order. */
  instances(ctx: Ctx): Promise<RoleInstance[]>;
  /** One instance's own API URL (Kubernetes: the tracked port-forward moves to that pod). */
  instanceUrl(ctx: Ctx, instance: RoleInstance): Promise<string>;
  /** One instance's log so far. */
  instanceLog(ctx: Ctx, instance: RoleInstance): Promise<string>;
  /** Whether the UI/API password opens this role's port (task-running roles get a throw-away one). */
  opensWithApiPassword(config: Config, role: Role): boolean;
  /** The instance an agent id in queued_task_locks / log files belongs to. */
  instanceOfAgent(agentId: string): string;
  /** A query against Digdag's database; psql -At output. */
  query(ctx: Ctx, sql: string): Promise<string>;
  /** Stops one instance gracefully (Kubernetes: deletes the pod; its controller replaces it). */
  stop(ctx: Ctx, instance: RoleInstance): Promise<void>;
  /** Kills one instance with SIGKILL, no grace (Kubernetes: force-deletes the pod). */
  kill(ctx: Ctx, instance: RoleInstance): Promise<void>;
  /** Takes every instance of a role out of action until restore() (Kubernetes: scale to 0; locally:
   * frozen with SIGSTOP, which stops its executor loop as surely and resumes without a start-up). */
  stopRole(ctx: Ctx, role: Role): Promise<string>;
  /** Brings the layout back to what apply made (and the endpoint with it). */
  restore(ctx: Ctx): Promise<void>;
  /** Checks of what stands in front of the roles (the Ingress), when the target has one. */
  edgeChecks(ctx: Ctx): Promise<Check[]>;
  /** What a passing verify-ha proved, for the stamp; undefined: verify-ha always runs. */
  verifiedState?(ctx: Ctx): unknown;
  /** Where to look when a check fails. */
  verifyHint(config: Config): string;

  /** The target's own replicated database, when it runs one (undefined: one server, or external). */
  haDatabase?(config: Config): HaDatabase | undefined;

  status(ctx: Ctx): Promise<StatusReport>;
  /** Stops everything the target started; purge also deletes data. Lines saying what happened. */
  down(ctx: Ctx, purge: boolean): Promise<string[]>;
}

export interface Target extends TargetOps {
  /** Every pipeline task's behaviour on this target (apply among them). */
  readonly steps: Readonly<Record<TaskName, Impl>>;
  /** Refuses a configuration this target cannot deploy before any task changes anything (the
   * chart's rules on Kubernetes); reads only. */
  preflight?(ctx: Ctx): Promise<void>;
}
