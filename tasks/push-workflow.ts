// push-workflow: the same on every target (lib/push-workflow.ts): `digdag push` under a content-hash revision.
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const pushWorkflow = stepOf('push-workflow');

if (isMain(import.meta.url)) await main([pushWorkflow], 'tasks/push-workflow.ts');
