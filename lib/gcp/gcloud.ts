// The gcloud CLI as tasks/gcp.ts uses it: every command through the runner (so --dry-run prints
// it and the recording tests see it), reads as JSON with "not found" as an answer, and the API's
// refusals turned into errors that name the fix.
import { UserError } from '../errors.ts';
import type { Result, Runner } from '../runner.ts';

export interface GcloudOptions {
  project: string;
  /** Extra environment for every gcloud run (tests: an isolated CLOUDSDK_CONFIG and endpoint overrides). */
  env?: Readonly<Record<string, string>>;
}

const NOT_FOUND = /NOT_FOUND|not found|code=404|\b404\b/i;
const DENIED = /PERMISSION_DENIED|code=403|\b403\b|does not have permission|Permission denied/i;

export class Gcloud {
  constructor(
    private readonly runner: Runner,
    readonly opts: GcloudOptions,
  ) {}

  private argv(args: readonly string[]): string[] {
    return ['gcloud', ...args, `--project=${this.opts.project}`, '--quiet'];
  }

  /** A describe/list/get: parsed JSON, or undefined when the resource does not exist. Always runs, also under --dry-run. */
  async read<T = any>(args: readonly string[], what: string): Promise<T | undefined> {
    const r = await this.runner.run({ argv: this.argv([...args, '--format=json']), env: this.opts.env, nothrow: true });
    if (r.code === 0) return JSON.parse(r.stdout || 'null') as T;
    if (DENIED.test(r.stderr)) throw denied(what, r);
    if (NOT_FOUND.test(r.stderr)) return undefined;
    throw new UserError(`gcloud could not read ${what}`, 'check the message above (gcloud auth list shows the account in use)', lastLines(r));
  }

  /** A change: printed and skipped under --dry-run. `input` (a flags file on stdin) carries secrets, never argv. */
  async change(args: readonly string[], what: string, input?: string): Promise<void> {
    // gcloud's own debug log (<config>/logs) records every parsed flag, the flags file's included:
    // a command that carries a secret runs with that log off.
    const env = input === undefined ? this.opts.env : { ...this.opts.env, CLOUDSDK_CORE_DISABLE_FILE_LOGGING: 'true' };
    const r = await this.runner.run({ argv: this.argv(args), env, mutates: true, input, nothrow: true });
    if (r.code === 0) return;
    if (DENIED.test(r.stderr)) throw denied(what, r);
    throw new UserError(`gcloud could not ${what}`, 'fix the cause gcloud names above and run `npx tsx tasks/gcp.ts up` again (it picks up where it stopped)', lastLines(r));
  }
}

function lastLines(r: Result): string {
  return (r.stderr || r.stdout).trimEnd().split('\n').slice(-6).join('\n');
}

function denied(what: string, r: Result): UserError {
  return new UserError(
    `permission denied: ${what}`,
    'grant the account gcloud uses (gcloud auth list) roles/owner on the project, or roles/editor plus roles/resourcemanager.projectIamAdmin and roles/iam.serviceAccountAdmin, then run again',
    lastLines(r),
  );
}
