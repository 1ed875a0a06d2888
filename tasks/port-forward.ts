// port-forward: Kubernetes only: a tracked kubectl port-forward (lib/kube/port-forward.ts).
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const portForward = stepOf('port-forward');

if (isMain(import.meta.url)) await main([portForward], 'tasks/port-forward.ts');
