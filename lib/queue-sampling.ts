// A burst watched as it runs: the task-running role's instances and Digdag's lock table
// (queued_task_locks), sampled over and over. From the samples: the queue and the workers over
// time (the bench's time-series chart, where a reader sees the autoscaler act), the scale-out's
// steps (queue above the threshold → pods asked for → ready → first task on a new worker), and
// re-runs counted from Digdag's own records (a task's lock taken by a second agent, or retried).
// Shared by the KEDA test and the bench's cluster mode; a target supplies the two reads
// (lib/kube/queue-source.ts).

/** One row of queued_task_locks: a task waiting (no agent) or held by an agent. */
export interface TaskLock {
  id: string;
  /** The agent holding it ('' while it waits), and the instance it runs in ('' while it waits). */
  agent: string;
  instance: string;
  retries: number;
}

/** One instance of the task-running role (a worker or agent pod). */
export interface WorkerInstance {
  name: string;
  ready: boolean;
  /** Being removed (a pod with a deletion timestamp): it finishes its tasks but takes no new ones. */
  terminating: boolean;
}

/** What a target offers the sampling. */
export interface QueueSource {
  /** The task-running role's instances now, terminating ones included. */
  workers(): Promise<WorkerInstance[]>;
  /** A query against Digdag's database; psql -At output. */
  query(sql: string): Promise<string>;
  /** The instance an agent id in queued_task_locks belongs to. */
  instanceOfAgent(agentId: string): string;
}

export interface QueueSample {
  /** Epoch milliseconds when the sample was complete. */
  at: number;
  workers: WorkerInstance[];
  /** Instances not being removed. */
  replicas: number;
  /** Of those, Ready. */
  ready: number;
  terminating: number;
  /** Tasks queued for an agent, and tasks an agent runs (KEDA's query counts both). */
  waiting: number;
  running: number;
  locks: TaskLock[];
}

export const TASK_LOCKS_SQL = "SELECT id, coalesce(lock_agent_id, ''), retry_count FROM queued_task_locks";

/** psql -At output of TASK_LOCKS_SQL; `instanceOfAgent` names the instance an agent id runs in. */
export function parseLocks(out: string, instanceOfAgent: (agentId: string) => string): TaskLock[] {
  return out
    .split('\n')
    .filter(Boolean)
    .map((r) => {
      const [id, agent = '', retries] = r.split('|');
      return { id: id!, agent, instance: agent ? instanceOfAgent(agent) : '', retries: Number(retries ?? 0) };
    });
}

const firstLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;

/** The role's instances and the lock table, now; throws when either cannot be read. */
export async function sampleQueue(src: QueueSource): Promise<QueueSample> {
  const [workers, rows] = await Promise.all([src.workers(), src.query(TASK_LOCKS_SQL)]);
  const locks = parseLocks(rows, (a) => src.instanceOfAgent(a));
  const live = workers.filter((w) => !w.terminating);
  return {
    at: Date.now(),
    workers,
    replicas: live.length,
    ready: live.filter((w) => w.ready).length,
    terminating: workers.length - live.length,
    waiting: locks.filter((l) => !l.agent).length,
    running: locks.filter((l) => l.agent).length,
    locks,
  };
}

export interface Sampling {
  /** The samples so far (the same array grows while sampling runs). */
  readonly samples: QueueSample[];
  /** Why samples could not be taken (left out rather than read as an empty queue or no workers). */
  readonly failures: string[];
  /** Ends the loop after the sample in progress; the samples taken. */
  stop(): Promise<QueueSample[]>;
}

/**
 * Samples until stop(): back to back, or at most one sample per `everyMs` (a pace, so that a
 * cheap source does not load the database it measures). A sample that cannot be taken (the API
 * server or the database busy for a moment) is left out, not read as 0, and its reason kept.
 */
