// Runs the whole pipeline in order with Listr2 progress: --only/--from/--skip select tasks.
import { isMain, main } from '../lib/cli.ts';
import { ALL_STEPS } from './steps.ts';

export { ALL_STEPS };

if (isMain(import.meta.url)) await main(ALL_STEPS, 'tasks/all.ts');
