// The environment long-running processes (Digdag roles, port-forwards) start with. Digdag's sh>
// tasks inherit the agent's whole environment (SimpleCommandExecutor: a ProcessBuilder over the
// JVM's environment plus the task's params), so nothing secret may be in it.
import { containsSecret } from './secrets.ts';

/** Inherited variables that carry credentials or that Digdag would read as configuration. */
const DROP_NAMES = new Set([
  'DATABASE_URL', // may hold the DB password (DATABASE_URL=postgresql://user:pw@host/db)
  'PGPASSWORD',
  'DIGDAG_CONFIG', // Digdag loads this variable as properties (Command.loadSystemProperties)
]);
const DROP_PATTERN = /(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY)/i;

/**
 * The environment for a background process: this process's environment without secret-bearing
 * variables (by name, or because the value holds a registered secret), plus the explicit extra.
 * The extra is the caller's deliberate choice and is kept as given.
 */
export function backgroundEnv(inherited: NodeJS.ProcessEnv, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(inherited)) {
    if (v === undefined || DROP_NAMES.has(k) || DROP_PATTERN.test(k) || containsSecret(v)) continue;
    out[k] = v;
  }
  return { ...out, ...extra };
}
