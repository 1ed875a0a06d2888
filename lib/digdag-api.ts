// A small client for the Digdag REST API (the same endpoints the digdag CLI client uses),
// for verify-ha and the benchmark, which need attempt, task and log details as data. An Endpoint
// may carry the Authorization header (lib/auth.ts) when Digdag's basic auth is on.
import { authHeaders, getJson, urlOf, type Endpoint } from './digdag.ts';
import { waitFor } from './processes.ts';

export interface Attempt {
  id: string;
  done: boolean;
  success: boolean;
  status?: string;
  sessionTime: string;
  createdAt: string;
  finishedAt?: string;
  workflow: { name: string; id: string };
}

export interface Task {
  id: string;
  fullName: string;
  state: string;
  startedAt?: string | null;
  updatedAt: string;
  retryAt?: string | null;
  parentId?: string | null;
  upstreams: string[];
}

export interface LogFile {
  fileName: string;
  taskName: string;
  agentId: string;
  fileSize: number;
}

export async function projectId(endpoint: Endpoint, name: string): Promise<string> {
  const res = await getJson<{ projects: { id: string }[] }>(endpoint, `/api/projects?name=${encodeURIComponent(name)}`);
  const id = res.projects[0]?.id;
  if (!id) throw new Error(`project ${name} is not on ${urlOf(endpoint)}; run push-workflow`);
  return id;
}

export async function workflowId(endpoint: Endpoint, project: string, workflow: string): Promise<string> {
  const pid = await projectId(endpoint, project);
  const res = await getJson<{ workflows: { id: string }[] }>(endpoint, `/api/projects/${pid}/workflows?name=${encodeURIComponent(workflow)}`);
  const id = res.workflows[0]?.id;
  if (!id) throw new Error(`workflow ${workflow} is not in project ${project}`);
  return id;
}

/** One authenticated call of Digdag's REST API with a JSON body (bounded); the response as is. */
export function request(endpoint: Endpoint, method: string, p: string, body?: unknown): Promise<Response> {
  return fetch(`${urlOf(endpoint)}${p}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...authHeaders(endpoint) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
}

async function send(endpoint: Endpoint, method: string, p: string, body?: unknown): Promise<unknown> {
  const res = await request(endpoint, method, p, body);
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${await res.text().catch(() => '')}`.trim());
  return res.json();
}

/** Starts a new session; sessionTime must be unique per workflow (Digdag dedups sessions on it). */
export async function startAttempt(endpoint: Endpoint, wfId: string, sessionTime: Date, params: Record<string, unknown> = {}): Promise<string> {
  const body = { workflowId: wfId, sessionTime: sessionTime.toISOString().replace(/\.\d+Z$/, 'Z'), params };
  return ((await send(endpoint, 'PUT', '/api/attempts', body)) as Attempt).id;
}

export const getAttempt = (endpoint: Endpoint, id: string) => getJson<Attempt>(endpoint, `/api/attempts/${id}`);

export async function listAttempts(endpoint: Endpoint, project: string, workflow: string): Promise<Attempt[]> {
  const q = `project=${encodeURIComponent(project)}&workflow=${encodeURIComponent(workflow)}&page_size=100`;
  return (await getJson<{ attempts: Attempt[] }>(endpoint, `/api/attempts?${q}`)).attempts;
}

export async function attemptTasks(endpoint: Endpoint, id: string): Promise<Task[]> {
  return (await getJson<{ tasks: Task[] }>(endpoint, `/api/attempts/${id}/tasks`)).tasks;
}

export async function logFiles(endpoint: Endpoint, attemptId: string): Promise<LogFile[]> {
  return (await getJson<{ files: LogFile[] }>(endpoint, `/api/logs/${attemptId}/files`)).files;
}

/** Polls until the attempt is done (bounded); returns the final attempt. */
export async function waitAttempt(endpoint: Endpoint, id: string, timeoutMs: number): Promise<Attempt> {
  let last: Attempt | undefined;
  const done = await waitFor(async () => {
    try {
      last = await getAttempt(endpoint, id);
    } catch {
      return false; // a restarting node may refuse a request; the deadline bounds this
    }
    return last.done;
  }, timeoutMs, 500);
  if (!done || !last) throw new Error(`attempt ${id} not done after ${timeoutMs / 1000}s (last status: ${last?.status ?? 'unknown'})`);
  return last;
}

export interface Schedule {
  id: string;
  workflow: { name: string; id: string };
  nextRunTime: string;
  nextScheduleTime: string;
}

export async function projectSchedules(endpoint: Endpoint, projId: string): Promise<Schedule[]> {
  return (await getJson<{ schedules: Schedule[] }>(endpoint, `/api/projects/${projId}/schedules`)).schedules;
}

/** Makes a schedule due now: its next session (aligned at or after `sessionAfter`) runs at once. */
export async function fireScheduleNow(endpoint: Endpoint, schedId: string, sessionAfter: Date): Promise<void> {
  await send(endpoint, 'POST', `/api/schedules/${schedId}/skip`, {
    nextTime: sessionAfter.toISOString().replace(/\.\d+Z$/, 'Z'),
    nextRunTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    dryRun: false,
  });
}

/** Deletes a project; its schedules go with it. */
export async function deleteProject(endpoint: Endpoint, projId: string): Promise<void> {
  await send(endpoint, 'DELETE', `/api/projects/${projId}`);
}
