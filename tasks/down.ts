// down: stop everything the target started (its down(): local: role processes and PostgreSQL,
// lib/local/down.ts; Kubernetes: port-forward and workloads, lib/kube/down.ts). Data is kept
// unless --purge.
import { configFromFlags, isMain, makeCtx, parseFlags } from '../lib/cli.ts';
import { describeError, UserError } from '../lib/errors.ts';
import type { Ctx } from '../lib/pipeline.ts';
import { ShellRunner } from '../lib/runner.ts';
import { targetOf } from './steps.ts';

export const down = (ctx: Ctx, purge: boolean): Promise<string[]> => targetOf(ctx.config).down(ctx, purge);

if (isMain(import.meta.url)) {
  try {
    const flags = parseFlags(process.argv.slice(2));
    if (flags.help) {
      process.stdout.write('usage: npx tsx tasks/down.ts [--target local|minikube|gke|cluster] [--purge] [--dry-run]\n');
    } else {
      const config = configFromFlags(flags);
      const ctx = makeCtx(config, new ShellRunner(flags.dryRun));
      for (const line of await down(ctx, flags.purge)) process.stdout.write(`${line}\n`);
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
