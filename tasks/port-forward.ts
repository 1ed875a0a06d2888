// port-forward: Kubernetes only — a tracked background kubectl port-forward to the UI Service.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube.ts';
import { byTarget } from '../lib/pipeline.ts';
import { endpointOf } from './apply.ts';

export const portForward = byTarget('port-forward', 'Forward a local port to the UI', {
  local: {
    notApplicable: (ctx) => `local target: nothing to forward, the UI listens on ${endpointOf(ctx.config)}`,
    run: async () => {},
  },
  kube: kubeImpls['port-forward'],
});

if (isMain(import.meta.url)) await main([portForward], 'tasks/port-forward.ts');
