// The one place a task picks its target: each pipeline step delegates to the local or the
// Kubernetes implementation by the config's target (lib/local/target.ts, lib/kube/target.ts), the
// latter handed what it needs from the own cluster (lib/cluster/image-host.ts).
// Not a task itself; the task files and all.ts build their steps here.
import { clusterImageHost } from '../lib/cluster/image-host.ts';
import type { Config } from '../lib/config.ts';
import { kubeTargetWith } from '../lib/kube/target.ts';
import { localTarget } from '../lib/local/target.ts';
import { TASK_ORDER, TASK_TITLES, type Ctx, type Impl, type Step, type TaskName } from '../lib/pipeline.ts';
import type { Target } from '../lib/target.ts';

/** The Kubernetes target (minikube, gke, the own cluster), given the own cluster's image host. */
export const kubeTarget: Target = kubeTargetWith({ ownClusterImages: clusterImageHost });

export const targetOf = (config: Config): Target => (config.target === 'local' ? localTarget : kubeTarget);

const made = new Map<TaskName, Step>();

/** The pipeline step `name`, on whichever target the run's config names (one object per name). */
export function stepOf(name: TaskName): Step {
  const step = made.get(name) ?? delegating(name);
  made.set(name, step);
  return step;
}

function delegating(name: TaskName): Step {
  const pick = (ctx: Ctx): Impl => targetOf(ctx.config).steps[name];
  return {
    name,
    title: TASK_TITLES[name],
    notApplicable: (ctx) => pick(ctx).notApplicable?.(ctx),
    inputs: (ctx) => pick(ctx).inputs?.(ctx),
    healthy: (ctx) => pick(ctx).healthy?.(ctx) ?? Promise.resolve(false),
    run: (ctx) => pick(ctx).run(ctx),
    runWhenAlone: localTarget.steps[name].runWhenAlone || kubeTarget.steps[name].runWhenAlone,
    preflight: async (ctx) => targetOf(ctx.config).preflight?.(ctx),
  };
}

/** The pipeline, in TASK_ORDER. */
export const ALL_STEPS: readonly Step[] = TASK_ORDER.map(stepOf);
