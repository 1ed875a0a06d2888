// init-db: Digdag's role, database and uuid-ossp (sql/*.sql), then the schema migrations once —
// lib/local/init-db.ts, lib/kube/init-db.ts.
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const initDb = stepOf('init-db');

if (isMain(import.meta.url)) await main([initDb], 'tasks/init-db.ts');
