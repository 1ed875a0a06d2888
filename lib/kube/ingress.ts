// ingress on Kubernetes: enable the controller on minikube and wait for the Ingress address.
import { UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { waitFor } from '../processes.ts';
import { probeIngress } from './ingress-probe.ts';
import { diagnostics, kubectl, requireCluster } from './kubectl.ts';
import { changesApplied } from '../runner.ts';

async function waitIngressAddress(ctx: Ctx): Promise<string> {
  let address = '';
  await waitFor(async () => {
    const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'ingress', 'digdag', '-o', 'jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}'), nothrow: true, quiet: true });
    address = res.stdout.trim();
    // Under --dry-run nothing was applied: one look, then no wait.
    return !!address || !changesApplied(ctx.runner);
  }, 300_000, 3000);
  if (!address && changesApplied(ctx.runner)) throw new UserError('the Ingress got no address within 300s', 'check the ingress controller (minikube: minikube addons enable ingress; GKE: install ingress-nginx)', await diagnostics(ctx, 'app.kubernetes.io/component=ui'));
  return address;
}

export const ingress: Impl = {
  // The test cluster has no Ingress controller (ingress-nginx's image is registry-only): the
  // Ingress object is applied and admitted, but nothing would ever give it an address.
  notApplicable: (ctx) => (ctx.config.target === 'cluster' ? 'the test cluster has no Ingress controller: the Ingress is applied but not served; the UI is reached through port-forward' : undefined),
  run: async (ctx) => {
    await requireCluster(ctx);
    if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', ctx.config.k8s.minikubeProfile, 'addons', 'enable', 'ingress'], mutates: true });
    const address = await waitIngressAddress(ctx);
    ctx.facts.ingressAddress = address;
    if (!changesApplied(ctx.runner)) return;
    const report = await probeIngress(ctx.config, { address });
    ctx.facts.ingressEndpoint = report.url;
    ctx.runner.log(`UI through the Ingress: ${report.url} (${report.detail})`);
  },
};
