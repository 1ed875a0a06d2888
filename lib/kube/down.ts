// down on Kubernetes: the port-forward, then the workloads; purge deletes the namespace and the
// generated secrets kept in the state dir, and says what happens to each database volume.
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import type { Ctx } from '../pipeline.ts';
import { stopTracked } from '../processes.ts';
import { clusterKubectl, kubectl, requireCluster } from './kubectl.ts';
import { renderManifests } from './render.ts';

/** Teardown: the port-forward, then the workloads; --purge deletes the namespace (volumes too). */
export async function kubeDown(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done = await stopTracked(ctx.config, 5000);
  await requireCluster(ctx);
  if (purge) {
    // Which volumes the namespace's claims hold, before they are gone: a Retain volume outlives them.
    const pvs = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'get', 'pv', '-o', 'json'), nothrow: true, quiet: true });
    const volumes = pvs.code === 0 ? volumesOfNamespace(pvs.stdout, ctx.config.k8s.namespace) : [];
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'delete', 'namespace', ctx.config.k8s.namespace, '--ignore-not-found'), mutates: true });
    done.push(`deleted namespace ${ctx.config.k8s.namespace} and its volume claims`);
    done.push(...volumes.map(volumeFate));
    const secrets = path.join(ctx.config.stateDir, 'secrets');
    const deleted = await ctx.runner.change(`would delete the generated secrets in ${secrets}`, () => {
      if (!fs.existsSync(secrets)) return false;
      fs.rmSync(secrets, { recursive: true, force: true });
      return true;
    });
    if (deleted) done.push(`deleted the generated secrets in ${secrets} (the next create-secret makes new ones)`);
  } else {
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const yaml = objects.filter((o) => o.kind !== 'Namespace').map((o) => stringify(o)).join('---\n');
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', '-f', '-', '--ignore-not-found'), input: yaml, mutates: true });
    done.push(`deleted the digdag-ha objects in ${ctx.config.k8s.namespace}; the database volume is kept (down --purge deletes it)`);
  }
  return done;
}

export interface VolumeOfClaim {
  pv: string;
  claim: string;
  policy: string;
}

/** PersistentVolumes bound to claims in the namespace, from `kubectl get pv -o json`. */
export function volumesOfNamespace(json: string, namespace: string): VolumeOfClaim[] {
  const items = (JSON.parse(json) as { items?: { metadata: { name: string }; spec?: { claimRef?: { namespace?: string; name?: string }; persistentVolumeReclaimPolicy?: string } }[] }).items ?? [];
  return items
    .filter((v) => v.spec?.claimRef?.namespace === namespace)
    .map((v) => ({ pv: v.metadata.name, claim: v.spec!.claimRef!.name ?? '', policy: v.spec?.persistentVolumeReclaimPolicy ?? 'Delete' }));
}

/** One honest line per volume: Delete goes with its claim, Retain stays (with its data) until deleted by hand. */
export function volumeFate(v: VolumeOfClaim): string {
  return v.policy === 'Retain'
    ? `volume ${v.pv} (claim ${v.claim}) has reclaim policy Retain: it and the database on it are kept; delete it yourself with kubectl delete pv ${v.pv} (and its storage)`
    : `volume ${v.pv} (claim ${v.claim}) has reclaim policy ${v.policy}: the provisioner deletes it with the claim`;
}
