// apply: local: reconcile the role processes (lib/local/apply.ts); Kubernetes: render, validate and
// apply the manifests, wait for every rollout (lib/kube/apply.ts).
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const apply = stepOf('apply');

if (isMain(import.meta.url)) await main([apply], 'tasks/apply.ts');
