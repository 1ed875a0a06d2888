// verify-ha: prove each role by what it does — written once over the target (lib/verify-ha.ts).
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const verifyHa = stepOf('verify-ha');

if (isMain(import.meta.url)) await main([verifyHa], 'tasks/verify-ha.ts');
