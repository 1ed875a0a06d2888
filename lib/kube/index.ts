// The Kubernetes target (minikube, gke): every task's implementation on a cluster, by task name.
import type { Impl, TaskName } from '../pipeline.ts';
import { pushWorkflow } from '../push-workflow.ts';
import { apply } from './apply.ts';
import { buildImage } from './build-image.ts';
import { createSecret } from './create-secret.ts';
import { ingress } from './ingress.ts';
import { initDb } from './init-db.ts';
import { portForward } from './port-forward.ts';
import { startPostgres } from './start-postgres.ts';
import { verifyHa } from './verify-ha.ts';

export const kubeImpls: Record<TaskName, Impl> = {
  'build-image': buildImage,
  'create-secret': createSecret,
  'start-postgres': startPostgres,
  'init-db': initDb,
  apply,
  ingress,
  'port-forward': portForward,
  'push-workflow': pushWorkflow,
  'verify-ha': verifyHa,
};
