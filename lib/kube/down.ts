// down on Kubernetes: the port-forward, then the workloads; purge deletes the namespace and the
// generated secrets kept in the state dir, and says what happens to each database volume.
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { Ctx } from '../pipeline.ts';
import { stopTracked, waitFor } from '../processes.ts';
import { UserError } from '../errors.ts';
import { changesApplied } from '../runner.ts';
import { clusterKubectl, kubectl, requireCluster } from './kubectl.ts';
import { renderManifests } from './render.ts';

/** Teardown: the port-forward, then the workloads; --purge deletes the namespace (volumes too). */
export async function kubeDown(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done = await stopTracked(ctx.config, 5000);
  await requireCluster(ctx);
  if (purge) {
    // Which volumes the namespace's claims hold, before they are gone: a Retain volume outlives them.
    const pvs = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'get', 'pv', '-o', 'json'), nothrow: true, quiet: true });
    const volumes = pvs.code === 0 ? volumesOfNamespace(pvs.stdout, ctx.config.k8s.namespace) : [];
    await stopDigdagFirst(ctx);
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'delete', 'namespace', ctx.config.k8s.namespace, '--ignore-not-found', '--wait=false'), mutates: true });
    await waitNamespaceGone(ctx);
    done.push(`deleted namespace ${ctx.config.k8s.namespace} and its volume claims`);
    done.push(...volumes.map(volumeFate));
    const secrets = path.join(ctx.config.stateDir, 'secrets');
    const deleted = await ctx.runner.change(`would delete the generated secrets in ${secrets}`, () => {
      if (!fs.existsSync(secrets)) return false;
      fs.rmSync(secrets, { recursive: true, force: true });
      return true;
    });
    if (deleted) done.push(`deleted the generated secrets in ${secrets} (the next create-secret makes new ones)`);
  } else {
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const yaml = objects.filter((o) => o.kind !== 'Namespace').map((o) => stringify(o)).join('---\n');
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', '-f', '-', '--ignore-not-found'), input: yaml, mutates: true });
    done.push(`deleted the digdag-ha objects in ${ctx.config.k8s.namespace}; the database volume is kept (down --purge deletes it)`);
  }
  return done;
}

/** How long purge waits for the namespace to go, and how often it says what is left. */
export const NAMESPACE_GONE_MS = 600_000;
const REPORT_MS = 15_000;
/** Digdag's own pods (the chart's part-of label), not the database's (in-cluster PostgreSQL or
 * Patroni: they go with the namespace, after Digdag's); of those, only the ones a deleted
 * Deployment or Job owns (podsLeft's `owned`): a bare pod with the same labels (a user's, or
 * kube-e2e's db-client probe) is not deleted by this step and is not waited for. */
export const DIGDAG_PODS = 'app.kubernetes.io/part-of=digdag-ha,app.kubernetes.io/component!=postgres';

/**
 * Purge, first step: Digdag's workloads go while their database still answers, so that a stopping
 * worker finishes its tasks and shuts down cleanly (its termination grace). Waiting for their pods
 * here also keeps the namespace's own deletion quick: Kubernetes' namespace controller, finding
 * pods still there, looks again only after half the longest termination grace among them plus a
 * second (a worker's AGENT_TERMINATION_GRACE_SECONDS, 900 s by default) unless the namespace changes
 * meanwhile — one CI run's purge waited 305 s for its namespace, others 12 s.
 */
export async function stopDigdagFirst(ctx: Ctx, timeoutMs = (ctx.config.agent.terminationGraceSeconds + 60) * 1000): Promise<void> {
  await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', 'deployments,jobs', '--all', '--ignore-not-found', '--wait=false'), mutates: true });
  await waitGone(ctx, timeoutMs, `Digdag's pods in namespace ${ctx.config.k8s.namespace}`, async () => {
    const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-l', DIGDAG_PODS, '-o', 'json'), nothrow: true, quiet: true });
    const left = podsLeft(pods.code === 0 ? pods.stdout : '', true);
    return left ? `pods ${left}` : undefined;
  }, `see what holds them: kubectl -n ${ctx.config.k8s.namespace} get pods (a worker finishing a task waits up to AGENT_TERMINATION_GRACE_SECONDS); then run down --purge again`);
}

/**
 * Waits until the namespace is gone, saying every 15 s what still holds it (the namespace's own
 * conditions, the pods still terminating), and names it when the wait ends unfinished.
 */
