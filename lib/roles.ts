// The Digdag role layouts, the roles each one runs and the flags that make each role. The one
// place the layout is defined: the local target, the manifests and the chart follow it (tests
// hold the manifests and the chart to these flags).
import type { Config } from './config.ts';

export const LAYOUTS = ['worker', 'split'] as const;
export type Layout = (typeof LAYOUTS)[number];

export const ROLES = ['ui', 'scheduler', 'worker', 'workflow', 'agent'] as const;
export type Role = (typeof ROLES)[number];

/**
 * worker (default): the executor loop and the agent share a process. Digdag's executor loop is
 * woken early only by events in its own JVM (a task finishing on its own agent, an attempt
 * submitted through its own API) and otherwise polls every 5 s, so a loop alone in a "workflow"
 * process adds ~5 s to every workflow step. Workers are the unit that scales and fails over.
 *
 * split: the seed's four roles, each scaled on its own, for those who want them apart.
 */
export const LAYOUT_ROLES: Readonly<Record<Layout, readonly Role[]>> = {
  worker: ['ui', 'scheduler', 'worker'],
  split: ['ui', 'workflow', 'scheduler', 'agent'],
};

/**
 * Flags per role (each sets a config key: --disable-local-agent → agent.enabled=false,
 * --disable-executor-loop → server.executor.enabled=false, --disable-scheduler → schedule.enabled=false).
 *
 * The seed's scheduler keeps the executor loop (only --disable-local-agent). We disable it: the
 * loop lives where tasks are driven (worker, or workflow in the split layout), which must have at
 * least one replica (validated), while the scheduler only fires cron schedules; firing a schedule
 * inserts a session and an attempt that an executor loop picks up.
 */
export const ROLE_FLAGS: Readonly<Record<Role, readonly string[]>> = {
  ui: ['--disable-executor-loop', '--disable-local-agent', '--disable-scheduler'],
  scheduler: ['--disable-local-agent', '--disable-executor-loop'],
  worker: ['--disable-scheduler'],
  workflow: ['--disable-local-agent', '--disable-scheduler'],
  agent: ['--disable-executor-loop', '--disable-scheduler'],
};

/**
 * Roles whose port people and the toolkit call (the UI and the REST API; on Kubernetes the ones
 * behind the Service, label digdag-ha/api). They get the real UI/API password; every other role
 * still serves the API (Digdag cannot turn it off) but is locked with a throw-away password.
 */
export const SERVES_USERS: readonly Role[] = ['ui'];
export const servesUsers = (role: Role): boolean => SERVES_USERS.includes(role);

/**
 * The role whose first process answers the local endpoint (the first port): the UI, or with
 * UI_REPLICAS=0 (allowed locally) the first role that runs at all. It gets the real password.
 */
export const localApiRole = (config: Pick<Config, 'layout' | 'replicas'>): Role | undefined => layoutRoles(config).find((r) => config.replicas[r] > 0);

export const runsTasks = (role: Role): boolean => !ROLE_FLAGS[role].includes('--disable-local-agent');
export const runsExecutorLoop = (role: Role): boolean => !ROLE_FLAGS[role].includes('--disable-executor-loop');
export const runsScheduler = (role: Role): boolean => !ROLE_FLAGS[role].includes('--disable-scheduler');

/** The roles of the configured layout, in start order (the first serves the UI endpoint). */
export const layoutRoles = (config: Pick<Config, 'layout'>): readonly Role[] => LAYOUT_ROLES[config.layout];

/** The role whose processes run tasks: what scales with the queue and what a kill test attacks. */
export const taskRole = (layout: Layout): Role => LAYOUT_ROLES[layout].find(runsTasks)!;

/** The roles that run an executor loop. */
export const executorRoles = (layout: Layout): Role[] => LAYOUT_ROLES[layout].filter(runsExecutorLoop);

export interface Instance {
  role: Role;
  /** ui-1, worker-2, … — also the agent.id of task-running processes, so logs name the process that ran a task. */
  name: string;
  index: number;
}

/** Every process of the layout, in start order. */
export function instances(config: Pick<Config, 'layout' | 'replicas'>): Instance[] {
  const out: Instance[] = [];
  for (const role of layoutRoles(config)) {
    for (let i = 1; i <= config.replicas[role]; i++) out.push({ role, name: `${role}-${i}`, index: i });
  }
  return out;
}
