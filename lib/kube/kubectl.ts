// kubectl for the Kubernetes target: every call names the context and namespace; applying
// objects, waiting for rollouts, and what to show the user when a wait fails.
import { stringify } from 'yaml';
import type { Config } from '../config.ts';
import { CommandError, tail, UserError } from '../errors.ts';
import type { Ctx } from '../pipeline.ts';
import { mask } from '../secrets.ts';
import type { KubeObject } from '../kube-object.ts';
import { changesApplied, skippedInDryRun } from '../runner.ts';

/** kubectl with the configured context (cluster-scoped calls: the namespace itself). */
export function clusterKubectl(config: Config, ...args: string[]): string[] {
  // The own test cluster: its kubeconfig in its state dir (nothing written to ~/.kube).
  const kubeconfig = config.target === 'cluster' ? ['--kubeconfig', config.cluster.kubeconfig] : [];
  return ['kubectl', ...kubeconfig, ...(config.k8s.context ? ['--context', config.k8s.context] : []), ...args];
}

/** kubectl with the configured context and namespace. */
export function kubectl(config: Config, ...args: string[]): string[] {
  return clusterKubectl(config, '-n', config.k8s.namespace, ...args);
}

/** Fails with the fix when the cluster does not answer, before anything is changed. */
export async function requireCluster(ctx: Ctx): Promise<void> {
  const res = await ctx.runner.run({ argv: [...kubectl(ctx.config, 'version', '--request-timeout=10s', '-o', 'json')], nothrow: true });
  if (res.code !== 0 || !/"serverVersion"/.test(res.stdout)) {
    const where = ctx.config.k8s.context ? `context ${ctx.config.k8s.context}` : 'the current kubectl context';
    throw new UserError(
      `the Kubernetes cluster (${where}) does not answer`,
      ctx.config.target === 'minikube'
        ? `start it: minikube start -p ${ctx.config.k8s.minikubeProfile} (or run npx tsx tasks/e2e.ts, which does)`
        : ctx.config.target === 'cluster'
          ? 'bring the test cluster up: npx tsx tasks/cluster.ts up (or run npx tsx tasks/e2e.ts, which does)'
          : 'check KUBE_CONTEXT and your credentials: gcloud container clusters get-credentials <cluster> --region <region>',
      tail(res.stderr || res.stdout, 5),
    );
  }
}

export async function applyObjects(ctx: Ctx, objects: readonly KubeObject[]): Promise<void> {
  const yaml = objects.map((o) => stringify(o)).join('---\n');
  const argv = kubectl(ctx.config, 'apply', '-f', '-');
  const res = await ctx.runner.run({ argv, input: yaml, mutates: true, nothrow: true });
  if (res.code === 0) return;
  const stale = immutableSelectors(res.stderr);
  if (!stale.length) throw new CommandError(argv, res.code, mask(res.stdout), mask(res.stderr));
  // A workload whose selector changed (deployed before the chart was the renderer: its selectors now
  // carry app.kubernetes.io/instance) cannot be updated in place: replace it. A StatefulSet's volume
  // claims outlive it, so PostgreSQL's data stays.
  for (const { kind, name } of stale) {
    ctx.runner.log(`${kind} ${name} has a selector from an older rendering, which Kubernetes cannot change in place: replacing it`);
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', kind.toLowerCase(), name, '--wait=true'), mutates: true });
  }
  await ctx.runner.run({ argv, input: yaml, mutates: true });
}

/** Deployments and StatefulSets `kubectl apply` refused because their selector (immutable) changed. */
export function immutableSelectors(stderr: string): { kind: string; name: string }[] {
  const out: { kind: string; name: string }[] = [];
  for (const m of stderr.matchAll(/The (Deployment|StatefulSet) "([^"]+)" is invalid: spec(?:\.selector)?: (?:Invalid value: [^\n]*field is immutable|Forbidden: updates to statefulset spec)/g)) {
    out.push({ kind: m[1]!, name: m[2]! });
  }
  return out;
}

/** On a failed wait: why the pods are not ready — scheduling failures first (they are the cause
 * when new pods stay Pending), the last log of a crashed container (`logs --previous`), the
 * namespace's newest events and the pods' state. */
