// verify-ha: prove each role by what it does — lib/local/verify-ha.ts, lib/kube/verify-ha.ts.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const verifyHa = byTarget('verify-ha', 'Verify every role by its behaviour', { local: localImpls['verify-ha'], kube: kubeImpls['verify-ha'] });

if (isMain(import.meta.url)) await main([verifyHa], 'tasks/verify-ha.ts');
