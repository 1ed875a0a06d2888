// apply: local: reconcile the role processes (lib/local/apply.ts); Kubernetes: render, validate and
// apply the manifests, wait for every rollout (lib/kube/apply.ts).
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const apply = byTarget('apply', 'Start the Digdag roles', { local: localImpls['apply'], kube: kubeImpls['apply'] });

if (isMain(import.meta.url)) await main([apply], 'tasks/apply.ts');
