// The Digdag role layouts, the roles each one runs and the flags that make each role. The one
// place the layout is defined: the local target reads it here, the chart (and so the toolkit's
// Kubernetes rendering and manifests/) from files/toolkit.yaml, which npm run generate writes from it.
import type { Config } from './config.ts';

export const LAYOUTS = ['worker', 'split'] as const;
export type Layout = (typeof LAYOUTS)[number];

export const ROLES = ['ui', 'scheduler', 'worker', 'workflow', 'agent'] as const;
export type Role = (typeof ROLES)[number];

/**
 * Flags per layout and role (each sets a config key: --disable-local-agent → agent.enabled=false,
 * --disable-executor-loop → server.executor.enabled=false, --disable-scheduler → schedule.enabled=false).
 *
 * The seed's scheduler keeps the executor loop (only --disable-local-agent). We disable it: the
 * loop lives where tasks are driven, and the scheduler only fires cron schedules; firing a
 * schedule inserts a session and an attempt that an executor loop picks up.
 *
 * In the worker layout the ui keeps its executor loop (never an agent): an attempt submitted
 * through a process without a loop waits for some other loop's next poll — measured on real
 * Digdag 0.10.5.1, submission → first task queued took 1–6 s (p50 4 s) through a loop-less ui and
 * 1 s through a process with a loop. The split layout keeps the seed's API-only ui.
 */
export const LAYOUT_FLAGS: Readonly<Record<Layout, Readonly<Partial<Record<Role, readonly string[]>>>>> = {
  worker: {
    ui: ['--disable-local-agent', '--disable-scheduler'],
    scheduler: ['--disable-local-agent', '--disable-executor-loop'],
    worker: ['--disable-scheduler'],
  },
  split: {
    ui: ['--disable-executor-loop', '--disable-local-agent', '--disable-scheduler'],
    workflow: ['--disable-local-agent', '--disable-scheduler'],
    scheduler: ['--disable-local-agent', '--disable-executor-loop'],
    agent: ['--disable-executor-loop', '--disable-scheduler'],
  },
};

/**
 * worker (default): the executor loop and the agent share a process. Digdag's executor loop is
 * woken early only by events in its own JVM (a task finishing on its own agent, an attempt
 * submitted through its own API) and otherwise polls every 5 s, so a loop alone in a "workflow"
 * process adds ~5 s to every workflow step. Workers are the unit that scales and fails over.
 *
 * split: the seed's four roles, each scaled on its own, for those who want them apart.
 */
export const LAYOUT_ROLES: Readonly<Record<Layout, readonly Role[]>> = {
  worker: Object.keys(LAYOUT_FLAGS.worker) as Role[],
  split: Object.keys(LAYOUT_FLAGS.split) as Role[],
};

export function roleFlags(layout: Layout, role: Role): readonly string[] {
  const flags = LAYOUT_FLAGS[layout][role];
  if (!flags) throw new Error(`layout ${layout} has no ${role} role`);
  return flags;
}

/** Task-running roles (the agent is on): the same in every layout that has them. */
export const runsTasks = (role: Role): boolean => role === 'worker' || role === 'agent';
export const runsExecutorLoop = (layout: Layout, role: Role): boolean => !roleFlags(layout, role).includes('--disable-executor-loop');

/** Roles behind the UI/API Service (label digdag-ha/api) and the Ingress: the ui. */
export const servesUsers = (role: Role): boolean => role === 'ui';

/**
 * Roles that hold the real UI/API password: every role that runs no task (ui, scheduler, and the
 * split layout's workflow role). Task-running processes execute users' sh> code as the same OS
 * user, which could read the password from their configuration; they still serve the API
 * (Digdag cannot turn it off) but are locked with a throw-away password. verify-ha submits
 * through the scheduler while the executor loops are stopped.
 */
export const holdsApiPassword = (role: Role): boolean => !runsTasks(role);

/**
 * The role whose first process answers the local endpoint (the first port): the UI, or with
 * UI_REPLICAS=0 (allowed locally) the first role that runs at all. It gets the real password.
 */
export const localApiRole = (config: Pick<Config, 'layout' | 'replicas'>): Role | undefined => layoutRoles(config).find((r) => config.replicas[r] > 0);

/** The roles of the configured layout, in start order (the first serves the UI endpoint). */
export const layoutRoles = (config: Pick<Config, 'layout'>): readonly Role[] => LAYOUT_ROLES[config.layout];

/** The role whose processes run tasks: what scales with the queue and what a kill test attacks. */
export const taskRole = (layout: Layout): Role => LAYOUT_ROLES[layout].find(runsTasks)!;

/** "a worker", "an agent": a role's name with its article, for sentences. */
export const aRole = (role: Role): string => `${/^[aeiou]/.test(role) ? 'an' : 'a'} ${role}`;

/** The roles that run an executor loop. */
export const executorRoles = (layout: Layout): Role[] => LAYOUT_ROLES[layout].filter((r) => runsExecutorLoop(layout, r));

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
