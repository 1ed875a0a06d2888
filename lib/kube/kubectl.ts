// kubectl for the Kubernetes target: every call names the context and namespace; applying
// objects, waiting for rollouts, and what to show the user when a wait fails.
import { stringify } from 'yaml';
import type { Config } from '../config.ts';
import { tail, UserError } from '../errors.ts';
import type { Ctx } from '../pipeline.ts';
import type { KubeObject } from './render.ts';

/** kubectl with the configured context (cluster-scoped calls: the namespace itself). */
export function clusterKubectl(config: Config, ...args: string[]): string[] {
  return ['kubectl', ...(config.k8s.context ? ['--context', config.k8s.context] : []), ...args];
}

/** kubectl with the configured context and namespace. */
export function kubectl(config: Config, ...args: string[]): string[] {
  return clusterKubectl(config, '-n', config.k8s.namespace, ...args);
}

/** Fails with the fix when the cluster does not answer, before anything is changed. */
export async function requireCluster(ctx: Ctx): Promise<void> {
  const res = await ctx.runner.run({ argv: [...kubectl(ctx.config, 'version', '--request-timeout=10s', '-o', 'json')], nothrow: true });
  if (res.code !== 0 || !/"serverVersion"/.test(res.stdout)) {
    const where = ctx.config.k8s.context ? `context ${ctx.config.k8s.context}` : 'the current kubectl context';
    throw new UserError(
      `the Kubernetes cluster (${where}) does not answer`,
      ctx.config.target === 'minikube'
        ? `start it: minikube start -p ${ctx.config.k8s.minikubeProfile} (or run npx tsx tasks/e2e.ts, which does)`
        : 'check KUBE_CONTEXT and your credentials: gcloud container clusters get-credentials <cluster> --region <region>',
      tail(res.stderr || res.stdout, 5),
    );
  }
}

export async function applyObjects(ctx: Ctx, objects: readonly KubeObject[]): Promise<void> {
  const yaml = objects.map((o) => stringify(o)).join('---\n');
  await ctx.runner.run({ argv: kubectl(ctx.config, 'apply', '-f', '-'), input: yaml, mutates: true });
}

/** On a failed wait: the namespace's recent events and the pods' state, to show the user. */
export async function diagnostics(ctx: Ctx, selector: string): Promise<string> {
  const events = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'events', '--sort-by=.lastTimestamp'), nothrow: true });
  const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'describe', 'pods', '-l', selector), nothrow: true });
  return `events:\n${tail(events.stdout, 15)}\npods:\n${tail(pods.stdout, 25)}`;
}

export async function rollout(ctx: Ctx, kind: 'deployment' | 'statefulset', name: string, selector: string): Promise<void> {
  const res = await ctx.runner.run({
    argv: kubectl(ctx.config, 'rollout', 'status', `${kind}/${name}`, `--timeout=${ctx.config.k8s.rolloutTimeoutSeconds}s`),
    nothrow: true,
  });
  if (res.code !== 0) {
    throw new UserError(`${kind}/${name} did not become ready within ${ctx.config.k8s.rolloutTimeoutSeconds}s`, 'read the events below; raise ROLLOUT_TIMEOUT_SECONDS if the image pull is slow', await diagnostics(ctx, selector));
  }
}

export const byKind = (objects: readonly KubeObject[], ...kinds: string[]) => objects.filter((o) => kinds.includes(o.kind));
export const component = (o: KubeObject) => o.metadata.labels?.['app.kubernetes.io/component'];
