// status on Kubernetes: every Digdag pod (role, phase, Ready, its metrics URL on the pod IP), the
// queue exporter pod when MONITORING=prometheus-operator, the database's numbers through
// `kubectl exec psql` on digdag-postgres-0 (or DATABASE_URL), and the last failed attempts through
// the authenticated API endpoint (the port-forward, or the Ingress verify-ha found); the
// autoscaler's view from its objects (lib/kube/autoscaler-status.ts).
import { authenticatedEndpoint } from '../auth.ts';
import { POD_METRICS } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { runsTasks, type Role } from '../roles.ts';
import { failedAttemptsOrProblem, statusReport, type DbMemberStatus, type StatusReport } from '../status.ts';
import { kubeAutoscaler } from './autoscaler-status.ts';
import { dbQuery } from './db-query.ts';
import { kubectl, memberRole, requireCluster } from './kubectl.ts';
import { forwardedUrl } from './port-forward.ts';

interface ContainerStatus {
  name: string;
  restartCount: number;
  state?: { waiting?: { reason?: string; message?: string }; terminated?: { reason?: string; exitCode?: number } };
  lastState?: { terminated?: { reason?: string; exitCode?: number; message?: string } };
}

export interface Pod {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: ContainerStatus[] };
}

/** Lines of a PostgreSQL / Patroni log that say why a member does not come up. */
const FAILURE_LINE = /FATAL|PANIC|ERROR|No space left|password authentication failed|could not|permission denied|failed/i;

/** Why a database member is not ready: its container's state, and the last line of its log that
 * says what failed (a full disk, a wrong password in the Secret, a replica that cannot follow). */
export function memberReason(pod: Pod, log: string): string {
  const c = pod.status.containerStatuses?.find((x) => x.name === 'postgres') ?? pod.status.containerStatuses?.[0];
  const parts: string[] = [];
  if (c?.state?.waiting?.reason) parts.push(c.state.waiting.reason);
  else if (c?.state?.terminated) parts.push(`${c.state.terminated.reason ?? 'terminated'} (exit ${c.state.terminated.exitCode ?? '?'})`);
  else parts.push(`${pod.status.phase ?? 'Unknown'}, not ready`);
  if (c?.lastState?.terminated && !c.state?.terminated) parts.push(`last exit ${c.lastState.terminated.exitCode ?? '?'} (${c.lastState.terminated.reason ?? '?'})`);
  const line = log.split('\n').map((l) => l.trim()).filter((l) => FAILURE_LINE.test(l)).pop();
  return line ? `${parts.join(', ')}: ${line.length > 240 ? `${line.slice(0, 240)}…` : line}` : parts.join(', ');
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
    ...(config.db.externalUrl ? {} : { database: () => members(ctx, pods.filter((p) => component(p) === 'postgres' && !p.metadata.deletionTimestamp), ready) }),
  }, failed, now);
}

/** The database's pods as members; a member that is not ready is asked for its log (the previous
 * container's when it restarted), so status says why. */
async function members(ctx: Ctx, pods: Pod[], ready: (p: Pod) => boolean): Promise<DbMemberStatus[]> {
  const out: DbMemberStatus[] = [];
  for (const p of pods.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
    const c = p.status.containerStatuses?.find((x) => x.name === 'postgres');
    const label = p.metadata.labels?.role ?? '';
    const m: DbMemberStatus = {
      name: p.metadata.name,
      role: pods.length === 1 && !label ? '-' : memberRole(label),
      ready: ready(p),
      state: c?.state?.waiting?.reason ?? p.status.phase ?? 'Unknown',
      restarts: c?.restartCount ?? 0,
    };
    if (!m.ready) {
      const waiting = !!c?.state?.waiting && (c?.restartCount ?? 0) > 0;
      const log = await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', p.metadata.name, '-c', 'postgres', '--tail=40', ...(waiting ? ['--previous'] : [])), quiet: true, nothrow: true });
      m.reason = memberReason(p, log.stdout);
    }
    out.push(m);
  }
  return out;
}
