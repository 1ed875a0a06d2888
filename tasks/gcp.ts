// gcp: the Google Cloud home of --target gke in one command — plan (print every gcloud command,
// change nothing), up (describe, then create what is missing), down (reverse; --purge also the
// data). Logic in lib/gcp/; this file parses the command line and prints.
import { configFromFlags, isMain, mainWithSubcommands, parseFlags, type CliFlags } from '../lib/cli.ts';
import type { Config } from '../lib/config.ts';
import { gcpHome } from '../lib/gcp/home.ts';
import { gcpDown, gcpUp, type GcpReport } from '../lib/gcp/provision.ts';
import { ShellRunner, type Runner } from '../lib/runner.ts';

const SUBCOMMANDS = ['plan', 'up', 'down'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

const HELP = `usage: npx tsx tasks/gcp.ts plan|up|down [--purge] [--dry-run] [--set NAME=VALUE]

  plan     print every gcloud command up would run (reads run, nothing changes; no secret shown)
  up       enable the APIs, then create what is missing: Artifact Registry repository (+ docker
           credential helper), GKE cluster (GKE_MODE autopilot|standard) with Workload Identity,
           Cloud SQL for PostgreSQL 15 (REGIONAL, backups, point-in-time recovery) with the database
           and its user (password generated into the gke secret store, never argv), the log bucket,
           the service account with its roles and the Workload Identity binding to the digdag
           Kubernetes service account. A second up changes nothing and says so. Prints the .env
           values for --target gke and writes them to <state>/gke/gcp.env.
  down     reverse order; keeps the Cloud SQL instance (database, backups), the log bucket and the
           image repository unless --purge

settings (.env, the environment or --set): GCP_PROJECT (required), GCP_REGION, GKE_MODE,
GKE_CLUSTER, GKE_MACHINE_TYPE, ARTIFACT_REPOSITORY, CLOUDSQL_INSTANCE_NAME, CLOUDSQL_TIER,
CLOUDSQL_BACKUP_START, CLOUDSQL_BACKUP_COUNT, GCS_LOG_BUCKET, GCS_LOG_RETENTION_DAYS, GCP_SA_NAME,
K8S_NAMESPACE, DB_NAME, DB_USER — see .env.example.
`;

/** The configuration as --target gke will see it, with IMAGE in the home's registry when it names none. */
export function gcpConfig(flags: CliFlags, env: NodeJS.ProcessEnv = process.env): Config {
  // First as a Kubernetes target without gke's "IMAGE names a registry" rule, to learn the image name.
  const first = configFromFlags({ ...flags, target: 'minikube' }, env);
  return configFromFlags({ ...flags, target: 'gke', set: { ...flags.set, IMAGE: gcpHome(first).image } }, env);
}

export async function gcp(sub: Subcommand, config: Config, runner: Runner, opts: { purge?: boolean; env?: Record<string, string> } = {}): Promise<GcpReport> {
  const run = { runner, config, env: opts.env };
  return sub === 'down' ? gcpDown(run, { purge: !!opts.purge }) : gcpUp(run);
}

export function printReport(sub: Subcommand, r: GcpReport, out: (l: string) => void): void {
  for (const l of r.lines) out(l);
  if (sub !== 'down' && r.envValues) {
    out('');
    out(`.env values for --target gke (${sub === 'plan' ? 'would be written to' : 'written to'} ${r.envFile}):`);
    for (const [k, v] of Object.entries(r.envValues)) out(`${k}=${v}`);
    out('The database password is not among them: it is in the gke secret store, and create-secret puts it into the Kubernetes Secret.');
    out('Digdag reaches Cloud SQL through the Cloud SQL Auth Proxy sidecar (CLOUDSQL_INSTANCE) on 127.0.0.1, authenticated by Workload Identity: no authorised network or public access needed.');
  }
}

if (isMain(import.meta.url)) {
  await mainWithSubcommands(SUBCOMMANDS, HELP, async (sub, rest) => {
    const flags = parseFlags(rest);
    const runner = new ShellRunner(flags.dryRun || sub === 'plan');
    const report = await gcp(sub, gcpConfig(flags), runner, { purge: flags.purge });
    printReport(sub, report, (l) => process.stdout.write(`${l}\n`));
  });
}
