// init-db: Digdag's role, database and uuid-ossp (sql/*.sql), then the schema migrations once —
// lib/local/init-db.ts, lib/kube/init-db.ts.
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';

export const initDb = byTarget('init-db', 'Initialise the database and migrate the schema', { local: localImpls['init-db'], kube: kubeImpls['init-db'] });

if (isMain(import.meta.url)) await main([initDb], 'tasks/init-db.ts');
