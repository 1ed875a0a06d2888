// The Helm chart under test: `helm template` with --set values, and NOTES.txt rendered the same way.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../../lib/cli.ts';
import type { Config } from '../../lib/config.ts';
import { dbLocation, parseObjects, POD_PORT, type KubeObject } from '../../lib/kube/render.ts';
import { POD_METRICS } from '../../lib/metrics.ts';
import { migrateProperties, serverProperties } from '../../lib/properties.ts';
import { ROLES } from '../../lib/roles.ts';
import { helmBin } from './tools.ts';
import { tempDir } from './fixtures.ts';

export const CHART = path.join(ROOT, 'chart', 'digdag-ha');

export interface Rendered { objects: KubeObject[]; stderr: string; status: number }

/** `helm template dd CHART -n digdag --set …` (tests included, as `helm template` renders them). */
export function helmTemplate(set: string[] = [], chart = CHART): Rendered {
  const r = spawnSync(helmBin(), ['template', 'dd', chart, '--namespace', 'digdag', ...set.flatMap((s) => ['--set', s])], { encoding: 'utf8' });
  return { objects: r.status === 0 ? parseObjects(r.stdout) : [], stderr: r.stderr, status: r.status ?? 1 };
}

/** NOTES.txt as `helm install` would print it (helm template prints no NOTES): a copy of the chart
 * renders it through `tpl` into a ConfigMap. lookup finds nothing here, as under helm template. */
export function helmNotes(set: string[] = []): string {
  const chart = path.join(tempDir('digdag-ha-notes-'), 'digdag-ha');
  fs.cpSync(CHART, chart, { recursive: true });
  fs.copyFileSync(path.join(chart, 'templates', 'NOTES.txt'), path.join(chart, 'notes-probe.txt'));
  fs.writeFileSync(path.join(chart, 'templates', 'notes-probe.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-probe\ndata:\n  notes: {{ tpl (.Files.Get "notes-probe.txt") . | toJson }}\n');
  const r = helmTemplate(set, chart);
  if (r.status !== 0) throw new Error(r.stderr);
  return r.objects.find((o) => o.metadata.name === 'notes-probe')!.data!.notes!;
}

/** What lib/properties.ts's table gives a pod of this config: every role's file and the migration's (the ConfigMap digdag-config). */
export function podProperties(config: Config): Record<string, string> {
  const db = dbLocation(config);
  const at = { bind: '0.0.0.0', port: POD_PORT, jmxPort: POD_METRICS.jmxPort, dbHost: db.host, dbPort: db.port, dbName: db.database, dbUser: db.user };
  return {
    ...Object.fromEntries(ROLES.map((role) => [`${role}.properties`, serverProperties(config, role, at)])),
    'migrate.properties': migrateProperties(at),
  };
}
