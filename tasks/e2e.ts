// e2e: preflight (docker engine, minikube, kubectl) → minikube start on a dedicated profile →
// the whole pipeline on it → verify-ha → minikube delete (unless --keep), also on failure.
import { configFromFlags, isMain, makeCtx, parseFlags } from '../lib/cli.ts';
import type { Config } from '../lib/config.ts';
import { describeError, UserError } from '../lib/errors.ts';
import { runSteps, type Ctx, type RunOptions } from '../lib/pipeline.ts';
import { ShellRunner, type Runner } from '../lib/runner.ts';
import { ALL_STEPS } from './all.ts';

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
  if (missing.length) throw new UserError(`e2e needs Docker, minikube and kubectl; missing or not answering:\n  ${missing.join('\n  ')}`, 'install them, or run the local target: npx tsx tasks/all.ts --target local');
  return found;
}

export async function e2e(ctx: Ctx, keep: boolean, opts: RunOptions = {}): Promise<void> {
  const { config, runner } = ctx;
  const versions = await preflight(runner);
  runner.log(`docker ${versions.docker}, minikube ${versions.minikube}, kubectl ${versions.kubectl}`);
  const profile = config.k8s.minikubeProfile;
  await runner.run({ argv: ['minikube', 'start', '-p', profile, '--cpus', '2', '--memory', '6g', '--addons', 'ingress'], mutates: true });
  try {
    await runSteps(ALL_STEPS, ctx, opts);
  } finally {
    if (keep) runner.log(`kept minikube profile ${profile} (--keep); delete it with: minikube delete -p ${profile}`);
    else await runner.run({ argv: ['minikube', 'delete', '-p', profile], mutates: true, nothrow: true });
  }
}

export function e2eConfig(config: Config): Config {
  if (config.target !== 'minikube') throw new UserError(`e2e runs on minikube, not ${config.target}`, 'drop --target, or use --target minikube');
  return config;
}

if (isMain(import.meta.url)) {
  try {
    const flags = parseFlags(process.argv.slice(2));
    if (flags.help) process.stdout.write('usage: npx tsx tasks/e2e.ts [--keep] [--set NAME=VALUE]\n');
    else {
      const config = e2eConfig(configFromFlags({ ...flags, target: flags.target ?? 'minikube' }));
      const ctx = makeCtx(config, new ShellRunner(flags.dryRun), flags.force);
      await e2e(ctx, flags.keep);
      if (typeof ctx.facts.summary === 'string') process.stdout.write(`${ctx.facts.summary}\n`);
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
