// start-postgres on Kubernetes: the in-cluster PostgreSQL StatefulSet (none with DATABASE_URL).
import type { Impl } from '../pipeline.ts';
import { applyObjects, byKind, component, requireCluster, rollout } from './kubectl.ts';
import { dbLocation, renderManifests } from './render.ts';

export const startPostgres: Impl = {
  notApplicable: (ctx) => (ctx.config.db.externalUrl ? `DATABASE_URL is set: using ${dbLocation(ctx.config).host}, no in-cluster PostgreSQL` : undefined),
  run: async (ctx) => {
    await requireCluster(ctx);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await applyObjects(ctx, [...byKind(objects, 'Namespace', 'ServiceAccount'), ...objects.filter((o) => component(o) === 'postgres')]);
    await rollout(ctx, 'statefulset', 'digdag-postgres', 'app.kubernetes.io/component=postgres');
  },
};
