// port-forward: Kubernetes only: a tracked kubectl port-forward (lib/kube/port-forward.ts).
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const portForward = byTarget('port-forward', 'Forward a local port to the UI', { local: localImpls['port-forward'], kube: kubeImpls['port-forward'] });

if (isMain(import.meta.url)) await main([portForward], 'tasks/port-forward.ts');
