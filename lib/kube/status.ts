// status on Kubernetes: every Digdag pod (role, phase, Ready, its metrics URL on the pod IP), the
// queue exporter pod when MONITORING=prometheus-operator, the database's numbers through
// `kubectl exec psql` on digdag-postgres-0 (or DATABASE_URL), and the last failed attempts through
// the authenticated API endpoint (the port-forward, or the Ingress verify-ha found).
import { authenticatedEndpoint } from '../auth.ts';
import { POD_METRICS } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { runsTasks, taskRole, type Role } from '../roles.ts';
import { failedAttemptsOrProblem, parseDbNumbers, STATUS_SQL, type ProcessStatus, type StatusReport } from '../status.ts';
import { dbQuery } from './db-query.ts';
import { kubectl, requireCluster } from './kubectl.ts';
import { forwardedUrl } from './port-forward.ts';

interface Pod {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

const QUEUE_EXPORTER_PORT = 9187;

export async function kubeStatus(ctx: Ctx, failed = failedAttemptsOrProblem, now = new Date()): Promise<StatusReport> {
  const { config } = ctx;
  const problems: string[] = [];
  await requireCluster(ctx);
  const res = await ctx.runner.run({ argv: kubectl(config, 'get', 'pods', '-l', 'app.kubernetes.io/name=digdag', '-o', 'json'), quiet: true });
  const pods = (JSON.parse(res.stdout || '{"items":[]}') as { items: Pod[] }).items;
  let numbers = { waiting: 0, running: 0, attempts_running: 0, agents: [] as { agent: string; tasks: number }[] };
  try {
    numbers = parseDbNumbers(await dbQuery(ctx)(STATUS_SQL));
  } catch (err) {
    problems.push(`database: ${(err as Error).message.split('\n').slice(-1)[0]}`);
  }
  // Digdag's default agent.id in a pod is pid@pod-name.
  const tasksOf = (pod: string) => numbers.agents.filter((a) => a.agent.slice(a.agent.indexOf('@') + 1) === pod).reduce((n, a) => n + Number(a.tasks), 0);
  const ready = (p: Pod) => !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  const component = (p: Pod) => p.metadata.labels?.['app.kubernetes.io/component'] ?? '?';
  const digdagPods = pods.filter((p) => !['postgres', 'queue-exporter', 'migrate'].includes(component(p)) && p.metadata.labels?.['job-name'] === undefined);
  const processes: ProcessStatus[] = digdagPods
    .sort((a, b) => component(a).localeCompare(component(b)) || a.metadata.name.localeCompare(b.metadata.name))
    .map((p) => ({
      name: p.metadata.name,
      role: component(p),
      state: p.metadata.deletionTimestamp ? 'Terminating' : (p.status.phase ?? 'Unknown'),
      answers: ready(p),
      // The pod IP is reachable from inside the cluster (Prometheus), not necessarily from here.
      metricsUrl: `http://${p.status.podIP ?? '<no ip>'}:${POD_METRICS.port}/metrics`,
      tasksRunning: runsTasks(component(p) as Role) ? tasksOf(p.metadata.name) : undefined,
    }));
  const qe = pods.find((p) => component(p) === 'queue-exporter');
  const endpoint = authenticatedEndpoint(config, forwardedUrl(ctx));
  return {
    target: config.target,
    layout: config.layout,
    at: now.toISOString(),
    endpoint: endpoint.url,
    processes,
    queueExporter: qe ? { url: `http://${qe.status.podIP ?? '<no ip>'}:${QUEUE_EXPORTER_PORT}/metrics`, up: ready(qe) } : undefined,
    queue: { waiting: Number(numbers.waiting), running: Number(numbers.running) },
    // Ready task-running pods (an autoscaler may have changed the count) x threads.
    capacity: digdagPods.filter((p) => component(p) === taskRole(config.layout) && ready(p)).length * config.agent.maxTaskThreads,
    attempts: { running: Number(numbers.attempts_running) },
    agents: numbers.agents.map((a) => ({ agent: a.agent, process: a.agent.includes('@') ? a.agent.slice(a.agent.indexOf('@') + 1) : undefined, tasks: Number(a.tasks) })),
    failed: await failed(endpoint, problems),
    problems,
  };
}
