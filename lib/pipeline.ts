// What a task is, how make-like skipping works, and how a list of tasks runs under Listr2.
import { Listr, type ListrTask } from 'listr2';
import type { Config } from './config.ts';
import { stopProcess, unregisterProcess } from './processes.ts';
import type { ProcessEntry } from './processes.ts';
import type { Runner } from './runner.ts';
import { hashInputs, readStamp, writeStamp } from './state.ts';
import type { Check } from './verify.ts';
import { DIGDAG_VERSION } from './versions.ts';

export const TASK_ORDER = [
  'build-image',
  'create-secret',
  'start-postgres',
  'init-db',
  'apply',
  'ingress',
  'port-forward',
  'push-workflow',
  'verify-ha',
] as const;
export type TaskName = (typeof TASK_ORDER)[number];

/** Each task's title in the progress list (imperative). */
export const TASK_TITLES: Readonly<Record<TaskName, string>> = {
  'build-image': `Get Digdag ${DIGDAG_VERSION}`,
  'create-secret': 'Create secrets',
  'start-postgres': 'Start PostgreSQL',
  'init-db': 'Initialise the database and migrate the schema',
  apply: 'Start the Digdag roles',
  ingress: 'Expose the UI through an Ingress',
  'port-forward': 'Forward a local port to the UI',
  'push-workflow': 'Push the workflows',
  'verify-ha': 'Verify every role by its behaviour',
};

/** Values a task hands to later tasks of the same run. */
export interface Facts {
  /** The UI/API URL this run reaches (Kubernetes: the port-forward it started). */
  endpoint?: string;
  /** The Ingress's address and the URL its probe used (Kubernetes with an Ingress controller). */
  ingressAddress?: string;
  ingressEndpoint?: string;
  /** The certificate the Ingress must serve (PEM, from its TLS Secret), when the toolkit knows it. */
  ingressCertificate?: string;
  /** Projects push-workflow pushed or found at their revision. */
  pushed?: { project: string; revision: string }[];
  /** verify-ha's checks and their table. */
  checks?: Check[];
  summary?: string;
}

/** A process this run started, with how to stop it when it is not a signal to its group (pg_ctl). */
export type StartedProcess = ProcessEntry & { stop?: () => Promise<string> };

export interface Ctx {
  config: Config;
  runner: Runner;
  force: boolean;
  /** Processes started by this run: stopped again if the run fails. */
  started: StartedProcess[];
  facts: Facts;
}

export interface Inputs {
  values: unknown;
  files?: readonly string[];
}

export interface Step {
  name: TaskName | 'down' | 'e2e';
  /** Imperative title for the progress list. */
  title: string;
  /** A reason this task does nothing on this target (e.g. ingress on local). */
  notApplicable?(ctx: Ctx): string | undefined;
  /** What the task depends on; unchanged inputs + healthy() ⇒ skip. No inputs: always runs. */
  inputs?(ctx: Ctx): Inputs | undefined | Promise<Inputs | undefined>;
  /** Whether what the task made still holds; a string explains what was checked. */
  healthy?(ctx: Ctx): Promise<string | false>;
  run(ctx: Ctx): Promise<void>;
  /** Run even when up to date if it is the only task selected (verify-ha: asked for by name, it runs). */
  runWhenAlone?: boolean;
  /** Checks that only read, run for every selected step before the first one changes anything. */
  preflight?(ctx: Ctx): Promise<void>;
}

/** Why a step would be skipped now, or undefined when it must run. */
export async function skipReason(step: Step, ctx: Ctx): Promise<string | undefined> {
  const na = step.notApplicable?.(ctx);
  if (na) return na;
  if (ctx.force) return undefined;
  const inputs = await step.inputs?.(ctx);
  if (!inputs) return undefined;
  const hash = hashInputs(inputs.values, inputs.files);
  if (readStamp(ctx.config, step.name) !== hash) return undefined;
  const ok = step.healthy ? await step.healthy(ctx) : 'done before';
  return ok ? `up to date: inputs unchanged, ${ok}` : undefined;
}

/** Runs the step and stamps its inputs so the next run can skip (a dry run leaves no stamp). */
export async function runStep(step: Step, ctx: Ctx): Promise<void> {
  await step.run(ctx);
  await ctx.runner.change(undefined, async () => {
    const inputs = await step.inputs?.(ctx);
    if (inputs) writeStamp(ctx.config, step.name, hashInputs(inputs.values, inputs.files));
  });
}

/** A step as a Listr task; its log lines become the task's output unless the list is silent. */
export function toListrTask(step: Step, showOutput = true): ListrTask<Ctx> {
  return {
    title: step.title,
    skip: async (ctx) => (await skipReason(step, ctx)) ?? false,
    task: async (ctx, task) => {
      const runner = ctx.runner as Runner & { setSink?(s: (l: string) => void): (l: string) => void };
      // The task's output while it runs; afterwards where the lines went before (the list's renderer
      // owns no output once it has finished).
      const before = showOutput ? runner.setSink?.((line: string) => {
        task.output = line;
      }) : undefined;
      try {
        await runStep(step, ctx);
      } finally {
        if (before) runner.setSink?.(before);
      }
    },
  };
}

export interface RunOptions {
  /** 'silent' in tests; default picks default (TTY) or simple. */
  renderer?: 'default' | 'simple' | 'silent';
}

/** Runs the steps in order; on failure stops what this run started and rethrows. */
export async function runSteps(steps: readonly Step[], ctx: Ctx, opts: RunOptions = {}): Promise<void> {
  const renderer = opts.renderer ?? (process.stdout.isTTY && !process.env.CI ? 'default' : 'simple');
  const list = new Listr<Ctx>(steps.map((s) => toListrTask(s, renderer !== 'silent')), {
    concurrent: false,
    exitOnError: true,
    renderer: renderer as 'default',
    fallbackRenderer: 'simple',
    rendererOptions: { collapseSubtasks: false, outputBar: 3 } as never,
  } as never);
  // A configuration the target refuses is refused before build-image, not after it.
  for (const s of steps) if (!s.notApplicable?.(ctx)) await s.preflight?.(ctx);
  try {
    await list.run(ctx);
  } catch (err) {
    await stopStarted(ctx);
    throw err;
  }
}

/** Stops, newest first, every process this run started (data stays; nothing is purged). */
export async function stopStarted(ctx: Ctx): Promise<void> {
  for (const entry of [...ctx.started].reverse()) {
    const how = entry.stop ? await entry.stop() : await stopProcess(entry, 30_000);
    ctx.runner.log(`stopped ${entry.name} (started by this run): ${how}`);
    unregisterProcess(ctx.config, entry.name, entry.pid);
  }
  ctx.started.length = 0;
}

/** A task's behaviour on one target. */
export type Impl = Omit<Step, 'name' | 'title'>;
