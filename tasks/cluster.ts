// cluster: the project's own single-node Kubernetes test cluster — build its binaries, bring
// it up, show its status, print its KUBECONFIG, take it down (--purge: and delete its state).
import path from 'node:path';
import { configFromFlags, isMain, mainWithSubcommands, parseFlags } from '../lib/cli.ts';
import { buildBinaries } from '../lib/cluster/build.ts';
import { CLUSTER_VARIABLES, clusterPaths, loadClusterConfig } from '../lib/cluster/config.ts';
import { clusterDown, clusterStatus, clusterUpCmd } from '../lib/cluster/lifecycle.ts';
import { UserError } from '../lib/errors.ts';
import { ROOT } from '../lib/paths.ts';
import { ShellRunner } from '../lib/runner.ts';

const SUBCOMMANDS = ['up', 'down', 'status', 'build', 'env'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

const HELP = `usage: npx tsx tasks/cluster.ts <command> [--purge] [--set NAME=VALUE]

  build    build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
           CoreDNS and kube-router (the NetworkPolicy enforcer) into the cache, if missing
  up       start the cluster (says so when it is already up)
  status   show each process and whether the cluster is up
  env      print \`export KUBECONFIG=…\` (eval "$(npx tsx tasks/cluster.ts env)")
  down     stop everything and take back every host change; --purge also deletes the state dir

environment:
${Object.entries(CLUSTER_VARIABLES)
  .map(([k, v]) => `  ${k}: ${v}`)
  .join('\n')}
`;

export async function cluster(sub: Subcommand, argv: readonly string[], out: (l: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<number> {
  const flags = parseFlags(argv);
  const cc = loadClusterConfig(configFromFlags(flags));
  if (flags.dryRun && sub !== 'build') {
    // up/down act on processes, sockets and kernel state as they go; a printed plan would be fiction.
    throw new UserError(`--dry-run is supported by \`cluster build\` only`, 'run without --dry-run');
  }
  const runner = new ShellRunner(flags.dryRun);
  const log = (l: string) => process.stderr.write(`[cluster] ${l}\n`);
  switch (sub) {
    case 'build':
      for (const l of await buildBinaries(runner, cc, path.join(ROOT, 'cluster', 'k8s'), log)) out(l);
      return 0;
    case 'up': {
      const r = await clusterUpCmd(runner, cc, log);
      for (const l of r.lines) out(l);
      return 0;
    }
    case 'down':
      for (const l of await clusterDown(runner, cc, { purge: flags.purge }, log)) out(l);
      return 0;
    case 'status': {
      const s = await clusterStatus(runner, cc);
      for (const l of s.lines) out(l);
      return s.up ? 0 : 3;
    }
    case 'env':
      out(`export KUBECONFIG=${clusterPaths(cc).kubeconfig}`);
      return 0;
  }
}

if (isMain(import.meta.url)) {
  await mainWithSubcommands(SUBCOMMANDS, HELP, (sub, rest) => cluster(sub, rest));
}
