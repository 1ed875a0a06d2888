// The one-screen cluster status (tasks/status.ts): what it holds, the database query behind the
// numbers, reading a process's Prometheus text, the API call for the last failed attempts, the
// report assembled once from what a target gathers (lib/local/status.ts, lib/kube/status.ts),
// and the rendering for a person.
import type { Config } from './config.ts';
import { getJson, type Endpoint, urlOf } from './digdag.ts';
import { REPLICA_VARIABLE } from './config/roles.ts';
import { taskRole, type Role } from './roles.ts';
import { desiredAgents, QUEUE_DEPTH_SQL } from './scaling.ts';

export interface ProcessStatus {
  /** ui-1, worker-2 (local) or the pod name. */
  name: string;
  role: string;
  /** running, down, or the pod's phase. */
  state: string;
  /** Local: the process id. */
  pid?: number;
  /** Answers /api/version (local), or the pod is Ready. */
  answers: boolean;
  metricsUrl: string;
  /** The /metrics endpoint answered this time (undefined: not reachable from here, e.g. a pod IP). */
  metricsAnswers?: boolean;
  /** Tasks this process's agent holds now (queued_task_locks), for task-running roles. */
  tasksRunning?: number;
  /** From its metrics: tasks its agent finished and tasks its executor enqueued since start. */
  tasksFinished?: number;
  tasksEnqueued?: number;
}

export interface FailedAttempt {
  id: string;
  project: string;
  workflow: string;
  sessionTime: string;
  finishedAt?: string;
  url: string;
}

/** A scaling step the autoscaler took: the newest scaling Event of the HPA or the ScaledObject
 * (or, once Kubernetes has dropped the Event after an hour, the HPA's lastScaleTime). */
export interface ScalingEvent {
  at: string;
  /** HorizontalPodAutoscaler/keda-hpa-digdag-autoscaler, ScaledObject/digdag-autoscaler. */
  object: string;
  /** SuccessfulRescale (the HPA), KEDAScaleTargetActivated / KEDAScaleTargetDeactivated (KEDA, to and from 0). */
  reason: string;
  message: string;
}

/** The autoscaler's view of the task-running role (workers; agents in the split layout). */
export interface AutoscalerStatus {
  /** keda (on the queue), hpa (on CPU) or none (a fixed count; the local target never autoscales). */
  mode: 'keda' | 'hpa' | 'none';
  role: Role;
  /** The objects that decide the count (kind/name), empty without an autoscaler. */
  objects: string[];
  min: number;
  max: number;
  /** The count the autoscaler asks for now (the HPA's desiredReplicas; 0 while KEDA holds the role at zero); without one, the configured count. */
  desired?: number;
  /** Pods (processes) of the role that exist now, and of them ready (answering). */
  current: number;
  ready: number;
  /** keda: the queue it scales on, by the query KEDA runs (lib/scaling.ts), and the count that
   * implies now: ceil(depth / threads per worker) within min..max. */
  queue?: { depth: number; threadsPerWorker: number; wants: number };
  /** The HPA's last reading of its metric against its target (keda: tasks per worker; hpa: % of the CPU request). */
  metric?: { name: string; current: number; target?: number; unit: 'tasks per pod' | '% CPU' };
  /** keda: a trigger is active (the queue is above the activation threshold). */
  active?: boolean;
  lastScale?: ScalingEvent;
  /** Why the count is fixed (the local target, AGENT_AUTOSCALING=none). */
  note?: string;
}

/** One member of the in-cluster database (a PostgreSQL pod; Patroni's when there are several). */
export interface DbMemberStatus {
  name: string;
  /** leader / replica (Patroni's label), or '-' for one plain PostgreSQL. */
  role: string;
  ready: boolean;
  /** The pod's phase, or its container's waiting reason (CrashLoopBackOff, ...). */
  state: string;
  restarts: number;
  /** Not ready: why, from the container's state and the last error line of its log. */
  reason?: string;
}

export interface StatusReport {
  target: string;
  layout: string;
  at: string;
  /** The UI/API URL the links point at. */
  endpoint: string;
  processes: ProcessStatus[];
  queueExporter?: { url: string; up?: boolean };
  queue: { waiting: number; running: number };
  /** Task slots of the task-running role: processes x agent.max-task-threads. */
  capacity: number;
  attempts: { running: number };
  /** Holders of task locks: agent.id, the process it maps to, tasks held. */
  agents: { agent: string; process?: string; tasks: number }[];
  failed: FailedAttempt[];
  autoscaler: AutoscalerStatus;
  /** The in-cluster database's members (Kubernetes); absent for an external database and locally. */
  database?: DbMemberStatus[];
  /** Parts that could not be read, with why (the rest of the report still holds). */
  problems: string[];
}

