// status on the local target: every role process from the layout and the registry (alive, answers
// /api/version, its metrics page), the queue exporter, and the database's numbers as Digdag's
// role; the last failed attempts through the authenticated API endpoint.
import { authenticatedEndpoint } from '../auth.ts';
import { answersVersion } from '../digdag.ts';
import { requireSecrets } from '../credentials.ts';
import { localMetricsPorts } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { isAlive, listProcesses } from '../processes.ts';
import { instances, runsTasks } from '../roles.ts';
import { failedAttemptsOrProblem, fixedCount, fixedNote, processCounters, scrape, statusReport, type ProcessStatus, type StatusReport } from '../status.ts';
import { endpointOf } from './apply.ts';
import { QUEUE_EXPORTER, queueExporterUp, queueExporterUrl } from './queue-exporter.ts';

/** The network calls status makes, replaceable in tests. */
export interface Probes {
  version(url: string): Promise<string | undefined>;
  scrape(url: string): Promise<string | undefined>;
  failed: typeof failedAttemptsOrProblem;
  exporterUp(url: string): Promise<boolean>;
}

export const realProbes: Probes = { version: answersVersion, scrape, failed: failedAttemptsOrProblem, exporterUp: queueExporterUp };

export async function localStatus(ctx: Ctx, probes: Probes = realProbes, now = new Date()): Promise<StatusReport> {
  const { config } = ctx;
  const registry = listProcesses(config);
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  return statusReport(config, {
    endpoint: authenticatedEndpoint(config, endpointOf(config)),
    query: (sql) => queryAsApp(ctx.runner, config, db, sql),
    where: `database ${db.host}:${db.port}/${db.database}`,
    processes: (tasksOf) => Promise.all(
      instances(config).map(async (inst, i): Promise<ProcessStatus> => {
        const entry = registry.find((e) => e.name === inst.name);
        const alive = !!entry && isAlive(entry);
        const port = entry?.port ?? config.local.portBase + i;
        const metricsUrl = `http://127.0.0.1:${entry?.metricsPort ?? localMetricsPorts(config, i).metrics}/metrics`;
        const [version, metrics] = alive ? await Promise.all([probes.version(`http://127.0.0.1:${port}`), probes.scrape(metricsUrl)]) : [undefined, undefined];
        return {
          name: inst.name,
          role: inst.role,
          state: alive ? 'running' : 'down',
          pid: alive ? entry!.pid : undefined,
          answers: !!version,
          metricsUrl,
          metricsAnswers: !!metrics,
          tasksRunning: runsTasks(inst.role) ? tasksOf(inst.name) : undefined,
          ...(metrics ? processCounters(metrics) : {}),
        };
      }),
    ),
    queueExporter: async () => {
      const exporter = registry.find((e) => e.name === QUEUE_EXPORTER);
      const url = queueExporterUrl(ctx);
      return { url, up: !!exporter && isAlive(exporter) && (await probes.exporterUp(url)) };
    },
    // agent.id is the instance name on this target (lib/properties.ts).
    processOfAgent: (agent) => (instances(config).some((x) => x.name === agent) ? agent : undefined),
    // Processes on this machine: nothing changes their number but apply.
    autoscaler: async (processes) => fixedCount(config, processes, fixedNote(config)),
  }, probes.failed, now);
}