export function startSampling(src: QueueSource, opts: { everyMs?: number; onSample?: (s: QueueSample) => void } = {}): Sampling {
  const samples: QueueSample[] = [];
  const failures: string[] = [];
  let running = true;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    while (running) {
      const t0 = Date.now();
      let pace = opts.everyMs ?? 0;
      try {
        const s = await sampleQueue(src);
        samples.push(s);
        opts.onSample?.(s);
      } catch (e) {
        failures.push(firstLine(e));
        pace = Math.max(pace, 1000); // not a hot loop against a source that is down
      }
      const rest = pace - (Date.now() - t0);
      if (running && rest > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, rest);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    }
  })();
  return {
    samples,
    failures,
    stop: async () => {
      running = false;
      wake?.();
      await loop;
      return samples;
    },
  };
}

export interface BurstFigures {
  samples: number;
  /** Most instances at once (not counting ones being removed). */
  peak: number;
  /** Distinct task locks seen held by an agent (how much the sampling saw). */
  locksSeen: number;
  /** Tasks whose lock was held by more than one agent: "id: agent, agent". */
  reruns: string[];
  /** Distinct tasks seen with retry_count > 0. */
  retried: number;
  /** Milliseconds after the burst was submitted, when seen: the queue above the threshold; more
   * instances than before the burst (the autoscaler asked, pods created); one of them Ready; the
   * first task on a new instance. */
  overThresholdMs?: number;
  scaledOutMs?: number;
  newReadyMs?: number;
  newWorkerTaskMs?: number;
  /** Scale-out reaction: queue above the threshold → first task on a new instance. */
  reactionMs?: number;
}

/**
 * What the samples of one burst show. `burstAt`: when the first attempt was submitted;
 * `threshold`: the queue depth (waiting + running) above which the initial instances are short of
 * threads (min workers × threads per worker). The instances before the burst are those of the last
 * sample taken before it (or the first sample).
 */
export function burstFigures(samples: readonly QueueSample[], burstAt: number, threshold: number): BurstFigures {
  const before = [...samples].reverse().find((s) => s.at < burstAt) ?? samples[0];
  const initial = new Set((before?.workers ?? []).filter((w) => !w.terminating).map((w) => w.name));
  const during = samples.filter((s) => s.at >= burstAt);
  const isNew = (w: WorkerInstance) => !w.terminating && !initial.has(w.name);
  const after = (pred: (s: QueueSample) => boolean) => {
    const s = during.find(pred);
    return s ? s.at - burstAt : undefined;
  };
  const agentsOf = new Map<string, Set<string>>();
  const retried = new Set<string>();
  for (const s of samples) {
    for (const l of s.locks) {
      if (l.agent) agentsOf.set(l.id, (agentsOf.get(l.id) ?? new Set()).add(l.agent));
      if (l.retries > 0) retried.add(l.id);
    }
  }
  const f: BurstFigures = {
    samples: samples.length,
    peak: Math.max(0, ...samples.map((s) => s.replicas)),
    locksSeen: agentsOf.size,
    reruns: [...agentsOf].filter(([, a]) => a.size > 1).map(([id, a]) => `${id}: ${[...a].join(', ')}`),
    retried: retried.size,
    overThresholdMs: after((s) => s.waiting + s.running > threshold),
    scaledOutMs: after((s) => s.workers.some(isNew)),
    newReadyMs: after((s) => s.workers.some((w) => isNew(w) && w.ready)),
    newWorkerTaskMs: undefined,
    reactionMs: undefined,
  };
  // A new instance is known by its pod's name in the agent id (pid@pod), not by samples of the pods
  // (a task may start and end between two samples of the pod list, never of its own lock).
  const newAgentSample = during.find((s) => s.locks.some((l) => l.instance && !initial.has(l.instance)));
  f.newWorkerTaskMs = newAgentSample ? newAgentSample.at - burstAt : undefined;
  if (f.newWorkerTaskMs !== undefined && f.overThresholdMs !== undefined) f.reactionMs = f.newWorkerTaskMs - f.overThresholdMs;
  return f;
}
