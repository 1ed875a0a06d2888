// Benchmark (npm run bench, not a test). Local (the default): real Digdag on a real PostgreSQL in both role layouts
// (worker, split) and the seed's single `digdag server -m`, side by side in one run — latency
// (sequential and fan-out tiny tasks), throughput at equal total agent threads and over 1/2/4
// workers, and PostgreSQL load idle and under the bursts. Prints three tables, writes
// bench/results/<time>.json and PNG charts. Runs in its own state dir (.state/bench) on free
// ports, and stops everything it started, also on failure or Ctrl-C. --target cluster: the cluster
// mode (bench/cluster.ts), fixed worker counts and KEDA on one burst on the own cluster.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { authenticatedEndpoint } from '../lib/auth.ts';
import { isMain, makeCtx } from '../lib/cli.ts';
import { loadConfig, type Config } from '../lib/config.ts';
import { requireSecrets } from '../lib/credentials.ts';
import { startAttempt, waitAttempt, workflowId } from '../lib/digdag-api.ts';
import { detectJava, digdagArgv, requireRuntime, type Endpoint } from '../lib/digdag.ts';
import { describeError } from '../lib/errors.ts';
import { endpointOf, reconcileLocal, waitHealthy } from '../lib/local/apply.ts';
import { downLocal } from '../lib/local/down.ts';
import { ROOT } from '../lib/paths.ts';
import { runSteps, type Ctx } from '../lib/pipeline.ts';
import { freePortRange } from '../lib/ports.ts';
import { dbEndpoint, localPostgres, ownedPort, queryAsApp, superuserPsql } from '../lib/postgres.ts';
import { listProcesses, registerProcess, stopProcess, unregisterProcess, type ProcessEntry } from '../lib/processes.ts';
import { pushProject } from '../lib/push-workflow.ts';
import { ShellRunner, type Runner } from '../lib/runner.ts';
import { writePrivateFile } from '../lib/state.ts';
import { buildImage } from '../tasks/build-image.ts';
import { createSecret } from '../tasks/create-secret.ts';
import { initDb } from '../tasks/init-db.ts';
import { startPostgres } from '../tasks/start-postgres.ts';
import { busyFraction, readMachineCpu, parseEvents, parseProcStat, ratePerSecond, spanOf, taskSpans, ticksPerEntry, type CpuTimes, type ProcTimes } from './measure.ts';
import { latencyBars, renderReport, setupLabel, throughputBars, type BurstResult, type IdleResult, type LatencyResult, type Report, type Setup } from './report.ts';
import { barChartSvg, clusterChartSpec, renderSvg, svgToPng, timelineSpec } from './charts.ts';
import { clusterBench } from './cluster.ts';
import { clusterBarRows, clusterBenchOptions, renderClusterReport, timelineRows, type ClusterBenchOptions, type ClusterRun } from './cluster-report.ts';
import { benchOptions, writeBenchProject, type BenchOptions, type Burst } from './workloads.ts';
import { countsDelta, digdagCounts, parseStatementsReading, READ_STATEMENTS_SQL, RESET_STATEMENTS_SQL, workloadCost, type DigdagCounts, type StatementsReading, type WorkloadCost } from './statements.ts';

const PROJECT = 'bench';
const BURST_DIG = path.join(ROOT, 'bench', 'workflows', PROJECT, 'burst.dig');

