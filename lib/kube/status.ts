// status on Kubernetes: every Digdag pod (role, phase, Ready, its metrics URL on the pod IP), the
// queue exporter pod when MONITORING=prometheus-operator, the database's numbers through
// `kubectl exec psql` on digdag-postgres-0 (or DATABASE_URL), and the last failed attempts through
// the authenticated API endpoint (the port-forward, or the Ingress verify-ha found); the
// autoscaler's view from its objects (lib/kube/autoscaler-status.ts).
import { authenticatedEndpoint } from '../auth.ts';
import { POD_METRICS } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { runsTasks, type Role } from '../roles.ts';
import { failedAttemptsOrProblem, statusReport, type StatusReport } from '../status.ts';
import { kubeAutoscaler } from './autoscaler-status.ts';
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
  await requireCluster(ctx);
  const res = await ctx.runner.run({ argv: kubectl(config, 'get', 'pods', '-l', 'app.kubernetes.io/name=digdag', '-o', 'json'), quiet: true });
  const pods = (JSON.parse(res.stdout || '{"items":[]}') as { items: Pod[] }).items;
  const ready = (p: Pod) => !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  const component = (p: Pod) => p.metadata.labels?.['app.kubernetes.io/component'] ?? '?';
  const digdagPods = pods.filter((p) => !['postgres', 'queue-exporter', 'migrate'].includes(component(p)) && p.metadata.labels?.['job-name'] === undefined);
  const qe = pods.find((p) => component(p) === 'queue-exporter');
  return statusReport(config, {
    endpoint: authenticatedEndpoint(config, forwardedUrl(ctx)),
    query: dbQuery(ctx),
    where: 'database',
    processes: async (tasksOf) => digdagPods
      .sort((a, b) => component(a).localeCompare(component(b)) || a.metadata.name.localeCompare(b.metadata.name))
      .map((p) => ({
        name: p.metadata.name,
        role: component(p),
        state: p.metadata.deletionTimestamp ? 'Terminating' : (p.status.phase ?? 'Unknown'),
        answers: ready(p),
        // The pod IP is reachable from inside the cluster (Prometheus), not necessarily from here.
        metricsUrl: `http://${p.status.podIP ?? '<no ip>'}:${POD_METRICS.port}/metrics`,
        tasksRunning: runsTasks(component(p) as Role) ? tasksOf(p.metadata.name) : undefined,
      })),
    queueExporter: async () => (qe ? { url: `http://${qe.status.podIP ?? '<no ip>'}:${QUEUE_EXPORTER_PORT}/metrics`, up: ready(qe) } : undefined),
    // Digdag's default agent.id in a pod is pid@pod-name.
    processOfAgent: (agent) => (agent.includes('@') ? agent.slice(agent.indexOf('@') + 1) : undefined),
    autoscaler: (processes, problems) => kubeAutoscaler(ctx, processes, problems),
  }, failed, now);
}
