// apply on Kubernetes: render the chart for this config, validate the objects strictly, apply,
// and wait for every role's rollout.
import { UserError } from '../errors.ts';
import type { Impl } from '../pipeline.ts';
import { layoutRoles } from '../roles.ts';
import { validateObjects } from '../schema.ts';
import { applyObjects, kubectl, requireCluster, rollout } from './kubectl.ts';
import { renderManifests } from './render.ts';
import { renderWarnings } from './values.ts';
import type { KubeObject } from '../kube-object.ts';
import type { Ctx } from '../pipeline.ts';

/** KEDA's kinds the chart renders with AGENT_AUTOSCALING=keda, by their CRD. */
export const KEDA_CRDS = { ScaledObject: 'scaledobjects.keda.sh', TriggerAuthentication: 'triggerauthentications.keda.sh' } as const;

/** A ScaledObject onto a cluster without KEDA would be refused half-way through the apply (or, with
 * a stale CRD, sit there doing nothing): stop before anything is applied, naming the fix. */
export async function requireKedaCrds(ctx: Ctx, objects: readonly KubeObject[]): Promise<void> {
  const crds = [...new Set(objects.filter((o) => o.kind in KEDA_CRDS).map((o) => KEDA_CRDS[o.kind as keyof typeof KEDA_CRDS]))];
  if (!crds.length) return;
  const r = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'crd', ...crds, '-o', 'name'), nothrow: true, quiet: true });
  const missing = crds.filter((c) => !r.stdout.includes(`customresourcedefinition.apiextensions.k8s.io/${c}`));
  if (!missing.length) return;
  throw new UserError(
    `AGENT_AUTOSCALING=keda renders a ScaledObject, but this cluster has no KEDA: CRD ${missing.join(', ')} not found`,
    ctx.config.target === 'cluster'
      ? 'start KEDA with the own cluster (bash .ci/install-keda; CLUSTER_ADDONS=keda npx tsx tasks/cluster.ts up), or set AGENT_AUTOSCALING=none or hpa'
      : 'install KEDA (https://keda.sh/docs/deploy/), or set AGENT_AUTOSCALING=none or hpa',
    (r.stderr || '').trim() || undefined,
  );
}

/** The resource-metrics API a CPU HorizontalPodAutoscaler reads (metrics-server serves it). */
export const METRICS_API_SERVICE = 'v1beta1.metrics.k8s.io';

/** A CPU HPA on a cluster without the metrics API is admitted and then never scales (its
 * ScalingActive condition says FailedGetResourceMetric): warn, naming the fix, and go on — the
 * API may come up later, and the workers run at their minimum meanwhile. */
export async function metricsApiWarning(ctx: Ctx, objects: readonly KubeObject[]): Promise<string | undefined> {
  if (!objects.some((o) => o.kind === 'HorizontalPodAutoscaler')) return undefined;
  const r = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'apiservice', METRICS_API_SERVICE, '-o', 'jsonpath={.status.conditions[?(@.type=="Available")].status}'), nothrow: true, quiet: true });
  if (r.code === 0 && r.stdout.trim() === 'True') return undefined;
  const fix = ctx.config.target === 'cluster'
    ? 'start metrics-server with the own cluster (bash .ci/install-metrics-server; CLUSTER_ADDONS=metrics-server npx tsx tasks/cluster.ts up)'
    : 'install metrics-server (https://github.com/kubernetes-sigs/metrics-server), or set AGENT_AUTOSCALING=keda or none';
  const why = r.code === 0 ? `APIService ${METRICS_API_SERVICE} is not Available` : `no APIService ${METRICS_API_SERVICE}`;
  return `AGENT_AUTOSCALING=hpa renders a CPU HorizontalPodAutoscaler, but this cluster serves no metrics.k8s.io API (${why}): the HPA will not scale the workers until it does — ${fix}`;
}

export const apply: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    for (const w of renderWarnings(ctx.config)) ctx.runner.log(`WARNING: ${w}`);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await requireKedaCrds(ctx, objects);
    const noMetrics = await metricsApiWarning(ctx, objects);
    if (noMetrics) ctx.runner.log(`WARNING: ${noMetrics}`);
    const errors = await validateObjects(objects);
    if (errors.length) throw new UserError('the rendered manifests do not validate', 'fix the manifests or the .env values named below', errors.map((e) => `${e.object}: ${e.message}`).join('\n'));
    // The migration Job belongs to init-db (its template is immutable).
    await applyObjects(ctx, objects.filter((o) => o.kind !== 'Job'));
    for (const role of layoutRoles(ctx.config)) await rollout(ctx, 'deployment', `digdag-${role}`, `app.kubernetes.io/component=${role}`);
  },
};
