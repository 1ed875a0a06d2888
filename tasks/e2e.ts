// e2e: a real cluster → the whole pipeline → verify-ha on Kubernetes → with AGENT_AUTOSCALING=keda
// the scaling proof (a burst scales the workers out on the queue and back, no task re-run;
// lib/kube/scaling-proof.ts) → teardown of what it made (unless --keep), also on failure. minikube where it exists (a dedicated profile), the project's
// own test cluster otherwise (lib/cluster; `npx tsx tasks/e2e.ts` works on a machine without minikube).
import { configFromFlags, isMain, kubeAvailable, makeCtx, parseFlags, type CliFlags } from '../lib/cli.ts';
import { loadClusterConfig } from '../lib/cluster/config.ts';
import { clusterDown, clusterUpCmd, missingPrerequisites } from '../lib/cluster/lifecycle.ts';
import type { Config } from '../lib/config.ts';
import { describeError, UserError } from '../lib/errors.ts';
import { kubeTarget } from './steps.ts';
import { runSteps, type Ctx, type RunOptions } from '../lib/pipeline.ts';
import { changesApplied, ShellRunner, type Runner } from '../lib/runner.ts';
import { ALL_STEPS } from './all.ts';
import { proveQueueScaling, scalingBounds, SCALING_BURST } from '../lib/kube/scaling-proof.ts';
import { renderTable } from '../lib/verify.ts';

/** Versions of the three tools, or a UserError naming every one that is missing. */
export async function preflight(runner: Runner): Promise<Record<string, string>> {
  const probes: [string, string[], string][] = [
    ['docker', ['docker', 'version', '--format', '{{.Server.Version}}'], 'install Docker and start its engine (docker info must answer)'],
    ['minikube', ['minikube', 'version', '--short'], 'install minikube: https://minikube.sigs.k8s.io/docs/start/'],
    ['kubectl', ['kubectl', 'version', '--client', '-o', 'json'], 'install kubectl'],
  ];
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const [name, argv, fix] of probes) {
    const res = await runner.run({ argv, nothrow: true }).catch(() => ({ code: 127, stdout: '', stderr: 'not found' }));
    if (res.code === 0 && res.stdout.trim()) found[name] = name === 'kubectl' ? (/"gitVersion":\s*"([^"]+)"/.exec(res.stdout)?.[1] ?? 'unknown') : res.stdout.trim();
    else missing.push(`${name}: ${fix}${res.stderr ? ` (${res.stderr.trim().split('\n')[0]})` : ''}`);
  }
  if (missing.length) throw new UserError(`e2e needs Docker, minikube and kubectl; missing or not answering:\n  ${missing.join('\n  ')}`, 'install them, or run on the project\'s own cluster: npx tsx tasks/e2e.ts --target cluster');
  return found;
}

/** A cluster e2e can run on: bring it up, and take down afterwards exactly what `up` made. */
interface E2eCluster {
  describe: string;
  /** What this machine lacks for it, as a UserError; nothing is started before it passes. */
  preflight(): Promise<void>;
  up(): Promise<void>;
  /** Lines saying what was taken down (or kept). */
  down(keep: boolean): Promise<string[]>;
}

function minikubeCluster(ctx: Ctx): E2eCluster {
  const { runner } = ctx;
  const profile = ctx.config.k8s.minikubeProfile;
  return {
    describe: `minikube profile ${profile}`,
    preflight: async () => {
      const v = await preflight(runner);
      runner.log(`docker ${v.docker}, minikube ${v.minikube}, kubectl ${v.kubectl}`);
    },
    up: async () => {
      await runner.run({ argv: ['minikube', 'start', '-p', profile, '--cpus', '2', '--memory', '6g', '--addons', 'ingress'], mutates: true });
    },
    down: async (keep) => {
      if (keep) return [`kept minikube profile ${profile} (--keep); delete it with: minikube delete -p ${profile}`];
      await runner.run({ argv: ['minikube', 'delete', '-p', profile], mutates: true, nothrow: true });
      return [`deleted minikube profile ${profile}`];
    },
  };
}

function ownCluster(ctx: Ctx): E2eCluster {
  const { runner } = ctx;
  const cc = loadClusterConfig(ctx.config);
  let startedHere = false;
  return {
    describe: `the project's test cluster (${cc.dir})`,
    preflight: async () => {
      const missing = missingPrerequisites(cc);
      if (missing.length) throw new UserError(`the test cluster cannot run here; missing:\n  ${missing.join('\n  ')}`, 'see README "Test cluster" (apt packages, npx tsx tasks/cluster.ts build), or use minikube');
    },
    up: async () => {
      // Processes, sockets and kernel state change as it goes: in a dry run only said.
      await runner.change('npx tsx tasks/cluster.ts up', async () => {
        const r = await clusterUpCmd(runner, cc, (l) => runner.log(`[cluster] ${l}`));
        startedHere = !r.alreadyUp;
        for (const l of r.lines) runner.log(l);
      });
    },
    down: async (keep) => {
      const out: string[] = [];
      if (keep) return [`kept the test cluster and namespace ${ctx.config.k8s.namespace} (--keep); take them down with: npx tsx tasks/down.ts --target cluster --purge && npx tsx tasks/cluster.ts down`];
      out.push(...(await kubeTarget.down(ctx, true).catch((e: unknown) => [`namespace teardown failed: ${describeError(e)}`])));
      if (startedHere) out.push(...(await clusterDown(runner, cc, { purge: false }, (l) => runner.log(`[cluster] ${l}`))));
      else out.push('the test cluster was up before e2e started: left running');
      return out;
    },
  };
}

