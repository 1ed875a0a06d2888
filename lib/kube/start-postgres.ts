// start-postgres on Kubernetes: the in-cluster PostgreSQL StatefulSet (none with DATABASE_URL),
// refused before anything is applied when the cluster cannot give its volumes a StorageClass.
import { UserError } from '../errors.ts';
import type { KubeObject } from '../kube-object.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { applyObjects, byKind, clusterKubectl, component, requireCluster, rollout } from './kubectl.ts';
import { dbLocation, renderManifests } from './render.ts';

interface StorageClassList {
  items: { metadata: { name: string; annotations?: Record<string, string> } }[];
}

/** The StorageClass each volume claim template asks for ('' = the cluster's default). */
export function claimedClasses(objects: readonly KubeObject[]): string[] {
  const out = new Set<string>();
  for (const o of byKind(objects, 'StatefulSet')) {
    const claims = (o as unknown as { spec: { volumeClaimTemplates?: { spec: { storageClassName?: string } }[] } }).spec.volumeClaimTemplates ?? [];
    for (const c of claims) out.add(c.spec.storageClassName ?? '');
  }
  return [...out];
}

/** A claim for a class the cluster does not have (or for the default when none is marked) stays
 * Pending for ever and the database never starts: refuse it first, naming the fix. */
export async function requireStorageClasses(ctx: Ctx, objects: readonly KubeObject[]): Promise<void> {
  const wanted = claimedClasses(objects);
  if (!wanted.length) return;
  const r = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'get', 'storageclass', '-o', 'json'), nothrow: true, quiet: true });
  // Not allowed to list classes (a namespaced account): the rollout's diagnostics will say it instead.
  if (r.code !== 0) return;
  const classes = (JSON.parse(r.stdout || '{"items":[]}') as StorageClassList).items;
  const isDefault = (a?: Record<string, string>) => a?.['storageclass.kubernetes.io/is-default-class'] === 'true' || a?.['storageclass.beta.kubernetes.io/is-default-class'] === 'true';
  const names = classes.map((c) => c.metadata.name);
  for (const w of wanted) {
    if (w && !names.includes(w)) {
      throw new UserError(`the in-cluster PostgreSQL asks for StorageClass ${w}, which this cluster does not have (it has: ${names.join(', ') || 'none'})`, `set the chart's postgres.storageClass to one of them, or create ${w}; or use an external database (DATABASE_URL)`);
    }
    if (!w && !classes.some((c) => isDefault(c.metadata.annotations))) {
      throw new UserError(`the in-cluster PostgreSQL's volumes use the cluster's default StorageClass, and this cluster marks none as default (it has: ${names.join(', ') || 'none'})`, 'mark one as default (kubectl annotate storageclass <name> storageclass.kubernetes.io/is-default-class=true), or set the chart\'s postgres.storageClass');
    }
  }
}

export const startPostgres: Impl = {
  notApplicable: (ctx) => (ctx.config.db.externalUrl ? `DATABASE_URL is set: using ${dbLocation(ctx.config).host}, no in-cluster PostgreSQL` : undefined),
  run: async (ctx) => {
    await requireCluster(ctx);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const mine = objects.filter((o) => component(o) === 'postgres');
    await requireStorageClasses(ctx, mine);
    await applyObjects(ctx, [...byKind(objects, 'Namespace', 'ServiceAccount'), ...mine]);
    await rollout(ctx, 'statefulset', 'digdag-postgres', 'app.kubernetes.io/component=postgres');
  },
};
