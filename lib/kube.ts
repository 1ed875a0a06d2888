// Kubernetes implementations of the tasks (minikube and gke), keyed by task name.
import type { Impl } from './pipeline.ts';
import type { TaskName } from './pipeline.ts';

export const kubeImpls: Partial<Record<TaskName, Impl>> = {};

/** Teardown on Kubernetes; replaced by the real implementation. */
export async function kubeDown(_ctx: import('./pipeline.ts').Ctx, _purge: boolean): Promise<string[]> {
  throw new Error('kubeDown is not implemented yet');
}
