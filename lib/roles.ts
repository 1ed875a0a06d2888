// The four Digdag roles of the HA layout and the flags that make each one.
import type { Config } from './config.ts';

export const ROLES = ['ui', 'workflow', 'scheduler', 'agent'] as const;
export type Role = (typeof ROLES)[number];

/**
 * Flags per role (each sets a config key: --disable-local-agent → agent.enabled=false,
 * --disable-executor-loop → server.executor.enabled=false, --disable-scheduler → schedule.enabled=false).
 *
 * The seed's scheduler keeps the executor loop (only --disable-local-agent). We disable it on
 * purpose: the workflow role owns the executor loop and the TTL enforcer, is required (>= 1
 * replica, validated in config) and scales on its own, while the scheduler only fires cron
 * schedules; a scheduler that also drove workflows would make "scale the scheduler" and
 * "scale execution" the same knob again. Firing a schedule only inserts a session and an
 * attempt; the workflow role's loop picks it up.
 */
export const ROLE_FLAGS: Readonly<Record<Role, readonly string[]>> = {
  ui: ['--disable-executor-loop', '--disable-local-agent', '--disable-scheduler'],
  workflow: ['--disable-local-agent', '--disable-scheduler'],
  scheduler: ['--disable-local-agent', '--disable-executor-loop'],
  agent: ['--disable-executor-loop', '--disable-scheduler'],
};

export interface Instance {
  role: Role;
  /** ui-1, agent-2, … — also the agent.id of agents, so logs name the process that ran a task. */
  name: string;
  index: number;
}

/** Every process of the layout, in start order. */
export function instances(config: Config): Instance[] {
  const out: Instance[] = [];
  for (const role of ROLES) {
    for (let i = 1; i <= config.replicas[role]; i++) out.push({ role, name: `${role}-${i}`, index: i });
  }
  return out;
}
