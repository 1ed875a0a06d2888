// ingress: Kubernetes only (lib/kube/ingress.ts); the local UI is served directly.
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const ingress = stepOf('ingress');

if (isMain(import.meta.url)) await main([ingress], 'tasks/ingress.ts');
