// status: one screen for a person — every role process/pod and whether it answers, the queue
// (waiting/running) against the free task threads, running attempts, tasks per agent, the last
// failed attempts with a UI link. --json: the same as data (with each process's metrics URL);
// --watch: refresh every --interval seconds. Gathering is the target's (lib/local/status.ts,
// lib/kube/status.ts); the screen is lib/status.ts.
import { configFromFlags, isMain, makeCtx, parseFlags } from '../lib/cli.ts';
import { describeError, UserError } from '../lib/errors.ts';
import type { Ctx } from '../lib/pipeline.ts';
import { ShellRunner } from '../lib/runner.ts';
import { renderStatus, type StatusReport } from '../lib/status.ts';
import { targetOf } from './steps.ts';

export const status = (ctx: Ctx): Promise<StatusReport> => targetOf(ctx.config).status(ctx);

const USAGE = 'usage: npx tsx tasks/status.ts [--target local|minikube|gke] [--set NAME=VALUE] [--json] [--watch [--interval SECONDS]]\n';

/** status's own flags, taken out before the common ones are parsed. */
export function statusFlags(argv: readonly string[]): { json: boolean; watch: boolean; intervalMs: number; rest: string[] } {
  const rest: string[] = [];
  let json = false;
  let watch = false;
  let interval = 2;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--watch') watch = true;
    else if (a === '--interval' || a.startsWith('--interval=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      interval = Number(v);
      if (!Number.isFinite(interval) || interval < 0.5) throw new UserError(`--interval ${v}: expected seconds >= 0.5`, 'e.g. --watch --interval 5');
    } else rest.push(a);
  }
  return { json, watch, intervalMs: interval * 1000, rest };
}

if (isMain(import.meta.url)) {
  try {
    const own = statusFlags(process.argv.slice(2));
    const flags = parseFlags(own.rest);
    if (flags.help) {
      process.stdout.write(USAGE);
    } else {
      // Reads only: the runner never changes anything here, and logs nothing on the screen.
      const ctx = makeCtx(configFromFlags(flags), new ShellRunner(false, () => {}));
      const show = (r: StatusReport) => (own.json ? `${JSON.stringify(r, null, 2)}\n` : renderStatus(r));
      if (!own.watch) {
        process.stdout.write(show(await status(ctx)));
      } else {
        let stop = false;
        process.once('SIGINT', () => {
          stop = true;
        });
        while (!stop) {
          const text = show(await status(ctx));
          // Clear and home the screen for a person; one JSON document per refresh otherwise.
          process.stdout.write(own.json || !process.stdout.isTTY ? text : `\x1b[2J\x1b[H${text}\n(refreshing every ${own.intervalMs / 1000}s; Ctrl-C to stop)\n`);
          await new Promise((r) => setTimeout(r, own.intervalMs));
        }
      }
    }
  } catch (err) {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = err instanceof UserError ? 2 : 1;
  }
}