export async function diagnostics(ctx: Ctx, selector: string): Promise<string> {
  const out: string[] = [];
  const sched = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'events', '--field-selector', 'reason=FailedScheduling', '--sort-by=.lastTimestamp', '-o', 'custom-columns=OBJECT:.involvedObject.name,MESSAGE:.message', '--no-headers'), nothrow: true, quiet: true });
  if (sched.stdout.trim()) out.push(`FailedScheduling:\n${tail(sched.stdout, 5)}`);
  // A volume the cluster cannot give (size, class): the claim stays Pending and says why only here.
  const prov = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'events', '--field-selector', 'reason=ProvisioningFailed', '-o', 'custom-columns=OBJECT:.involvedObject.name,MESSAGE:.message', '--no-headers'), nothrow: true, quiet: true });
  if (prov.stdout.trim()) out.push(`ProvisioningFailed:\n${tail(prov.stdout, 5)}`);
  const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', selector, '-o', 'json'), nothrow: true, quiet: true });
  for (const p of podsWithRestarts(pods.stdout)) {
    const prev = await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', p.pod, '-c', p.container, '--previous', '--tail=20'), nothrow: true, quiet: true });
    out.push(`kubectl logs ${p.pod} -c ${p.container} --previous (restarted ${p.restarts}x):\n${tail(prev.stdout || prev.stderr, 20)}`);
  }
  // Running but never ready without a restart (e.g. Patroni retrying a replica whose password is
  // wrong): its current log says why.
  for (const p of podsRunningNotReady(pods.stdout)) {
    const cur = await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', p.pod, '-c', p.container, '--tail=20'), nothrow: true, quiet: true });
    out.push(`kubectl logs ${p.pod} -c ${p.container} (running, not ready):\n${tail(cur.stdout || cur.stderr, 20)}`);
  }
  const events = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'events', '--sort-by=.lastTimestamp'), nothrow: true, quiet: true });
  const describe = await ctx.runner.run({ argv: kubectl(ctx.config, 'describe', 'pods', '-l', selector), nothrow: true, quiet: true });
  out.push(`events:\n${tail(events.stdout, 15)}`, `pods:\n${tail(describe.stdout, 25)}`);
  return out.join('\n');
}

/** Containers (init ones too) that have restarted, from `kubectl get pods -o json`. */
export function podsWithRestarts(json: string): { pod: string; container: string; restarts: number }[] {
  let items: { metadata: { name: string }; status?: { containerStatuses?: { name: string; restartCount: number }[]; initContainerStatuses?: { name: string; restartCount: number }[] } }[] = [];
  try {
    items = JSON.parse(json).items ?? [];
  } catch {
    return [];
  }
  return items.flatMap((p) =>
    [...(p.status?.initContainerStatuses ?? []), ...(p.status?.containerStatuses ?? [])].filter((c) => c.restartCount > 0).map((c) => ({ pod: p.metadata.name, container: c.name, restarts: c.restartCount })),
  );
}

/** Containers that run without having restarted but are not ready, from `kubectl get pods -o json`. */
export function podsRunningNotReady(json: string): { pod: string; container: string }[] {
  let items: { metadata: { name: string }; status?: { containerStatuses?: { name: string; restartCount: number; ready: boolean; state?: { running?: object } }[] } }[] = [];
  try {
    items = JSON.parse(json).items ?? [];
  } catch {
    return [];
  }
  return items.flatMap((p) => (p.status?.containerStatuses ?? []).filter((c) => c.state?.running && !c.ready && c.restartCount === 0).map((c) => ({ pod: p.metadata.name, container: c.name })));
}

/** What a failed `rollout status` says when it is not a timeout: the object is missing, or we may not read it. */
export function rolloutFailure(stderr: string): 'not-found' | 'forbidden' | 'timeout' | 'other' {
  if (/NotFound|not found/i.test(stderr)) return 'not-found';
  if (/forbidden|Unauthorized/i.test(stderr)) return 'forbidden';
  if (/timed out|exceeded its progress deadline/i.test(stderr)) return 'timeout';
  return 'other';
}

export async function rollout(ctx: Ctx, kind: 'deployment' | 'statefulset', name: string, selector: string): Promise<void> {
  // A dry run applied nothing: there is no rollout to wait for.
  if (skippedInDryRun(ctx.runner, `kubectl rollout status ${kind}/${name}`)) return;
  const secs = ctx.config.k8s.rolloutTimeoutSeconds;
  if (kind === 'statefulset') await recoverStuckStatefulSet(ctx, name, selector);
  const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'rollout', 'status', `${kind}/${name}`, `--timeout=${secs}s`), nothrow: true });
  if (res.code === 0) return;
  const why = rolloutFailure(res.stderr);
  if (why === 'not-found') throw new UserError(`${kind}/${name} does not exist in namespace ${ctx.config.k8s.namespace}`, 'run apply (or start-postgres) first', tail(res.stderr, 3));
  if (why === 'forbidden') throw new UserError(`not allowed to read ${kind}/${name} in namespace ${ctx.config.k8s.namespace}`, 'check your RBAC permissions for this namespace', tail(res.stderr, 3));
  const head = why === 'timeout' ? `${kind}/${name} did not become ready within ${secs}s` : `kubectl rollout status ${kind}/${name} failed`;
  throw new UserError(head, 'read the diagnostics below; raise ROLLOUT_TIMEOUT_SECONDS if the image pull is slow', `${tail(res.stderr, 3)}\n${await diagnostics(ctx, selector)}`);
}

