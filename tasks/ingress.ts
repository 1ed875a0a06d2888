// ingress: Kubernetes only (lib/kube/ingress.ts); the local UI is served directly.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const ingress = byTarget('ingress', 'Expose the UI through an Ingress', { local: localImpls['ingress'], kube: kubeImpls['ingress'] });

if (isMain(import.meta.url)) await main([ingress], 'tasks/ingress.ts');
