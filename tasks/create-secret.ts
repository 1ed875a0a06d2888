// create-secret: generate the DB password and the encryption key once (0600) — lib/local/create-secret.ts;
// on Kubernetes also apply them as Secrets — lib/kube/create-secret.ts.
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const createSecret = stepOf('create-secret');

if (isMain(import.meta.url)) await main([createSecret], 'tasks/create-secret.ts');
