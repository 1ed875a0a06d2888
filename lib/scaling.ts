// Agent autoscaling on Digdag's own queue: the query KEDA runs against the metadata DB and
// the replica count it implies. Tested against a real Digdag database under load.

/**
 * Tasks waiting for an agent plus tasks an agent is running: every row of queued_task_locks
 * (lock_expire_time IS NULL = waiting, otherwise held by lock_agent_id).
 */
export const QUEUE_DEPTH_SQL = 'SELECT count(*) FROM queued_task_locks';

/** What KEDA's postgresql trigger computes with targetQueryValue = agent.max-task-threads. */
export function desiredAgents(queueDepth: number, maxTaskThreads: number, min = 1, max = Infinity): number {
  return Math.min(max, Math.max(min, Math.ceil(queueDepth / maxTaskThreads)));
}
