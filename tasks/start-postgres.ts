// start-postgres: local: a PostgreSQL owned by the project (lib/local/start-postgres.ts);
// Kubernetes: the in-cluster StatefulSet (lib/kube/start-postgres.ts). None with DATABASE_URL.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const startPostgres = byTarget('start-postgres', 'Start PostgreSQL', { local: localImpls['start-postgres'], kube: kubeImpls['start-postgres'] });

if (isMain(import.meta.url)) await main([startPostgres], 'tasks/start-postgres.ts');