export async function waitNamespaceGone(ctx: Ctx, timeoutMs = NAMESPACE_GONE_MS): Promise<void> {
  const ns = ctx.config.k8s.namespace;
  await waitGone(ctx, timeoutMs, `namespace ${ns}`, async () => {
    const res = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'get', 'namespace', ns, '-o', 'json', '--ignore-not-found'), nothrow: true, quiet: true });
    if (res.code === 0 && !res.stdout.trim()) return undefined;
    const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'pods', '-o', 'json'), nothrow: true, quiet: true });
    return namespaceLeft(res.stdout, pods.code === 0 ? pods.stdout : '');
  }, `see what holds it: kubectl get namespace ${ns} -o yaml; kubectl -n ${ns} get pods; then run down --purge again`);
}

/** Polls `left` (undefined = gone) every second (processes.ts's waitFor), saying what is left every 15 s; at the bound a UserError naming it. */
async function waitGone(ctx: Ctx, timeoutMs: number, what: string, left: () => Promise<string | undefined>, fix: string): Promise<void> {
  if (!changesApplied(ctx.runner)) return;
  const start = Date.now();
  let reported = start;
  let still: string | undefined;
  const line = () => `${what} still being deleted after ${Math.round((Date.now() - start) / 1000)} s: ${still}`;
  const gone = await waitFor(async () => {
    still = await left();
    if (still === undefined) return true;
    if (Date.now() - reported >= REPORT_MS) {
      ctx.runner.log(line());
      reported = Date.now();
    }
    return false;
  }, timeoutMs, 1000);
  if (!gone) throw new UserError(line(), fix);
}

/** The pods of `kubectl get pods -o json` (with `owned`, only those a ReplicaSet or Job owns), each
 * with its terminating state: '' when none. */
export function podsLeft(podsJson: string, owned = false): string {
  try {
    type Pod = { metadata: { name: string; deletionTimestamp?: string; ownerReferences?: { kind: string }[] }; spec?: { terminationGracePeriodSeconds?: number } };
    const pods = ((JSON.parse(podsJson) as { items?: Pod[] }).items ?? [])
      .filter((p) => !owned || (p.metadata.ownerReferences ?? []).some((o) => o.kind === 'ReplicaSet' || o.kind === 'Job'));
    return pods.map((p) => `${p.metadata.name}${p.metadata.deletionTimestamp ? ` (terminating since ${p.metadata.deletionTimestamp}, grace ${p.spec?.terminationGracePeriodSeconds ?? '?'} s)` : ''}`).join(', ');
  } catch {
    return '';
  }
}

/** What still holds a terminating namespace: its True conditions and the pods still in it. */
export function namespaceLeft(nsJson: string, podsJson: string): string {
  const parts: string[] = [];
  try {
    const ns = JSON.parse(nsJson) as { status?: { conditions?: { type: string; status: string; message?: string }[] } };
    for (const c of ns.status?.conditions ?? []) if (c.status === 'True') parts.push(`${c.type}: ${c.message ?? ''}`.trim());
  } catch { /* not JSON: nothing to say from it */ }
  const pods = podsLeft(podsJson);
  if (pods) parts.push(`pods ${pods}`);
  return parts.join('; ') || 'nothing listed yet';
}

export interface VolumeOfClaim {
  pv: string;
  claim: string;
  policy: string;
}

/** PersistentVolumes bound to claims in the namespace, from `kubectl get pv -o json`. */
export function volumesOfNamespace(json: string, namespace: string): VolumeOfClaim[] {
  const items = (JSON.parse(json) as { items?: { metadata: { name: string }; spec?: { claimRef?: { namespace?: string; name?: string }; persistentVolumeReclaimPolicy?: string } }[] }).items ?? [];
  return items
    .filter((v) => v.spec?.claimRef?.namespace === namespace)
    .map((v) => ({ pv: v.metadata.name, claim: v.spec!.claimRef!.name ?? '', policy: v.spec?.persistentVolumeReclaimPolicy ?? 'Delete' }));
}

/** One honest line per volume: Delete goes with its claim, Retain stays (with its data) until deleted by hand. */
export function volumeFate(v: VolumeOfClaim): string {
  return v.policy === 'Retain'
    ? `volume ${v.pv} (claim ${v.claim}) has reclaim policy Retain: it and the database on it are kept; delete it yourself with kubectl delete pv ${v.pv} (and its storage)`
    : `volume ${v.pv} (claim ${v.claim}) has reclaim policy ${v.policy}: the provisioner deletes it with the claim`;
}
