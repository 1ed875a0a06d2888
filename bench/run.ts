// Benchmark (npm run bench): real Digdag on a real PostgreSQL, bursts of I/O-bound and tiny
// tasks against 1, 2 and 4 agents, and the seed's single `digdag server -m` side by side.
// Prints a table, writes bench/results/<time>.json and a PNG chart of throughput vs agents.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Resvg } from '@resvg/resvg-js';
import { isMain, ROOT } from '../lib/cli.ts';
import { loadConfig, type Config } from '../lib/config.ts';
import { attemptTasks, getAttempt, startAttempt, waitAttempt, workflowId } from '../lib/digdag-api.ts';
import { answersVersion, CLIENT_JVM_OPTS, detectJava, digdagArgv, requireRuntime } from '../lib/digdag.ts';
import { describeError } from '../lib/errors.ts';
import { runSteps } from '../lib/pipeline.ts';
import { freePortRange } from '../lib/postgres.ts';
import { stopProcess, waitFor } from '../lib/processes.ts';
import { ShellRunner } from '../lib/runner.ts';
import { buildImage } from '../tasks/build-image.ts';
import { createSecret } from '../tasks/create-secret.ts';
import { downLocal } from '../lib/local/down.ts';
import { initDb } from '../tasks/init-db.ts';
import { reconcileLocal } from '../lib/local/apply.ts';
import { startPostgres } from '../tasks/start-postgres.ts';
import { barChartSvg } from './svg-chart.ts';

const PROJECT = 'bench';
const PROJECT_DIR = path.join(ROOT, 'bench', 'workflows', PROJECT);

export interface Burst {
  name: 'io' | 'tiny';
  workflows: number;
  tasksPerWorkflow: number;
  sleepSeconds: number;
}

export interface Result {
  config: string;
  agents: number | null;
  threadsPerAgent: number | null;
  burst: Burst['name'];
  tasks: number;
  /** Submission of the first attempt to the end of the last task. */
  seconds: number;
  tasksPerSecond: number;
  /** Submission to the first task starting on an agent: fixed latency, not throughput. */
  startupSeconds: number;
  /** Tasks per second between the first task starting and the last one ending. */
  activeTasksPerSecond: number;
  makespanP50: number;
  makespanMax: number;
  delayP50: number;
  delayP95: number;
}

export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

interface Event {
  ns: bigint;
  attempt: string;
  task: string;
  kind: 'start' | 'end';
}

export function parseEvents(text: string): Event[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter((p) => p.length === 4 && /^\d+$/.test(p[0]!))
    .map(([ns, attempt, task, kind]) => ({ ns: BigInt(ns!), attempt: attempt!, task: task!, kind: kind as Event['kind'] }));
}

const ms = (e: Event) => Number(e.ns / 1_000_000n);

/** Runs one burst against an endpoint and measures it from the tasks' own start/end records. */
async function runBurst(endpoint: string, burst: Burst, eventsFile: string, log: (l: string) => void): Promise<Omit<Result, 'config' | 'agents' | 'threadsPerAgent'>> {
  fs.writeFileSync(eventsFile, '');
  fs.chmodSync(eventsFile, 0o666);
  const wf = await workflowId(endpoint, PROJECT, 'burst');
  const t0 = Date.now();
  const base = Math.floor(t0 / 1000) * 1000;
  const ids: string[] = [];
  for (let i = 0; i < burst.workflows; i++) {
    // Session times must be unique per workflow: one second apart in the past.
    ids.push(await startAttempt(endpoint, wf, new Date(base - (i + 1) * 1000 - Math.floor(Math.random() * 1e6) * 1000), {
      tasks: burst.tasksPerWorkflow,
      sleep_seconds: burst.sleepSeconds,
      events: eventsFile,
    }));
  }
  const timeout = (burst.workflows * burst.tasksPerWorkflow * (burst.sleepSeconds + 2) + 180) * 1000;
  const attempts = await Promise.all(ids.map((id) => waitAttempt(endpoint, id, timeout)));
  const failed = attempts.filter((a) => !a.success);
  if (failed.length) throw new Error(`${failed.length} attempts failed (e.g. ${failed[0]!.id})`);
  const events = parseEvents(fs.readFileSync(eventsFile, 'utf8'));
  const starts = events.filter((e) => e.kind === 'start');
  const ends = events.filter((e) => e.kind === 'end');
  const n = burst.workflows * burst.tasksPerWorkflow;
  if (starts.length < n || ends.length < n) throw new Error(`expected ${n} task records, got ${starts.length} starts and ${ends.length} ends`);
  const end = Math.max(...ends.map(ms));
  const firstStart = Math.min(...starts.map(ms));
  const seconds = (end - t0) / 1000;
  // Queue wait: when an agent started the task minus when the executor queued it (startedAt).
  const delays: number[] = [];
  for (const id of ids) {
    const tasks = await attemptTasks(endpoint, id);
    for (const s of starts.filter((e) => e.attempt === id)) {
      const t = tasks.find((x) => x.fullName === s.task);
      if (t?.startedAt) delays.push((ms(s) - Date.parse(t.startedAt)) / 1000);
    }
  }
  const makespans = await Promise.all(ids.map(async (id) => {
    const a = await getAttempt(endpoint, id);
    return (Date.parse(a.finishedAt!) - Date.parse(a.createdAt)) / 1000;
  }));
  log(`  ${burst.name}: ${n} tasks in ${seconds.toFixed(1)}s`);
  return {
    burst: burst.name,
    tasks: n,
    seconds,
    tasksPerSecond: n / seconds,
    startupSeconds: (firstStart - t0) / 1000,
    activeTasksPerSecond: n / ((end - firstStart) / 1000),
    makespanP50: percentile(makespans, 50),
    makespanMax: Math.max(...makespans),
    delayP50: percentile(delays, 50),
    delayP95: percentile(delays, 95),
  };
}

