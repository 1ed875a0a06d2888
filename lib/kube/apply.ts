// apply on Kubernetes: render the chart for this config, validate the objects strictly, apply,
// and wait for every role's rollout.
import { UserError } from '../errors.ts';
import type { Impl } from '../pipeline.ts';
import { layoutRoles } from '../roles.ts';
import { validateObjects } from '../schema.ts';
import { applyObjects, requireCluster, rollout } from './kubectl.ts';
import { renderManifests } from './render.ts';
import { renderWarnings } from './values.ts';

export const apply: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    for (const w of renderWarnings(ctx.config)) ctx.runner.log(`WARNING: ${w}`);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const errors = await validateObjects(objects);
    if (errors.length) throw new UserError('the rendered manifests do not validate', 'fix the manifests or the .env values named below', errors.map((e) => `${e.object}: ${e.message}`).join('\n'));
    // The migration Job belongs to init-db (its template is immutable).
    await applyObjects(ctx, objects.filter((o) => o.kind !== 'Job'));
    for (const role of layoutRoles(ctx.config)) await rollout(ctx, 'deployment', `digdag-${role}`, `app.kubernetes.io/component=${role}`);
  },
};
