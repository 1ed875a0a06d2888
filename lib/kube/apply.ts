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

export const apply: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    for (const w of renderWarnings(ctx.config)) ctx.runner.log(`WARNING: ${w}`);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await requireKedaCrds(ctx, objects);
    const errors = await validateObjects(objects);
    if (errors.length) throw new UserError('the rendered manifests do not validate', 'fix the manifests or the .env values named below', errors.map((e) => `${e.object}: ${e.message}`).join('\n'));
    // The migration Job belongs to init-db (its template is immutable).
    await applyObjects(ctx, objects.filter((o) => o.kind !== 'Job'));
    for (const role of layoutRoles(ctx.config)) await rollout(ctx, 'deployment', `digdag-${role}`, `app.kubernetes.io/component=${role}`);
  },
};
