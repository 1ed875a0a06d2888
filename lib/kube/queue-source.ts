// The burst sampling's reads on Kubernetes (lib/queue-sampling.ts): the task-running role's pods
// (one `kubectl get pods`, terminating ones included) and Digdag's lock table on the database's
// leader (found once and kept: lib/kube/db-query.ts).
import type { Ctx } from '../pipeline.ts';
import type { QueueSource } from '../queue-sampling.ts';
import { taskRole } from '../roles.ts';
import { pollingDbQuery } from './db-query.ts';
import { isReady, podOfAgent, rolePods } from './target.ts';

export function kubeQueueSource(ctx: Ctx): QueueSource {
  const role = taskRole(ctx.config.layout);
  const query = pollingDbQuery(ctx);
  return {
    workers: async () => (await rolePods(ctx, role)).map((p) => ({ name: p.metadata.name, ready: isReady(p), terminating: !!p.metadata.deletionTimestamp })),
    query,
    instanceOfAgent: podOfAgent,
  };
}
