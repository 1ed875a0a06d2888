// Every task lock an agent takes, recorded by the database itself while a scaling proof runs: a
// trigger on Digdag's queued_task_locks writes one row per acquisition (the lock id, the agent,
// the row's retry_count) into a table of its own. Digdag takes a lock only by setting
// lock_agent_id on the row (lockSharedAgentTasks / lock_shared_tasks), and a task runs again only
// after its lock expired (expireLocks clears the agent and counts a retry) and an agent took it
// again: so a lock id logged twice is a task that ran twice, and nothing a sampler's timing could
// miss. Installed before the burst, read after it, dropped in the proof's finally (and replaced
// by the next install, should a killed run have left it). The function runs as its owner (the
// database user of the query), so Digdag's own user needs no right on the log.

const TABLE = 'digdag_ha_lock_log';

export const LOCK_LOG_INSTALL_SQL = `DROP TRIGGER IF EXISTS ${TABLE} ON queued_task_locks;
DROP TABLE IF EXISTS ${TABLE};
CREATE TABLE ${TABLE} (lock_id bigint NOT NULL, agent text NOT NULL, retry_count int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION ${TABLE}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO ${TABLE} (lock_id, agent, retry_count) VALUES (NEW.id, NEW.lock_agent_id, NEW.retry_count);
  RETURN NULL;
END $$;
CREATE TRIGGER ${TABLE} AFTER UPDATE ON queued_task_locks FOR EACH ROW
  WHEN (NEW.lock_agent_id IS NOT NULL AND NEW.lock_agent_id IS DISTINCT FROM OLD.lock_agent_id)
  EXECUTE FUNCTION ${TABLE}();`;

export const LOCK_LOG_READ_SQL = `SELECT lock_id, string_agg(agent, ',' ORDER BY at), max(retry_count) FROM ${TABLE} GROUP BY lock_id ORDER BY lock_id`;

export const LOCK_LOG_DROP_SQL = `DROP TRIGGER IF EXISTS ${TABLE} ON queued_task_locks; DROP FUNCTION IF EXISTS ${TABLE}(); DROP TABLE IF EXISTS ${TABLE};`;

/** What the log shows: locks taken, and those taken more than once or with a retry counted. */
export interface LockLog {
  /** Distinct task locks taken while the log ran. */
  locks: number;
  /** "id: agent, agent" for each lock taken more than once. */
  reruns: string[];
  /** Locks taken with retry_count above 0 (taken again after their lock expired). */
  retried: string[];
  /** The agents that took each lock, in order. */
  agentsOf: Map<string, string[]>;
}

/** psql -At output of LOCK_LOG_READ_SQL. */
export function parseLockLog(out: string): LockLog {
  const agentsOf = new Map<string, string[]>();
  const retried: string[] = [];
  for (const row of out.split('\n').filter(Boolean)) {
    const [id, agents = '', retries = '0'] = row.split('|');
    agentsOf.set(id!, agents.split(',').filter(Boolean));
    if (Number(retries) > 0) retried.push(id!);
  }
  const reruns = [...agentsOf].filter(([, a]) => a.length > 1).map(([id, a]) => `${id}: ${a.join(', ')}`);
  return { locks: agentsOf.size, reruns, retried, agentsOf };
}

/** Installs the log through `query` (psql -At against Digdag's database); read it, then drop it. */
export async function startLockLog(query: (sql: string) => Promise<string>): Promise<{ read(): Promise<LockLog>; drop(): Promise<void> }> {
  await query(LOCK_LOG_INSTALL_SQL);
  return {
    read: async () => parseLockLog(await query(LOCK_LOG_READ_SQL)),
    drop: async () => {
      await query(LOCK_LOG_DROP_SQL);
    },
  };
}
