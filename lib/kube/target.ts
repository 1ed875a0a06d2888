// The Kubernetes target (minikube, gke, the own cluster): Digdag's roles as Deployments' pods,
// every task's implementation on a cluster, and the primitives verify-ha, status and down use
// (lib/target.ts): pods as instances, a port-forward to one pod as its endpoint, psql through
// `kubectl exec`, pod deletion as stop and kill, scale and rollout as restore.
import { authenticatedEndpoint } from '../auth.ts';
import { answersVersion } from '../digdag.ts';
import type { Ctx, Impl, TaskName } from '../pipeline.ts';
import { isAlive, listProcesses, waitFor } from '../processes.ts';
import { pushWorkflowOn } from '../push-workflow.ts';
import { holdsApiPassword, layoutRoles, taskRole, type Role } from '../roles.ts';
import type { HaDatabase, Target, TargetOps } from '../target.ts';
import type { ImageHostFor } from '../image-host.ts';
import type { Check } from '../verify.ts';
import { verifyHaOn } from '../verify-ha.ts';
import { apply } from './apply.ts';
import { buildImageWith } from './build-image.ts';
import { createSecret } from './create-secret.ts';
import { dbQuery } from './db-query.ts';
import { kubeDown } from './down.ts';
import { ingress } from './ingress.ts';
import { probeIngress } from './ingress-probe.ts';
import { initDb } from './init-db.ts';
import { dbPod, kubectl, memberRole, requireCluster, rollout } from './kubectl.ts';
import { forwardedUrl, PORT_FORWARD, portForward, startPortForward, UI_SERVICE } from './port-forward.ts';
import { startPostgres } from './start-postgres.ts';
import { renderManifests } from './render.ts';
import { kubeStatus } from './status.ts';
import { AUTOSCALER_NAME } from './autoscaler-status.ts';

export interface Pod {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { containers: { args?: string[] }[] };
  status: { phase?: string; conditions?: { type: string; status: string }[] };
}

/** A role's pods, those being deleted included. */
export async function rolePods(ctx: Ctx, role: Role): Promise<Pod[]> {
  const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', `app.kubernetes.io/component=${role}`, '-o', 'json'), quiet: true });
  return (JSON.parse(res.stdout || '{"items":[]}') as { items: Pod[] }).items;
}

/** A role's pods, without those being deleted. */
const podsOf = async (ctx: Ctx, role: Role): Promise<Pod[]> => (await rolePods(ctx, role)).filter((p) => !p.metadata.deletionTimestamp);

export const isReady = (p: Pod) => !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/** Digdag's default agent id is pid@pod-name. */
export const podOfAgent = (agentId: string) => agentId.slice(agentId.indexOf('@') + 1);

const scale = (ctx: Ctx, role: Role, replicas: number) =>
  ctx.runner.run({ argv: kubectl(ctx.config, 'scale', `deployment/digdag-${role}`, `--replicas=${replicas}`), mutates: true });

/** KEDA brings an autoscaled role back to its minimum (and an HPA does nothing at 0): verify-ha
 * stops such a role by pausing its ScaledObject at 0 replicas, and restore resumes it. */
const PAUSED_REPLICAS = 'autoscaling.keda.sh/paused-replicas';
const kedaScales = (ctx: Ctx, role: Role) => ctx.config.k8s.autoscaling === 'keda' && role === taskRole(ctx.config.layout);
const pauseKeda = (ctx: Ctx, paused: boolean) =>
  ctx.runner.run({ argv: kubectl(ctx.config, 'annotate', 'scaledobject', AUTOSCALER_NAME, '--overwrite', paused ? `${PAUSED_REPLICAS}=0` : `${PAUSED_REPLICAS}-`), mutates: true });

const deletePod = (ctx: Ctx, name: string, force: boolean) =>
  ctx.runner.run({ argv: kubectl(ctx.config, 'delete', 'pod', name, ...(force ? ['--grace-period=0', '--force'] : []), '--wait=false'), mutates: true });

interface DbPod extends Pod {
  metadata: Pod['metadata'] & { labels?: Record<string, string> };
}

/** Patroni's members: the PostgreSQL pods with their role label (lib/kube/kubectl.ts LEADER_SELECTOR). */
const haDatabase: HaDatabase = {
  members: async (ctx) => {
    const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', 'app.kubernetes.io/component=postgres', '-o', 'json'), quiet: true });
    return ((JSON.parse(res.stdout || '{"items":[]}') as { items: DbPod[] }).items)
      .filter((p) => !p.metadata.deletionTimestamp)
      .map((p) => {
        return { name: p.metadata.name, role: memberRole(p.metadata.labels?.role), ready: isReady(p) };
      });
  },
  killLeader: async (ctx, how) => {
    const leader = await dbPod(ctx);
    if (how === 'pod') {
      await deletePod(ctx, leader, false);
    } else {
      // The postmaster's PID from the data directory the server itself reports.
      const script = 'kill -KILL "$(head -1 "$(psql -X -At -U postgres -d postgres -c \'show data_directory\')/postmaster.pid")"';
      await ctx.runner.run({ argv: kubectl(ctx.config, 'exec', leader, '-c', 'postgres', '--', 'sh', '-c', script), mutates: true, quiet: true });
    }
    return leader;
  },
};