/** The database's numbers in one round trip, as JSON (Digdag 0.10.5.1 schema; see monitoring/queue-queries.yaml). */
export const STATUS_SQL = `SELECT json_build_object(
  'waiting', (SELECT count(*) FROM queued_task_locks WHERE lock_expire_time IS NULL),
  'running', (SELECT count(*) FROM queued_task_locks WHERE lock_expire_time IS NOT NULL),
  'queue_depth', (${QUEUE_DEPTH_SQL}),
  'attempts_running', (SELECT count(*) FROM session_attempts WHERE state_flags & 2 = 0),
  'agents', coalesce((SELECT json_agg(json_build_object('agent', agent, 'tasks', n) ORDER BY agent)
    FROM (SELECT lock_agent_id AS agent, count(*) AS n FROM queued_task_locks WHERE lock_expire_time IS NOT NULL GROUP BY lock_agent_id) a), '[]'::json)
)`.replace(/\s+/g, ' ');

export interface DbNumbers {
  waiting: number;
  running: number;
  /** What KEDA's query (lib/scaling.ts) returns now. */
  queue_depth?: number;
  attempts_running: number;
  agents: { agent: string; tasks: number }[];
}

export function parseDbNumbers(out: string): DbNumbers {
  const line = out.trim().split('\n').filter(Boolean).pop();
  if (!line) throw new Error('the status query returned nothing');
  return JSON.parse(line) as DbNumbers;
}

/** What a target gathers for the report; the rest is the same everywhere (statusReport). */
export interface StatusSource {
  /** The UI/API endpoint (authenticated): the failed attempts come from it, the links point at it. */
  endpoint: Endpoint;
  /** Runs the numbers' query against Digdag's database; `where` names it in a problem line. */
  query(sql: string): Promise<string>;
  where: string;
  /** Every role process or pod; tasksOf(name) is what its agent holds now. */
  processes(tasksOf: (name: string) => number): Promise<ProcessStatus[]>;
  queueExporter(): Promise<StatusReport['queueExporter']>;
  /** The process an agent id belongs to, when it is one of ours. */
  processOfAgent(agentId: string): string | undefined;
  /** What decides the task-running role's count (the queue is filled in from the database's
   * numbers); what cannot be read goes into problems. */
  autoscaler(processes: ProcessStatus[], problems: string[]): Promise<AutoscalerStatus>;
  /** The database's own members, where the target runs them. */
  database?(): Promise<DbMemberStatus[]>;
}

/** The autoscaler's view without an autoscaler: the configured count, the processes (pods) there are. */
export function fixedCount(config: Config, processes: ProcessStatus[], note: string): AutoscalerStatus {
  const role = taskRole(config.layout);
  const mine = processes.filter((p) => p.role === role && p.state !== 'Terminating' && p.state !== 'down');
  const n = config.replicas[role];
  return { mode: 'none', role, objects: [], min: n, max: n, desired: n, current: mine.length, ready: mine.filter((p) => p.answers).length, note };
}

/** The plain reason a count is fixed: the local target runs processes, not an autoscaler. */
export function fixedNote(config: Config): string {
  const role = taskRole(config.layout);
  const n = config.replicas[role];
  return config.target === 'local'
    ? `the local target does not autoscale: ${n} fixed ${role} processes (${REPLICA_VARIABLE[role]}=${n})`
    : `AGENT_AUTOSCALING=none: ${n} fixed ${role} pods (${REPLICA_VARIABLE[role]}=${n})`;
}

/** The report from a target's source: the database's numbers (a failed query is a problem line,
 * not an error), the processes, the exporter, the capacity and the last failed attempts. */
export async function statusReport(config: Config, src: StatusSource, failed: typeof failedAttemptsOrProblem, now: Date): Promise<StatusReport> {
  const problems: string[] = [];
  let numbers: DbNumbers = { waiting: 0, running: 0, attempts_running: 0, agents: [] };
  try {
    numbers = parseDbNumbers(await src.query(STATUS_SQL));
  } catch (err) {
    problems.push(`${src.where}: ${(err as Error).message.split('\n').slice(-1)[0]}`);
  }
  const tasksOf = (name: string) => numbers.agents.filter((a) => src.processOfAgent(a.agent) === name).reduce((n, a) => n + Number(a.tasks), 0);
  const processes = await src.processes(tasksOf);
  const queueExporter = await src.queueExporter();
  const autoscaler = await src.autoscaler(processes, problems);
  const database = await src.database?.();
  if (autoscaler.mode === 'keda' && numbers.queue_depth !== undefined) {
    const depth = Number(numbers.queue_depth);
    const threads = config.agent.maxTaskThreads;
    autoscaler.queue = { depth, threadsPerWorker: threads, wants: desiredAgents(depth, threads, autoscaler.min, autoscaler.max) };
  }
  return {
    target: config.target,
    layout: config.layout,
    at: now.toISOString(),
    endpoint: urlOf(src.endpoint),
    processes,
    queueExporter,
    queue: { waiting: Number(numbers.waiting), running: Number(numbers.running) },
    // Answering task-running processes (an autoscaler may have changed the count) x threads.
    capacity: processes.filter((p) => p.role === taskRole(config.layout) && p.answers).length * config.agent.maxTaskThreads,
    attempts: { running: Number(numbers.attempts_running) },
    agents: numbers.agents.map((a) => ({ agent: a.agent, process: src.processOfAgent(a.agent), tasks: Number(a.tasks) })),
    failed: await failed(src.endpoint, problems),
    autoscaler,
    ...(database ? { database } : {}),
    problems,
  };
}

