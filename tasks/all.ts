// Runs the whole pipeline in order with Listr2 progress: --only/--from/--skip select tasks.
import { isMain, main } from '../lib/cli.ts';
import type { Step } from '../lib/pipeline.ts';
import { apply } from './apply.ts';
import { buildImage } from './build-image.ts';
import { createSecret } from './create-secret.ts';
import { ingress } from './ingress.ts';
import { initDb } from './init-db.ts';
import { portForward } from './port-forward.ts';
import { pushWorkflow } from './push-workflow.ts';
import { startPostgres } from './start-postgres.ts';
import { verifyHa } from './verify-ha.ts';

/** The pipeline, in TASK_ORDER. */
export const ALL_STEPS: readonly Step[] = [buildImage, createSecret, startPostgres, initDb, apply, ingress, portForward, pushWorkflow, verifyHa];

if (isMain(import.meta.url)) await main(ALL_STEPS, 'tasks/all.ts');
