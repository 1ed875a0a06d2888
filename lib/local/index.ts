// The local target: every task's implementation on this machine, by task name.
import { endpointOf } from './apply.ts';
import type { Impl, TaskName } from '../pipeline.ts';
import { pushWorkflow } from '../push-workflow.ts';
import { apply } from './apply.ts';
import { buildImage } from './build-image.ts';
import { createSecret } from './create-secret.ts';
import { initDb } from './init-db.ts';
import { startPostgres } from './start-postgres.ts';
import { verifyHa } from './verify-ha.ts';

export const localImpls: Record<TaskName, Impl> = {
  'build-image': buildImage,
  'create-secret': createSecret,
  'start-postgres': startPostgres,
  'init-db': initDb,
  apply,
  ingress: {
    notApplicable: (ctx) => `local target: no ingress needed, the UI is at ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  'port-forward': {
    notApplicable: (ctx) => `local target: nothing to forward, the UI listens on ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  'push-workflow': pushWorkflow,
  'verify-ha': verifyHa,
};