/** The value of one sample in Prometheus text (labels as written, e.g. '{category="agent",method="opm_run"}'). */
export function sampleValue(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([A-Za-z_:][\w:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (m && m[1] === name && (m[2] ?? '') === labels) return Number(m[3]);
  }
  return undefined;
}

/** A process's counters worth a glance: tasks its agent finished, tasks its executor enqueued. */
export function processCounters(text: string): Pick<ProcessStatus, 'tasksFinished' | 'tasksEnqueued'> {
  return {
    tasksFinished: sampleValue(text, 'digdag_timer_calls_total', '{category="agent",method="opm_run"}'),
    tasksEnqueued: sampleValue(text, 'digdag_executor_enqueued_tasks_total'),
  };
}

/** GET a /metrics page; undefined when it does not answer. */
export async function scrape(url: string, timeoutMs = 3000): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

interface ApiAttempt {
  id: string;
  done: boolean;
  success: boolean;
  cancelRequested?: boolean;
  sessionTime: string;
  finishedAt?: string;
  project: { name: string };
  workflow: { name: string };
}

/** The newest failed (not cancelled) attempts among the last 100, through the authenticated API. */
export async function lastFailedAttempts(endpoint: Endpoint, uiBase: string, limit = 5): Promise<FailedAttempt[]> {
  const { attempts } = await getJson<{ attempts: ApiAttempt[] }>(endpoint, '/api/attempts?include_retried=true&page_size=100');
  return attempts
    .filter((a) => a.done && !a.success && !a.cancelRequested)
    .sort((a, b) => Number(b.id) - Number(a.id))
    .slice(0, limit)
    .map((a) => ({ id: a.id, project: a.project.name, workflow: a.workflow.name, sessionTime: a.sessionTime, finishedAt: a.finishedAt, url: `${uiBase.replace(/\/+$/, '')}/attempts/${a.id}` }));
}

/** How to reach the API and what the links point at, plus a reason when it is not reachable. */
export async function failedAttemptsOrProblem(endpoint: Endpoint, problems: string[]): Promise<FailedAttempt[]> {
  try {
    return await lastFailedAttempts(endpoint, urlOf(endpoint));
  } catch (err) {
    problems.push(`failed attempts: the API at ${urlOf(endpoint)} did not answer (${(err as Error).message.split('\n')[0]})`);
    return [];
  }
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const num = (n: number | undefined) => (n === undefined ? '-' : String(Math.round(n)));
const yesNo = (b: boolean | undefined) => (b === undefined ? '?' : b ? 'ok' : 'NO');

/** The screen: processes, queue, attempts, agents, failures — plain text, no colour codes. */
export function renderStatus(r: StatusReport): string {
  const out: string[] = [];
  const down = r.processes.filter((p) => !p.answers).length;
  out.push(`digdag-ha status · ${r.target} · layout ${r.layout} · ${r.at}`);
  out.push(`UI/API ${r.endpoint}`);
  out.push('');
  const name = Math.max(16, ...r.processes.map((p) => p.name.length + 1));
  const cols = [name, 10, 12, 5, 8, 10, 9, 9];
  const row = (c: string[]) => c.map((v, i) => pad(v, cols[i]!)).join(' ').trimEnd();
  out.push(row(['PROCESS', 'ROLE', 'STATE', 'API', 'METRICS', 'TASKS NOW', 'FINISHED', 'ENQUEUED']));
  for (const p of r.processes) {
    out.push(row([p.name, p.role, p.state, yesNo(p.answers), yesNo(p.metricsAnswers), num(p.tasksRunning), num(p.tasksFinished), num(p.tasksEnqueued)]));
  }
  if (r.queueExporter) out.push(row(['queue-exporter', '-', r.queueExporter.up ? 'running' : 'down', '-', yesNo(r.queueExporter.up)]));
  out.push('  TASKS NOW: locks held in queued_task_locks; FINISHED / ENQUEUED: its agent\'s / executor\'s counters since start');
  out.push('');
  const free = Math.max(0, r.capacity - r.queue.running);
  const verdict = r.queue.waiting > 0 && free === 0 ? 'SATURATED: tasks wait and every agent thread is busy' : r.queue.waiting > 0 ? 'tasks waiting for the next agent round' : 'keeping up';
  out.push(`QUEUE     waiting ${r.queue.waiting}   running ${r.queue.running}   free task threads ${free} of ${r.capacity}   → ${verdict}`);
  out.push(`ATTEMPTS  running ${r.attempts.running}`);
  out.push(...renderAutoscaler(r.autoscaler));
  out.push(...renderDatabase(r.database));
  out.push(`AGENTS    ${r.agents.length ? r.agents.map((a) => `${a.process ?? a.agent} ${a.tasks}`).join('   ') : 'no task held'}`);
  out.push('');
  if (r.failed.length) {
    out.push('LAST FAILED ATTEMPTS');
    for (const f of r.failed) out.push(`  #${f.id}  ${f.project}/${f.workflow}  session ${f.sessionTime}  finished ${f.finishedAt ?? '-'}  ${f.url}`);
  } else {
    out.push('LAST FAILED ATTEMPTS  none among the last 100');
  }
  if (down) out.push('', `WARNING: ${down} of ${r.processes.length} processes do not answer`);
  const sick = (r.database ?? []).filter((m) => !m.ready);
  if (sick.length) out.push(`WARNING: database member${sick.length > 1 ? 's' : ''} not ready: ${sick.map((m) => `${m.name} (${m.reason ?? m.state})`).join('; ')}`);
  if (r.database?.length && r.database.length > 1 && r.database.filter((m) => m.role === 'leader').length !== 1) out.push(`WARNING: the database has ${r.database.filter((m) => m.role === 'leader').length} leaders (expected 1): writes wait until Patroni elects one`);
  for (const p of r.problems) out.push(`WARNING: ${p}`);
  return out.join('\n') + '\n';
}

/** The DATABASE lines: each member with its role and readiness, the reason when it is not ready. */
export function renderDatabase(members: DbMemberStatus[] | undefined): string[] {
  if (!members) return [];
  if (!members.length) return ['DATABASE  no PostgreSQL pod found'];
  const kind = members.length > 1 ? `Patroni, ${members.length} members` : 'one PostgreSQL (not highly available)';
  return [
    `DATABASE  ${kind}`,
    ...members.map((m) => `  ${pad(m.name, 22)} ${pad(m.role, 8)} ${pad(m.ready ? 'ready' : 'NOT READY', 10)}${m.restarts ? ` restarts ${m.restarts}` : ''}${m.ready ? '' : ` — ${m.reason ?? m.state}`}`.trimEnd()),
  ];
}

/** The AUTOSCALER lines: desired against current, the queue it scales on, the last scaling step. */
export function renderAutoscaler(a: AutoscalerStatus): string[] {
  const pods = `${a.role}s`;
  if (a.mode === 'none') return [`AUTOSCALER none — ${a.note ?? 'fixed count'}; ${a.current} up, ${a.ready} answering`];
  const head = `AUTOSCALER ${a.mode}   ${pods} desired ${a.desired ?? '?'}   current ${a.current}   ready ${a.ready}   min ${a.min} max ${a.max}${a.active === undefined ? '' : a.active ? '   active' : '   idle'}`;
  const out = [head];
  const reading = a.metric ? `HPA last read ${fmt(a.metric.current)}${a.metric.unit === '% CPU' ? '% CPU' : ' per pod'}${a.metric.target === undefined ? '' : ` (target ${fmt(a.metric.target)})`}` : '';
  if (a.queue) out.push(`  scales on the queue ${a.queue.depth} (waiting + running, KEDA's query) ÷ ${a.queue.threadsPerWorker} threads per ${a.role} → wants ${a.queue.wants}${reading ? `; ${reading}` : ''}`);
  else if (reading) out.push(`  scales on ${a.metric!.name}: ${reading}`);
  out.push(a.lastScale
    ? `  last scaling ${a.lastScale.at}  ${a.lastScale.object} ${a.lastScale.reason}: ${shortScalingMessage(a.lastScale.message)}`
    : '  last scaling none recorded (Kubernetes keeps Events for an hour)');
  out.push(`  objects ${a.objects.join(' → ') || 'none found'}`);
  return out;
}

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2).replace(/0+$/, ''));

/** The HPA's rescale message names its metric with a whole LabelSelector dump: keep the metric's name. */
export const shortScalingMessage = (m: string): string => m.replace(/\(&LabelSelector\{.*\}\)/, '');