/** `out` gets the teardown lines: after the task list has finished its renderer owns no output. */
export async function e2e(ctx: Ctx, keep: boolean, opts: RunOptions = {}, out: (line: string) => void = (l) => ctx.runner.log(l)): Promise<string[]> {
  const cluster = ctx.config.target === 'minikube' ? minikubeCluster(ctx) : ownCluster(ctx);
  ctx.runner.log(`e2e on ${cluster.describe}`);
  let teardown: string[] = [];
  // With KEDA: bounds that leave room to scale, before anything is looked at or started.
  const scaling = ctx.config.k8s.autoscaling === 'keda' ? scalingBounds(ctx) : undefined;
  await cluster.preflight();
  try {
    await cluster.up();
    await runSteps(ALL_STEPS, ctx, opts);
    if (scaling && changesApplied(ctx.runner)) await scalingProof(ctx);
  } finally {
    teardown = await cluster.down(keep);
    for (const l of teardown) out(l);
  }
  return teardown;
}

/** The burst of lib/kube/scaling-proof.ts on the deployment just made; its table after verify-ha's,
 * a UserError when one of its checks failed. */
async function scalingProof(ctx: Ctx): Promise<void> {
  const log = (l: string) => ctx.runner.log(`[scaling] ${l}`);
  log(`a burst on KEDA's workers: ${SCALING_BURST.attempts} attempts × ${SCALING_BURST.tasks} sh> tasks, then ${SCALING_BURST.long} long ones (~5 min)`);
  const proof = await proveQueueScaling(ctx, kubeTarget, SCALING_BURST, log);
  for (const l of proof.lines) log(l);
  const table = renderTable(proof.checks);
  ctx.facts.summary = [ctx.facts.summary, 'queue-driven scaling (KEDA):', table].filter(Boolean).join('\n');
  const failed = proof.checks.filter((c) => !c.ok);
  if (failed.length) throw new UserError(`${failed.length} scaling check(s) failed:\n${table}`, 'see the [scaling] lines above; kubectl describe scaledobject digdag-autoscaler');
}

/** minikube when it answers, else the own cluster; the own cluster gets the small profile
 * (one 2-vCPU node) unless RESOURCE_PROFILE is set. */
export function e2eConfig(flags: CliFlags, minikubeAnswers: () => boolean, env: NodeJS.ProcessEnv = process.env): Config {
  const target = flags.target ?? (env.DIGDAG_HA_TARGET || (minikubeAnswers() ? 'minikube' : 'cluster'));
  if (target !== 'minikube' && target !== 'cluster') throw new UserError(`e2e runs on minikube or the project's test cluster, not ${target}`, 'drop --target, or use --target minikube|cluster');
  const set = { ...flags.set };
  if (target === 'cluster' && !set.RESOURCE_PROFILE && !env.RESOURCE_PROFILE) set.RESOURCE_PROFILE = 'small';
  const config = configFromFlags({ ...flags, target, set }, env);
  // The own cluster brings up what the deployment needs: KEDA for AGENT_AUTOSCALING=keda.
  if (target === 'cluster' && config.k8s.autoscaling === 'keda' && !config.cluster.addons.includes('keda')) {
    return configFromFlags({ ...flags, target, set: { ...set, CLUSTER_ADDONS: [...config.cluster.addons, 'keda'].join(',') } }, env);
  }
  return config;
}

if (isMain(import.meta.url)) {
  try {
    const flags = parseFlags(process.argv.slice(2));
    if (flags.help) process.stdout.write('usage: npx tsx tasks/e2e.ts [--target minikube|cluster] [--keep] [--set NAME=VALUE]\n  default target: minikube when docker and minikube answer, else the project\'s own test cluster\n');
    else {

      const config = e2eConfig(flags, kubeAvailable);
      process.stderr.write(`digdag-ha e2e: target ${config.target}\n`);
      const ctx = makeCtx(config, new ShellRunner(flags.dryRun), flags.force);
      await e2e(ctx, flags.keep, {}, (l) => process.stderr.write(`[e2e teardown] ${l}\n`));
      if (ctx.facts.summary) process.stdout.write(`${ctx.facts.summary}\n`);
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
