// down on Kubernetes: the port-forward, then the workloads; purge deletes the namespace.
import { stringify } from 'yaml';
import type { Ctx } from '../pipeline.ts';
import { listProcesses, stopProcess, unregisterProcess } from '../processes.ts';
import { clusterKubectl, kubectl, requireCluster } from './kubectl.ts';
import { renderManifests } from './render.ts';

/** Teardown: the port-forward, then the workloads; --purge deletes the namespace (volumes too). */
export async function kubeDown(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done: string[] = [];
  for (const e of listProcesses(ctx.config)) {
    done.push(`${e.name}: ${await stopProcess(e, 5000)}`);
    unregisterProcess(ctx.config, e.name, e.pid);
  }
  await requireCluster(ctx);
  if (purge) {
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'delete', 'namespace', ctx.config.k8s.namespace, '--ignore-not-found'), mutates: true });
    done.push(`deleted namespace ${ctx.config.k8s.namespace} (database volume included)`);
  } else {
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const yaml = objects.filter((o) => o.kind !== 'Namespace').map((o) => stringify(o)).join('---\n');
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', '-f', '-', '--ignore-not-found'), input: yaml, mutates: true });
    done.push(`deleted the digdag-ha objects in ${ctx.config.k8s.namespace}; the database volume is kept (down --purge deletes it)`);
  }
  return done;
}
