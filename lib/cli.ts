// Command-line entry shared by every task file and all.ts: flags, config, context, exit code.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from './config.ts';
import { describeError, UserError } from './errors.ts';
import { ROOT } from './paths.ts';
import { runSteps, TASK_ORDER, type Ctx, type Step } from './pipeline.ts';
import { ShellRunner, type Runner } from './runner.ts';

/** True when the module at `url` is the program being run (not imported). */
export function isMain(url: string): boolean {
  return !!process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === url;
}

export interface CliFlags {
  target?: string;
  set: Record<string, string>;
  dryRun: boolean;
  force: boolean;
  help: boolean;
  only: string[];
  from?: string;
  skip: string[];
  purge: boolean;
  keep: boolean;
}

const OPTIONS = {
  target: { type: 'string' },
  set: { type: 'string', multiple: true },
  'dry-run': { type: 'boolean' },
  force: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  only: { type: 'string', multiple: true },
  from: { type: 'string' },
  skip: { type: 'string', multiple: true },
  purge: { type: 'boolean' },
  keep: { type: 'boolean' },
} as const;

const list = (v: string[] | undefined) => (v ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);

export function parseFlags(argv: readonly string[]): CliFlags {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new UserError((err as Error).message, 'run with --help for the flags');
  }
  const set: Record<string, string> = {};
  for (const kv of values.set ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UserError(`--set ${kv}: expected NAME=VALUE`, 'e.g. --set AGENT_REPLICAS=4');
    set[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const flags: CliFlags = {
    target: values.target,
    set,
    dryRun: !!values['dry-run'],
    force: !!values.force,
    help: !!values.help,
    only: list(values.only),
    from: values.from,
    skip: list(values.skip),
    purge: !!values.purge,
    keep: !!values.keep,
  };
  for (const name of [...flags.only, ...flags.skip, ...(flags.from ? [flags.from] : [])]) {
    if (!(TASK_ORDER as readonly string[]).includes(name)) {
      throw new UserError(`unknown task "${name}"`, `choose from: ${TASK_ORDER.join(', ')}`);
    }
  }
  return flags;
}

/** Which of the ordered steps --only/--from/--skip select. */
export function selectSteps(steps: readonly Step[], flags: Pick<CliFlags, 'only' | 'from' | 'skip'>): Step[] {
  let out = [...steps];
  if (flags.from) out = out.slice(out.findIndex((s) => s.name === flags.from));
  if (flags.only.length) out = out.filter((s) => flags.only.includes(s.name));
  return out.filter((s) => !flags.skip.includes(s.name));
}

/** minikube is chosen automatically only when both a Docker engine and minikube answer. */
export function kubeAvailable(): boolean {
  const ok = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 }).status === 0;
  return ok('docker', ['info']) && ok('minikube', ['version']);
}

export function configFromFlags(flags: CliFlags, env: NodeJS.ProcessEnv = process.env): Config {
  const overrides = { ...flags.set };
  if (flags.target !== undefined) overrides.DIGDAG_HA_TARGET = flags.target;
  return loadConfig({ root: ROOT, env, overrides, detectKube: kubeAvailable });
}

export function makeCtx(config: Config, runner: Runner, force = false): Ctx {
  return { config, runner, force, started: [], facts: {} };
}

const HELP = (what: string) => `usage: npx tsx ${what} [flags]

  --target local|minikube|gke|cluster   where to deploy (cluster: the project's own test cluster; default: DIGDAG_HA_TARGET, else auto)
  --set NAME=VALUE              override a variable from .env.example (repeatable)
  --dry-run                     print the commands that would change something; run only reads
  --force                       run tasks even when their inputs are unchanged
  --only a,b  --from a  --skip a   select tasks (all.ts): ${TASK_ORDER.join(', ')}
  --purge                       (down.ts) also delete data: PostgreSQL data, secrets, logs
  --keep                        (e2e.ts) keep the cluster (minikube profile or own cluster) afterwards
  -h, --help                    this help
`;

/** Runs steps as a program: prints progress, reports an error once, and sets the exit code. */
export async function main(steps: readonly Step[], what: string, argv = process.argv.slice(2)): Promise<void> {
  try {
    const flags = parseFlags(argv);
    if (flags.help) {
      process.stdout.write(HELP(what));
      return;
    }
    const config = configFromFlags(flags);
    const runner = new ShellRunner(flags.dryRun);
    process.stderr.write(`digdag-ha: target ${config.target} (${config.targetReason})${flags.dryRun ? ' — dry run' : ''}\n`);
    const selected = selectSteps(steps, flags);
    // A task that proves something (verify-ha) runs when asked for by name, up to date or not.
    const ctx = makeCtx(config, runner, flags.force || (selected.length === 1 && !!selected[0]!.runWhenAlone));
    await runSteps(selected, ctx);
    if (ctx.facts.summary) process.stdout.write(`${ctx.facts.summary}\n`);
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}

/**
 * A task with subcommands (`cluster.ts up|down|…`, `gcp.ts plan|up|down`) as a program: help, an
 * unknown subcommand refused naming the choices, errors reported once with the exit code.
 */
export async function mainWithSubcommands<S extends string>(subcommands: readonly S[], help: string, run: (sub: S, rest: string[]) => Promise<number | void>, argv = process.argv.slice(2)): Promise<void> {
  const [sub, ...rest] = argv;
  try {
    if (!sub || sub === '--help' || sub === '-h' || rest.includes('--help')) {
      process.stdout.write(help);
    } else if (!(subcommands as readonly string[]).includes(sub)) {
      throw new UserError(`unknown command "${sub}"`, `choose from: ${subcommands.join(', ')}`);
    } else {
      const code = await run(sub as S, rest);
      if (typeof code === 'number') process.exitCode = code;
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
