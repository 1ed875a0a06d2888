// create-secret: generate the DB password and the encryption key once (0600) — lib/local/create-secret.ts;
// on Kubernetes also apply them as Secrets — lib/kube/create-secret.ts.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const createSecret = byTarget('create-secret', 'Create secrets', { local: localImpls['create-secret'], kube: kubeImpls['create-secret'] });

if (isMain(import.meta.url)) await main([createSecret], 'tasks/create-secret.ts');