async function pushBench(config: Config, runner: ShellRunner, endpoint: string): Promise<void> {
  const java = await detectJava(config, runner);
  await runner.run({ argv: digdagArgv(java, requireRuntime(config), CLIENT_JVM_OPTS, ['push', PROJECT, '--project', PROJECT_DIR, '-e', endpoint]), mutates: true });
}

export function renderTable(results: readonly Result[]): string {
  const head = ['configuration', 'burst', 'tasks', 'seconds', 'tasks/s', 'speed-up', 'startup s', 'active tasks/s', 'speed-up', 'makespan p50/max s', 'ready→start p50/p95 s'];
  const one = (b: string) => results.find((r) => r.agents === 1 && r.burst === b);
  const rows = results.map((r) => [
    r.config,
    r.burst,
    String(r.tasks),
    r.seconds.toFixed(1),
    r.tasksPerSecond.toFixed(2),
    one(r.burst) ? `${(r.tasksPerSecond / one(r.burst)!.tasksPerSecond).toFixed(2)}x` : '',
    r.startupSeconds.toFixed(1),
    r.activeTasksPerSecond.toFixed(2),
    one(r.burst) ? `${(r.activeTasksPerSecond / one(r.burst)!.activeTasksPerSecond).toFixed(2)}x` : '',
    `${r.makespanP50.toFixed(1)} / ${r.makespanMax.toFixed(1)}`,
    `${r.delayP50.toFixed(2)} / ${r.delayP95.toFixed(2)}`,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  return [line(head), line(w.map((x) => '-'.repeat(x))), ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      agents: { type: 'string', default: '1,2,4' },
      threads: { type: 'string', default: '4' },
      workflows: { type: 'string', default: '8' },
      tasks: { type: 'string', default: '8' },
      sleep: { type: 'string', default: '3' },
      'tiny-workflows': { type: 'string', default: '8' },
      'tiny-tasks': { type: 'string', default: '8' },
      'no-baseline': { type: 'boolean', default: false },
    },
  });
  const agentCounts = values.agents.split(',').map(Number);
  const bursts: Burst[] = [
    { name: 'io', workflows: Number(values.workflows), tasksPerWorkflow: Number(values.tasks), sleepSeconds: Number(values.sleep) },
    { name: 'tiny', workflows: Number(values['tiny-workflows']), tasksPerWorkflow: Number(values['tiny-tasks']), sleepSeconds: 0 },
  ];
  const log = (l: string) => process.stdout.write(`${l}\n`);
  const runner = new ShellRunner(false, () => {});
  const stateRoot = path.join(ROOT, '.state', 'bench');
  const eventsFile = path.join('/tmp', `digdag-ha-bench-${process.pid}.log`);
  const portBase = await freePortRange(4 + Math.max(...agentCounts), 47000, 20);
  const configFor = (agents: number) =>
    loadConfig({
      root: ROOT,
      env: process.env,
      overrides: {
        DIGDAG_HA_TARGET: 'local',
        DIGDAG_HA_STATE_DIR: stateRoot,
        LOCAL_PORT_BASE: String(portBase),
        UI_REPLICAS: '1',
        WORKFLOW_REPLICAS: '1',
        SCHEDULER_REPLICAS: '0',
        AGENT_REPLICAS: String(agents),
        AGENT_MAX_TASK_THREADS: values.threads,
      },
    });
  const results: Result[] = [];
  const first = configFor(agentCounts[0]!);
  const ctx = { config: first, runner, force: false, started: [], facts: {} };
  try {
    await runSteps([buildImage, createSecret, startPostgres, initDb], ctx, { renderer: 'silent' });
    let pushed = false;
    for (const agents of agentCounts) {
      const config = configFor(agents);
      const c = { ...ctx, config };
      log(`HA layout: ui 1, workflow 1, agents ${agents} x ${values.threads} threads`);
      await reconcileLocal(c);
      const endpoint = `http://127.0.0.1:${portBase}`;
      if (!pushed) await pushBench(config, runner, endpoint);
      pushed = true;
      for (const b of bursts) {
        results.push({ config: `HA, ${agents} agent${agents > 1 ? 's' : ''}`, agents, threadsPerAgent: Number(values.threads), ...(await runBurst(endpoint, b, eventsFile, log)) });
      }
    }
    await downLocal(ctx, false);
    if (!values['no-baseline']) {
      // The seed's layout: one `digdag server -m` process, in-memory database — as the seed runs
      // it (agent threads unbounded) and capped at one agent's threads for a like-for-like row.
      for (const threads of [null, Number(values.threads)]) {
        const label = threads ? `seed: server -m, ${threads} threads` : 'seed: server -m';
        log(`baseline: ${label}`);
        const port = await freePortRange(1, 48500, 20);
        const java = await detectJava(first, runner);
        const logFile = path.join(stateRoot, 'baseline.log');
        const extra = threads ? ['--max-task-threads', String(threads)] : [];
        const pid = await runner.spawnBackground({ argv: digdagArgv(java, requireRuntime(first), first.digdag.jvmOpts, ['server', '-m', '-b', '127.0.0.1', '-n', String(port), ...extra]), logFile, cwd: stateRoot });
        const entry = { name: 'baseline', pid, marker: '-m', logFile, startedAt: '' };
        try {
          const endpoint = `http://127.0.0.1:${port}`;
          if (!(await waitFor(async () => !!(await answersVersion(endpoint)), 120_000, 500))) throw new Error(`baseline did not start; see ${logFile}`);
          await pushBench(first, runner, endpoint);
          for (const b of bursts) results.push({ config: label, agents: null, threadsPerAgent: threads, ...(await runBurst(endpoint, b, eventsFile, log)) });
        } finally {
          await stopProcess(entry, 30_000);
        }
      }
    }
  } finally {
    await downLocal(ctx, false);
    fs.rmSync(eventsFile, { force: true });
  }

  const table = renderTable(results);
  log(`\n${table}`);
  const outDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const json = path.join(outDir, `${stamp}.json`);
  fs.writeFileSync(json, JSON.stringify({ at: new Date().toISOString(), bursts, threadsPerAgent: Number(values.threads), results }, null, 2) + '\n');
  const svg = barChartSvg(`Digdag throughput (${values.threads} threads per agent)`, 'tasks / second', bursts.map((b) => ({
    name: b.name === 'io' ? `I/O-bound: ${b.workflows}x${b.tasksPerWorkflow} x sleep ${b.sleepSeconds}s` : `tiny: ${b.workflows}x${b.tasksPerWorkflow} x true`,
    bars: results.filter((r) => r.burst === b.name).map((r) => ({ label: r.agents ? `${r.agents} agent${r.agents > 1 ? 's' : ''}` : r.threadsPerAgent ? `-m ${r.threadsPerAgent}t` : 'server -m', value: r.tasksPerSecond })),
  })));
  const png = path.join(outDir, `${stamp}.png`);
  fs.writeFileSync(png, new Resvg(svg, { font: { loadSystemFonts: true } }).render().asPng());
  log(`\nwrote ${path.relative(ROOT, json)} and ${path.relative(ROOT, png)}`);
}

if (isMain(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = 1;
  });
}