interface StsStatus {
  spec?: { replicas?: number };
  status?: { currentRevision?: string; updateRevision?: string; readyReplicas?: number };
}
interface PodStatus {
  metadata: { name: string; labels?: Record<string, string> };
  status?: { conditions?: { type: string; status: string }[] };
}

/** The pods a StatefulSet's OrderedReady rollout will never replace: on an old revision and not
 * ready. Kubernetes waits for them forever after the template is fixed (kubernetes#67250). */
export function stuckPods(sts: StsStatus, pods: readonly PodStatus[]): string[] {
  const update = sts.status?.updateRevision;
  if (!update || update === sts.status?.currentRevision && (sts.status?.readyReplicas ?? 0) >= (sts.spec?.replicas ?? 1)) return [];
  return pods
    .filter((p) => p.metadata.labels?.['controller-revision-hash'] !== update)
    .filter((p) => !p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
    .map((p) => p.metadata.name);
}

/** Deletes the StatefulSet's pods stuck on a never-ready old revision, so the fixed template rolls out. */
export async function recoverStuckStatefulSet(ctx: Ctx, name: string, selector: string): Promise<string[]> {
  const sts = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'statefulset', name, '-o', 'json'), nothrow: true, quiet: true });
  if (sts.code !== 0) return [];
  const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', selector, '-o', 'json'), nothrow: true, quiet: true });
  const stuck = stuckPods(JSON.parse(sts.stdout) as StsStatus, pods.code === 0 ? ((JSON.parse(pods.stdout) as { items: PodStatus[] }).items ?? []) : []);
  for (const pod of stuck) {
    ctx.runner.log(`statefulset/${name}: pod ${pod} is on an old revision and not ready; deleting it so the new template rolls out`);
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', 'pod', pod, '--wait=false'), mutates: true });
  }
  return stuck;
}

export const byKind = (objects: readonly KubeObject[], ...kinds: string[]) => objects.filter((o) => kinds.includes(o.kind));
export const component = (o: KubeObject) => o.metadata.labels?.['app.kubernetes.io/component'];

/** Patroni's label on the member that holds the leader lock (3.x: master; 4.x: primary). */
export const LEADER_ROLES = ['master', 'primary'];
export const LEADER_SELECTOR = `app.kubernetes.io/component=postgres,role in (${LEADER_ROLES.join(',')})`;

/** A member's role from Patroni's `role` label: leader, replica, or unknown (starting, cut off). */
export const memberRole = (label: string | undefined): 'leader' | 'replica' | 'unknown' =>
  label && LEADER_ROLES.includes(label) ? 'leader' : label === 'replica' ? 'replica' : 'unknown';

/** The in-cluster PostgreSQL pod that takes writes: digdag-postgres-0 for one member; with Patroni
 * the member labelled leader, waited for (bounded) while a leader is being elected. */
export async function dbPod(ctx: Ctx, timeoutMs = 60_000): Promise<string> {
  if (ctx.config.db.members <= 1) return 'digdag-postgres-0';
  const deadline = Date.now() + timeoutMs;
  for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
    const r = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', LEADER_SELECTOR, '-o', 'jsonpath={.items[*].metadata.name}'), nothrow: true, quiet: true });
    const names = r.stdout.trim().split(/\s+/).filter(Boolean);
    if (names.length === 1) return names[0]!;
    if (!changesApplied(ctx.runner) && !names.length) return 'digdag-postgres-0';
    if (Date.now() + delay > deadline) {
      throw new UserError(
        names.length ? `more than one PostgreSQL member is labelled leader: ${names.join(', ')}` : `no PostgreSQL member became leader within ${timeoutMs / 1000} s`,
        'read the members\' logs: kubectl logs -l app.kubernetes.io/component=postgres (Patroni says why), and npx tsx tasks/status.ts',
        await diagnostics(ctx, 'app.kubernetes.io/component=postgres'),
      );
    }
    await new Promise((res) => setTimeout(res, delay));
  }
}
