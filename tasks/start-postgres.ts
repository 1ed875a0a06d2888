// start-postgres: local: a PostgreSQL owned by the project (lib/local/start-postgres.ts);
// Kubernetes: the in-cluster StatefulSet (lib/kube/start-postgres.ts). None with DATABASE_URL.
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const startPostgres = stepOf('start-postgres');

if (isMain(import.meta.url)) await main([startPostgres], 'tasks/start-postgres.ts');
