// push-workflow: the same on every target (lib/push-workflow.ts): `digdag push` under a content-hash revision.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const pushWorkflow = byTarget('push-workflow', 'Push the workflows', { local: localImpls['push-workflow'], kube: kubeImpls['push-workflow'] });

if (isMain(import.meta.url)) await main([pushWorkflow], 'tasks/push-workflow.ts');
