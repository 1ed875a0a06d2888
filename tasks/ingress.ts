// ingress: Kubernetes only (minikube addon / GKE load balancer); on local the UI is served directly.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube.ts';
import { byTarget } from '../lib/pipeline.ts';
import { endpointOf } from './apply.ts';

export const ingress = byTarget('ingress', 'Expose the UI through an Ingress', {
  local: {
    notApplicable: (ctx) => `local target: no ingress needed, the UI is at ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  kube: kubeImpls.ingress,
});

if (isMain(import.meta.url)) await main([ingress], 'tasks/ingress.ts');