const ops: TargetOps = {
  kind: 'kube',
  evidence: 'task-locks',
  replacesInstances: true,
  budgets: (config) => ({
    pickupMs: 120_000,
    attemptMs: 300_000,
    // A rollout of the replacements is the slack here.
    failoverMs: (taskSeconds) => (taskSeconds + config.agent.lockRetentionTime + 2 * config.agent.lockExpireInterval + config.k8s.rolloutTimeoutSeconds) * 1000,
    // The lock table is sampled: tasks must hold their locks long enough to be seen.
    stallWindowMs: 10_000,
    // Sampled through kubectl exec about once a second: 10-s tasks are each seen many times, and the
    // kill (pickup seen, then kubectl) lands well inside a 15-s task (15 and 30 s until 2026-12-03).
    placementRun: { tasks: 4, sleepSeconds: 10 },
    failoverRun: { tasks: 4, sleepSeconds: 15 },
    dbFailoverMs: 120_000,
  }),
  apiUrl: forwardedUrl,
  endpoint: async (ctx) => {
    const fwd = listProcesses(ctx.config).find((p) => p.name === PORT_FORWARD);
    const url = `http://127.0.0.1:${ctx.config.k8s.portForwardPort}`;
    const serving = fwd && fwd.marker === UI_SERVICE && isAlive(fwd) && !!(await answersVersion(url));
    if (!serving) ctx.facts.endpoint = await startPortForward(ctx);
    return authenticatedEndpoint(ctx.config, forwardedUrl(ctx));
  },
  instances: async (ctx) => {
    await requireCluster(ctx);
    const out = [];
    for (const role of layoutRoles(ctx.config)) {
      for (const p of await podsOf(ctx, role)) out.push({ name: p.metadata.name, role, ready: isReady(p), args: p.spec.containers[0]?.args ?? [] });
    }
    return out;
  },
  // One tracked port-forward moves from pod to pod: each is reached while it points there.
  instanceUrl: (ctx, inst) => startPortForward(ctx, `pod/${inst.name}`),
  instanceLog: async (ctx, inst) => (await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', inst.name, '-c', 'digdag'), quiet: true, nothrow: true })).stdout,
  opensWithApiPassword: (_config, role) => holdsApiPassword(role),
  instanceOfAgent: podOfAgent,
  query: (ctx, sql) => dbQuery(ctx)(sql),
  stop: async (ctx, inst) => {
    await deletePod(ctx, inst.name, false);
  },
  kill: async (ctx, inst) => {
    await deletePod(ctx, inst.name, true);
  },
  stopRole: async (ctx, role) => {
    const keda = kedaScales(ctx, role);
    if (keda) await pauseKeda(ctx, true);
    else await scale(ctx, role, 0);
    await waitFor(async () => (await podsOf(ctx, role)).length === 0, ctx.config.k8s.rolloutTimeoutSeconds * 1000, 1000);
    return `digdag-${role} (${keda ? `KEDA paused at 0: ${PAUSED_REPLICAS}` : 'scaled to 0'})`;
  },
  restore: async (ctx) => {
    const roles = layoutRoles(ctx.config);
    if (roles.some((r) => kedaScales(ctx, r))) await pauseKeda(ctx, false);
    for (const r of roles) await scale(ctx, r, ctx.config.replicas[r]);
    for (const r of roles) await rollout(ctx, 'deployment', `digdag-${r}`, `app.kubernetes.io/component=${r}`);
    // A forward to the Service is bound to one pod, which may be gone now.
    ctx.facts.endpoint = await startPortForward(ctx);
  },
  edgeChecks: async (ctx): Promise<Check[]> => {
    const address = ctx.facts.ingressAddress;
    if (!address) return [];
    const r = await probeIngress(ctx.config, { address, certificate: ctx.facts.ingressCertificate });
    return [{ role: 'ui', what: `through the Ingress (${r.url}): ${ctx.config.security.ingressTls === 'none' ? '' : 'HTTP redirected to HTTPS, '}401 without credentials, 200 with them`, ok: r.ok, detail: r.detail }];
  },
  verifyHint: (config) => `kubectl -n ${config.k8s.namespace} get events; kubectl -n ${config.k8s.namespace} logs -l app.kubernetes.io/name=digdag`,
  haDatabase: (config) => (config.db.externalUrl || config.db.members < 2 ? undefined : haDatabase),
  status: (ctx) => kubeStatus(ctx),
  down: (ctx, purge) => kubeDown(ctx, purge),
};

/** What the tasks layer hands the Kubernetes target: the own cluster's image host
 * (lib/cluster/image-host.ts), which this target cannot import itself. */
export interface KubeTargetOptions {
  ownClusterImages?: ImageHostFor;
}

const stepsWith = (options: KubeTargetOptions): Record<TaskName, Impl> => ({
  'build-image': buildImageWith(options.ownClusterImages),
  'create-secret': createSecret,
  'start-postgres': startPostgres,
  'init-db': initDb,
  apply,
  ingress,
  'port-forward': portForward,
  'push-workflow': pushWorkflowOn(ops),
  'verify-ha': verifyHaOn(ops),
});

// Once per run, however many steps ask.
const preflighted = new WeakMap<Ctx, Promise<unknown>>();

/** The Kubernetes target; tasks/steps.ts makes the one the tasks use. */
export const kubeTargetWith = (options: KubeTargetOptions): Target => ({
  ...ops,
  steps: stepsWith(options),
  // The chart's rules (the K8s-only combinations) refuse a configuration before anything is built or applied.
  preflight: async (ctx) => {
    let p = preflighted.get(ctx);
    if (!p) preflighted.set(ctx, (p = renderManifests(ctx.config, ctx.runner)));
    await p;
  },
});