const USAGE = `usage: npm run bench -- [flags]

  --quick                 a short run (1 repetition, smaller bursts, 1 and 2 workers)
  --configs a,b           which to run, in order: worker,split,server-m (default all three)
  --threads N             agent threads per worker/agent (default 4)
  --workers 1,2,4         worker counts for the scaling rows (worker layout)
  --equal N               workers (and split agents) at equal total threads; server -m gets N x threads
  --reps N                repetitions of each latency workload (default 3)
  --seq-tasks N           sequential tiny tasks (default 10)
  --fanout-tasks N        parallel tiny tasks (default 24)
  --settle S              idle seconds before each latency run (default 6: executor loops back off to 5 s polls)
  --idle-seconds S        window for idle PostgreSQL load (default 20)

  --target cluster        the cluster mode instead: one burst on the project's own cluster (brought up
                          with KEDA when it is not up, taken down afterwards), on fixed worker counts
                          and on KEDA scaling the workers on the queue; needs root and the Digdag runtime
    --attempts N          attempts in the burst (default 50; --quick 12)
    --tasks N             sh> tasks per attempt, in parallel (default 4)
    --sleep S             each task's sleep (default 5)
    --threads N           agent threads per worker (default 4)
    --layout worker|split worker (default): each worker an executor loop + an agent; split: the counts
                          below are agents, the executor loop runs apart in --executors processes
    --executors K         split only: workflow (executor loop) processes (default 1)
    --fixed 1,2,4|none    fixed worker (split: agent) counts, a run each (default 1,2,4)
    --keda MIN-MAX|none   KEDA's range of workers (split: agents), run last (default 1-4)
    --keda-bursts N       KEDA's burst N times, for the median reaction and drain (default 1)
    --polling S --cooldown S --scale-down-period S
                          KEDA's polling, cooldown and scale-down period (default 5, 30, 15)
    --keep                leave the cluster and the deployment up

  --charts FILE           no run: the tables and charts again from a run's bench/results/*.json
`;

/** A running configuration the workloads are sent to. */
interface Target {
  setup: Setup;
  endpoint: Endpoint;
  /** Cumulative transactions of the digdag database; absent for server -m (in-memory H2). */
  pgTx?: () => Promise<number>;
  /** CPU ticks of the bench's own processes so far. */
  ownTicks: () => number;
  /** Where a workload's time goes (layouts on PostgreSQL): statements and Digdag's counters per window. */
  cost?: CostProbe;
}

/** One measured window of a workload: its start reading; closed by CostProbe.end. */
interface CostWindow {
  t0: number;
  txBefore: number;
  pgReads: number;
  counts: Record<string, DigdagCounts>;
  ticks: Record<string, number>;
}
type ClosedWindow = { seconds: number; txBefore: number; after: StatementsReading; digdag: Record<string, DigdagCounts>; cpuTicks: Record<string, number> };

interface CostProbe {
  begin(): Promise<CostWindow>;
  end(w: CostWindow): Promise<ClosedWindow>;
  /** The workload's cost from its windows, kept in the report. */
  add(workload: WorkloadCost['workload'], tasks: number, windows: readonly ClosedWindow[]): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * CPU ticks of everything the bench runs, per registered process (Digdag roles or server -m with
 * their sh> tasks, the PostgreSQL postmaster with its backends; bench/measure.ts ticksPerEntry).
 * Set against /proc/stat it tells the bench's share from other programs on a shared machine.
 */
function ticksByProcess(config: Config): Record<string, number> {
  const procs: ProcTimes[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      procs.push(parseProcStat(fs.readFileSync(`/proc/${d}/stat`, 'utf8')));
    } catch {
      // gone meanwhile
    }
  }
  return ticksPerEntry(procs, listProcesses(config));
}

const benchTicks = (config: Config): number => Object.values(ticksByProcess(config)).reduce((a, b) => a + b, 0);

/** Session times must be unique per workflow: one second apart, a day in the past. */
let sessions = 0;
const sessionBase = Math.floor(Date.now() / 1000) * 1000 - 86_400_000;
const nextSessionTime = () => new Date(sessionBase - ++sessions * 1000);

/** The digdag database's transactions so far; `reads` counts the readings (each is a transaction). */
async function pgTxCounter(runner: Runner, config: Config): Promise<{ read: () => Promise<number>; reads: () => number }> {
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  const sql = 'SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()';
  let reads = 0;
  return {
    read: async () => {
      reads++;
      return Number(await queryAsApp(runner, config, db, sql));
    },
    reads: () => reads,
  };
}

