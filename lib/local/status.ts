// status on the local target: every role process from the layout and the registry (alive, answers
// /api/version, its metrics page), the queue exporter, and the database's numbers as Digdag's
// role; the last failed attempts through the authenticated API endpoint.
import { authenticatedEndpoint } from '../auth.ts';
import type { Endpoint } from '../digdag.ts';
import { answersVersion } from '../digdag.ts';
import { requireSecrets } from '../credentials.ts';
import { localMetricsPorts } from '../metrics.ts';
import type { Ctx } from '../pipeline.ts';
import { dbEndpoint, queryAsApp } from '../postgres.ts';
import { isAlive, listProcesses } from '../processes.ts';
import { instances, runsTasks, taskRole } from '../roles.ts';
import { failedAttemptsOrProblem, parseDbNumbers, processCounters, scrape, STATUS_SQL, type ProcessStatus, type StatusReport } from '../status.ts';
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
  const problems: string[] = [];
  const registry = listProcesses(config);
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  let numbers = { waiting: 0, running: 0, attempts_running: 0, agents: [] as { agent: string; tasks: number }[] };
  try {
    numbers = parseDbNumbers(await queryAsApp(ctx.runner, config, db, STATUS_SQL));
  } catch (err) {
    problems.push(`database ${db.host}:${db.port}/${db.database}: ${(err as Error).message.split('\n').slice(-1)[0]}`);
  }
  const processes: ProcessStatus[] = await Promise.all(
    instances(config).map(async (inst, i) => {
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
        // agent.id is the instance name on this target (lib/properties.ts).
        tasksRunning: runsTasks(inst.role) ? (numbers.agents.find((a) => a.agent === inst.name)?.tasks ?? 0) : undefined,
        ...(metrics ? processCounters(metrics) : {}),
      };
    }),
  );
  const exporter = registry.find((e) => e.name === QUEUE_EXPORTER);
  const exporterUrl = queueExporterUrl(ctx);
  const endpoint: Endpoint = authenticatedEndpoint(config, endpointOf(config));
  return {
    target: config.target,
    layout: config.layout,
    at: now.toISOString(),
    endpoint: endpointOf(config),
    processes,
    queueExporter: { url: exporterUrl, up: !!exporter && isAlive(exporter) && (await probes.exporterUp(exporterUrl)) },
    queue: { waiting: Number(numbers.waiting), running: Number(numbers.running) },
    capacity: processes.filter((p) => p.role === taskRole(config.layout) && p.answers).length * config.agent.maxTaskThreads,
    attempts: { running: Number(numbers.attempts_running) },
    agents: numbers.agents.map((a) => ({ agent: a.agent, process: instances(config).some((x) => x.name === a.agent) ? a.agent : undefined, tasks: Number(a.tasks) })),
    failed: await probes.failed(endpoint, problems),
    problems,
  };
}