/** Digdag's counters of every role process that exports metrics (absent: a scrape that failed). */
async function scrapeDigdag(config: Config): Promise<Record<string, DigdagCounts>> {
  const out: Record<string, DigdagCounts> = {};
  await Promise.all(
    listProcesses(config)
      .filter((e) => e.role && e.metricsPort)
      .map(async (e) => {
        try {
          const res = await fetch(`http://127.0.0.1:${e.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
          if (res.ok) out[e.name] = digdagCounts(await res.text());
        } catch {
          // not counted: the table shows '-' for a process without readings
        }
      }),
  );
  return out;
}

/**
 * pg_stat_statements (reset as the superuser over the socket before a window, read as Digdag's role
 * after it) with the transactions of pg_stat_database, and Digdag's counters before and after.
 */
async function costProbe(runner: Runner, config: Config, setup: Setup, tx: { read: () => Promise<number>; reads: () => number }, costs: WorkloadCost[]): Promise<CostProbe> {
  const db = await dbEndpoint(config, requireSecrets(config).dbPassword);
  const pg = localPostgres(config);
  const port = await ownedPort(config, pg);
  const layout = setup.layout as WorkloadCost['layout'];
  return {
    begin: async () => {
      const counts = await scrapeDigdag(config);
      const txBefore = await tx.read();
      await runner.run({ argv: superuserPsql(pg, port, db.database), input: RESET_STATEMENTS_SQL, quiet: true });
      return { t0: Date.now(), txBefore, pgReads: tx.reads(), counts, ticks: ticksByProcess(config) };
    },
    end: async (w) => {
      const ticks = ticksByProcess(config);
      const cpuTicks = Object.fromEntries(Object.entries(ticks).filter(([p]) => w.ticks[p] !== undefined).map(([p, t]) => [p, t - w.ticks[p]!]));
      const after = parseStatementsReading(await queryAsApp(runner, config, db, READ_STATEMENTS_SQL));
      const seconds = (Date.now() - w.t0) / 1000;
      const now = await scrapeDigdag(config);
      const digdag = Object.fromEntries(Object.entries(now).filter(([p]) => w.counts[p]).map(([p, c]) => [p, countsDelta(w.counts[p]!, c)]));
      // The counter's readings inside the window are the bench's transactions, not Digdag's.
      return { seconds, txBefore: w.txBefore + (tx.reads() - w.pgReads), after, digdag, cpuTicks };
    },
    add: (workload, tasks, windows) => costs.push(workloadCost({ layout, processes: setup.processes, threadsPerProcess: setup.threadsPerProcess, workload, tasks }, windows)),
  };
}

/** PostgreSQL transactions/s with nothing submitted (the executor loops, agents and scheduler polling). */
async function measureIdle(t: Target, seconds: number, log: (l: string) => void): Promise<IdleResult> {
  if (!t.pgTx) return { ...t.setup, seconds, pgTxPerSecond: null };
  const w = await t.cost?.begin();
  const a = await t.pgTx();
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const b = await t.pgTx();
  const secs = (Date.now() - t0) / 1000;
  if (w) t.cost!.add('idle', 0, [await t.cost!.end(w)]);
  // The first reading's own transaction is counted by the second.
  const rate = ratePerSecond(a, b, secs, 1);
  log(`  idle: ${rate.toFixed(1)} PostgreSQL tx/s over ${secs.toFixed(0)}s`);
  return { ...t.setup, seconds: secs, pgTxPerSecond: rate };
}

/** One attempt at a time, each after an idle pause: what a user submitting to a quiet system sees. */
async function runLatency(t: Target, workload: LatencyResult['workload'], tasks: number, o: BenchOptions, eventsFile: string, log: (l: string) => void): Promise<LatencyResult> {
  const wf = await workflowId(t.endpoint, PROJECT, workload === 'sequential' ? 'seq' : 'fanout');
  const out: LatencyResult = { ...t.setup, workload, tasks, endToEnd: [], firstStart: [] };
  const windows: ClosedWindow[] = [];
  for (let rep = 0; rep < o.reps; rep++) {
    await sleep(o.settleSeconds * 1000);
    fs.writeFileSync(eventsFile, '');
    const w = await t.cost?.begin();
    const t0 = Date.now();
    const id = await startAttempt(t.endpoint, wf, nextSessionTime(), { events: eventsFile });
    const a = await waitAttempt(t.endpoint, id, (tasks * 10 + 120) * 1000);
    if (w) windows.push(await t.cost!.end(w));
    if (!a.success) throw new Error(`${workload} attempt ${id} failed on ${setupLabel(t.setup)}`);
    const events = parseEvents(fs.readFileSync(eventsFile, 'utf8'));
    const span = spanOf(events, id);
    if (span.starts < tasks || span.ends < tasks) throw new Error(`${workload} attempt ${id}: expected ${tasks} task records, got ${span.starts} starts and ${span.ends} ends`);
    out.endToEnd.push((span.lastEndMs - t0) / 1000);
    out.firstStart.push((span.firstStartMs - t0) / 1000);
    (out.taskSpans ??= []).push(taskSpans(events, id, t0));
  }
  t.cost?.add(workload, tasks * o.reps, windows);
  log(`  ${workload} (${tasks} tasks): end-to-end ${out.endToEnd.map((s) => s.toFixed(2)).join(', ')} s; first start ${out.firstStart.map((s) => s.toFixed(2)).join(', ')} s`);
  return out;
}

/** All attempts of a burst submitted at once; measured from the tasks' own start/end records. */
async function runBurst(t: Target, b: Burst, eventsFile: string, log: (l: string) => void): Promise<BurstResult> {
  const own0 = t.ownTicks();
  fs.writeFileSync(eventsFile, '');
  const wf = await workflowId(t.endpoint, PROJECT, 'burst');
  const w = await t.cost?.begin();
  const tx0 = await t.pgTx?.();
  const cpu0 = readMachineCpu();
  const w0 = Date.now();
  const submitted: { id: string; at: number }[] = [];
  for (let i = 0; i < b.workflows; i++) {
    const at = Date.now();
    submitted.push({ at, id: await startAttempt(t.endpoint, wf, nextSessionTime(), { tasks: b.tasksPerWorkflow, sleep_seconds: b.sleepSeconds, events: eventsFile }) });
  }
  const timeout = (b.workflows * b.tasksPerWorkflow * (b.sleepSeconds + 2) + 180) * 1000;
  const attempts = await Promise.all(submitted.map((s) => waitAttempt(t.endpoint, s.id, timeout)));
  const cpu1 = readMachineCpu();
  const own1 = t.ownTicks();
  const tx1 = await t.pgTx?.();
  const window = (Date.now() - w0) / 1000;
  if (w) t.cost!.add(b.name, b.workflows * b.tasksPerWorkflow, [await t.cost!.end(w)]);
  const failed = attempts.filter((a) => !a.success);
  if (failed.length) throw new Error(`${failed.length} ${b.name} burst attempts failed on ${setupLabel(t.setup)} (e.g. ${failed[0]!.id})`);
  const events = parseEvents(fs.readFileSync(eventsFile, 'utf8'));
  const n = b.workflows * b.tasksPerWorkflow;
  const all = spanOf(events);
  if (all.starts < n || all.ends < n) throw new Error(`${b.name} burst: expected ${n} task records, got ${all.starts} starts and ${all.ends} ends`);
  const seconds = (all.lastEndMs - submitted[0]!.at) / 1000;
  const r: BurstResult = {
    ...t.setup,
    burst: b.name,
    tasks: n,
    seconds,
    tasksPerSecond: n / seconds,
    firstStart: submitted.map((s) => (spanOf(events, s.id).firstStartMs - s.at) / 1000),
    pgTxPerSecond: tx0 === undefined || tx1 === undefined ? null : ratePerSecond(tx0, tx1, window, 1),
    cpuBusy: busyFraction(cpu0, cpu1),
    cpuBench: (own1 - own0) / (cpu1.total - cpu0.total),
  };
  log(`  ${b.name} burst: ${n} tasks in ${seconds.toFixed(1)}s (${r.tasksPerSecond.toFixed(2)}/s), CPU ${Math.round(r.cpuBusy * 100)}% (bench ${Math.round(r.cpuBench * 100)}%)${r.pgTxPerSecond === null ? '' : `, ${r.pgTxPerSecond.toFixed(1)} PostgreSQL tx/s`}`);
  return r;
}

/** The seed's layout: one `digdag server -m` (in-memory database), registered for teardown. */
async function startServerM(ctx: Ctx, threads: number): Promise<{ entry: ProcessEntry; url: string }> {
  const config = ctx.config;
  const port = await freePortRange(1, 48500, 20);
  // -c: only this file is read, never the user's ~/.config/digdag/config.
  const props = path.join(config.stateDir, 'props', 'server-m.properties');
  writePrivateFile(props, '# digdag-ha bench: the seed\'s single `digdag server -m`; everything else is Digdag\'s default.\n');
  const java = await detectJava(config, ctx.runner);
  const argv = digdagArgv(java, requireRuntime(config), config.digdag.jvmOpts, ['server', '-m', '-c', props, '-b', '127.0.0.1', '-n', String(port), '--max-task-threads', String(threads)]);
  const logFile = path.join(config.stateDir, 'logs', 'server-m.log');
  const pid = await ctx.runner.spawnBackground({ argv, logFile, cwd: config.stateDir });
  const entry: ProcessEntry = { name: 'server-m', pid, port, marker: props, logFile, startedAt: new Date().toISOString(), stopWith: 'signal' };
  registerProcess(config, entry);
  await waitHealthy(entry);
  return { entry, url: `http://127.0.0.1:${port}` };
}

/** Stops the role processes (PostgreSQL keeps running). */
async function stopRoles(ctx: Ctx, log: (l: string) => void): Promise<void> {
  const roles = listProcesses(ctx.config).filter((e) => e.role);
  for (const e of roles) {
    log(`  ${e.name}: ${await stopProcess(e, 60_000)}`);
    unregisterProcess(ctx.config, e.name);
  }
}

/** Idle load, latency workloads and bursts against one running configuration. */
async function measure(t: Target, o: BenchOptions, full: boolean, report: Report, eventsFile: string, log: (l: string) => void): Promise<void> {
  if (full) {
    report.idle.push(await measureIdle(t, o.idleSeconds, log));
    report.latency.push(await runLatency(t, 'sequential', o.seqTasks, o, eventsFile, log));
    report.latency.push(await runLatency(t, 'fan-out', o.fanoutTasks, o, eventsFile, log));
  }
  for (const b of o.bursts) report.bursts.push(await runBurst(t, b, eventsFile, log));
}

async function writeOutputs(report: Report, o: BenchOptions, log: (l: string) => void): Promise<void> {
  const outDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const json = path.join(outDir, `${stamp}.json`);
  fs.writeFileSync(json, JSON.stringify({ at: new Date().toISOString(), options: o, cpus: (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s/gm) ?? []).length, ...report }, null, 2) + '\n');
  const png = (file: string, svg: string) => fs.writeFileSync(file, svgToPng(svg));
  const [io, tiny] = [o.bursts.find((b) => b.name === 'io')!, o.bursts.find((b) => b.name === 'tiny')!];
  png(path.join(outDir, `${stamp}.png`), await barChartSvg(`Digdag throughput (${o.threads} threads per worker/agent)`, 'tasks / second', [
    { name: `I/O-bound: ${io.workflows}x${io.tasksPerWorkflow} x sleep ${io.sleepSeconds}s`, bars: throughputBars(report.bursts, 'io') },
    { name: `tiny: ${tiny.workflows}x${tiny.tasksPerWorkflow} x true`, bars: throughputBars(report.bursts, 'tiny') },
  ]));
  png(path.join(outDir, `${stamp}-latency.png`), await barChartSvg('Digdag latency (median end-to-end)', 'seconds', [
    { name: `${o.seqTasks} sequential tiny tasks`, bars: latencyBars(report.latency, 'sequential') },
    { name: `${o.fanoutTasks} parallel tiny tasks`, bars: latencyBars(report.latency, 'fan-out') },
  ]));
  log(`\nwrote ${path.relative(ROOT, json)}, ${path.relative(ROOT, outDir)}/${stamp}.png and ${stamp}-latency.png`);
}

async function writeClusterOutputs(o: ClusterBenchOptions, runs: readonly ClusterRun[], log: (l: string) => void): Promise<void> {
  const outDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const stamp = `${new Date().toISOString().replace(/[:.]/g, '-')}-cluster`;
  const json = path.join(outDir, `${stamp}.json`);
  fs.writeFileSync(json, JSON.stringify({ at: new Date().toISOString(), target: 'cluster', options: o, cpus: (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s/gm) ?? []).length, runs }, null, 2) + '\n');
  const burst = `${o.attempts} × ${o.tasksPerAttempt} sleep ${o.sleepSeconds}s`;
  fs.writeFileSync(path.join(outDir, `${stamp}.png`), svgToPng(await renderSvg(clusterChartSpec(`Digdag on the own cluster: ${burst}, ${o.threads} threads per worker`, clusterBarRows(runs)))));
  fs.writeFileSync(path.join(outDir, `${stamp}-timeline.png`), svgToPng(await renderSvg(timelineSpec(`The burst over time (${burst}): the queue and the workers`, timelineRows(runs)))));
  log(`\nwrote ${path.relative(ROOT, json)}, ${stamp}.png and ${stamp}-timeline.png`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      configs: { type: 'string' },
      threads: { type: 'string' },
      workers: { type: 'string' },
      equal: { type: 'string' },
      reps: { type: 'string' },
      'seq-tasks': { type: 'string' },
      'fanout-tasks': { type: 'string' },
      settle: { type: 'string' },
      'idle-seconds': { type: 'string' },
      target: { type: 'string' },
      attempts: { type: 'string' },
      tasks: { type: 'string' },
      sleep: { type: 'string' },
      fixed: { type: 'string' },
      layout: { type: 'string' },
      executors: { type: 'string' },
      keda: { type: 'string' },
      polling: { type: 'string' },
      cooldown: { type: 'string' },
      'scale-down-period': { type: 'string' },
      'keda-bursts': { type: 'string' },
      keep: { type: 'boolean' },
      charts: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const log = (l: string) => process.stdout.write(`${l}\n`);
  if (values.charts) {
    // Charts again from a run's JSON (a cluster run's: its table too), without running anything.
    const saved = JSON.parse(fs.readFileSync(values.charts, 'utf8')) as { target?: string; options: ClusterBenchOptions & BenchOptions; runs?: ClusterRun[] } & Report;
    if (saved.target === 'cluster') {
      log(renderClusterReport(saved.options, saved.runs ?? []));
      await writeClusterOutputs(saved.options, saved.runs ?? [], log);
    } else {
      log(renderReport(saved));
      await writeOutputs(saved, saved.options, log);
    }
    return;
  }
  if (values.target === 'cluster') {
    const co = clusterBenchOptions(values);
    const runs: ClusterRun[] = [];
    try {
      await clusterBench(co, runs, log);
    } finally {
      // What ran before a failure is written too.
      if (runs.length) await writeClusterOutputs(co, runs, log);
    }
    return;
  }
  if (values.target !== undefined && values.target !== 'local') throw new Error(`--target=${values.target}: the bench runs on local (default) or cluster`);
  const clusterOnly = ['attempts', 'tasks', 'sleep', 'fixed', 'layout', 'executors', 'keda', 'keda-bursts', 'polling', 'cooldown', 'scale-down-period', 'keep'].filter((k) => values[k as keyof typeof values] !== undefined);
  if (clusterOnly.length) throw new Error(`--${clusterOnly.join(', --')}: only for the cluster mode; add --target cluster`);
  const o = benchOptions(values);
  const runner = new ShellRunner(false, () => {});
  const stateRoot = path.join(ROOT, '.state', 'bench');
  const portBase = await freePortRange(3 + Math.max(...o.workers, o.equal), 47000, 20);
  const configFor = (layout: 'worker' | 'split', n: number) =>
    loadConfig({
      root: ROOT,
      env: process.env,
      overrides: {
        DIGDAG_HA_TARGET: 'local',
        DIGDAG_HA_STATE_DIR: stateRoot,
        DIGDAG_HA_LAYOUT: layout,
        LOCAL_PORT_BASE: String(portBase),
        POSTGRES_PORT: '0',
        // Where the time goes: PostgreSQL's per-statement view (reset and read per workload).
        POSTGRES_STAT_STATEMENTS: 'true',
        UI_REPLICAS: '1',
        SCHEDULER_REPLICAS: '1',
        WORKER_REPLICAS: String(n),
        WORKFLOW_REPLICAS: '1',
        AGENT_REPLICAS: String(n),
        AGENT_MAX_TASK_THREADS: String(o.threads),
      },
    });
  const ctx = makeCtx(configFor('worker', o.equal), runner);
  const eventsFile = path.join(ctx.config.stateDir, 'bench-events.log');
  const report: Report = { latency: [], bursts: [], idle: [], costs: [], digdag: { patches: ctx.config.digdag.patches, agentPollMillis: ctx.config.digdag.patches ? ctx.config.agent.pollMillis : null, executorPollMillis: ctx.config.digdag.patches ? ctx.config.executor.pollMillis : null } };

  // One teardown for every way out: success (purge: the bench's data is throw-away), failure
  // and Ctrl-C (stop only: the logs stay in the state dir to read; the next run purges them).
  let stopping: Promise<void> | undefined;
  const stopAll = (purge: boolean) =>
    (stopping ??= (async () => {
      for (const l of await downLocal(ctx, purge)) log(`  ${l}`);
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    log(`\n${sig}: stopping everything the bench started`);
    void stopAll(false).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ok = false;
  try {
    log(`bench state dir ${ctx.config.stateDir}; Digdag ports from ${portBase}`);
    log(ctx.config.digdag.patches ? `worker/split: Digdag with digdag-ha's patches, AGENT_POLL_MILLIS=${ctx.config.agent.pollMillis}, EXECUTOR_POLL_MILLIS=${ctx.config.executor.pollMillis} (server -m: as released)` : 'worker/split: Digdag as released (DIGDAG_PATCHES=false)');
    await downLocal(ctx, true); // whatever an interrupted earlier run left
    await runSteps([buildImage, createSecret, startPostgres, initDb], ctx, { renderer: 'silent' });
    const projectDir = writeBenchProject(path.join(ctx.config.stateDir, 'project', PROJECT), BURST_DIG, o.seqTasks, o.fanoutTasks);
    for (const layout of ['worker', 'split'] as const) {
      if (!o.configs.includes(layout)) continue;
      // A fresh set of processes per layout: the roles' ports shift between layouts, and
      // reconcileLocal would start a new role on a port an old one still holds.
      await stopRoles(ctx, log);
      // Equal threads first (it gets the idle and latency runs), then the other worker counts, down.
      const counts = layout === 'worker' ? [o.equal, ...o.workers.filter((n) => n !== o.equal).sort((a, b) => b - a)] : [o.equal];
      for (const n of counts) {
        ctx.config = configFor(layout, n);
        const setup: Setup = { layout, processes: n, threadsPerProcess: o.threads };
        log(`${setupLabel(setup)} (+ ui, ${layout === 'split' ? 'workflow, ' : ''}scheduler): starting`);
        await reconcileLocal(ctx);
        const endpoint = authenticatedEndpoint(ctx.config, endpointOf(ctx.config));
        await pushProject(ctx, endpoint, { name: PROJECT, dir: projectDir });
        const tx = await pgTxCounter(runner, ctx.config);
        const cost = await costProbe(runner, ctx.config, setup, tx, report.costs!);
        await measure({ setup, endpoint, pgTx: tx.read, ownTicks: () => benchTicks(ctx.config), cost }, o, n === o.equal, report, eventsFile, log);
      }
    }
    if (o.configs.includes('server-m')) {
      // Alone on the machine: the layouts' processes and PostgreSQL stop first.
      await downLocal(ctx, false);
      const setup: Setup = { layout: 'server-m', processes: 1, threadsPerProcess: o.equal * o.threads };
      log(`${setupLabel(setup)}: starting`);
      const seed = await startServerM(ctx, setup.threadsPerProcess);
      await pushProject(ctx, { url: seed.url }, { name: PROJECT, dir: projectDir });
      await measure({ setup, endpoint: seed.url, ownTicks: () => benchTicks(ctx.config) }, o, true, report, eventsFile, log);
      await stopProcess(seed.entry, 30_000);
      unregisterProcess(ctx.config, seed.entry.name);
    }
    ok = true;
  } finally {
    await stopAll(ok);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!ok) log(`  logs kept in ${path.join(ctx.config.stateDir, 'logs')}`);
  }
  log(`\n${renderReport(report)}`);
  await writeOutputs(report, o, log);
}

if (isMain(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = 1;
  });
}
