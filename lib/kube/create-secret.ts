// create-secret on Kubernetes: the generated secrets (lib/credentials.ts) applied as Secrets
// through stdin; the namespace is created first.
import fs from 'node:fs';
import path from 'node:path';
import { ensureSecrets, requireSecrets, useDryRunSecrets } from '../credentials.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { parseDatabaseUrl } from '../postgres.ts';
import { secretProperties } from '../properties.ts';
import { writePrivateFile } from '../state.ts';
import { clusterKubectl, kubectl, requireCluster } from './kubectl.ts';

/** `kubectl create secret … --dry-run=client -o yaml | kubectl apply -f -`, values from 0600 files. */
async function applySecret(ctx: Ctx, name: string, files: Record<string, string>): Promise<void> {
  const dir = path.join(ctx.config.stateDir, 'secrets', `.${name}`);
  try {
    const args: string[] = [];
    for (const [key, value] of Object.entries(files)) {
      writePrivateFile(path.join(dir, key), value);
      args.push(`--from-file=${key}=${path.join(dir, key)}`);
    }
    const made = await ctx.runner.run({ argv: kubectl(ctx.config, 'create', 'secret', 'generic', name, ...args, '--dry-run=client', '-o', 'yaml'), quiet: true });
    await ctx.runner.run({ argv: kubectl(ctx.config, 'apply', '-f', '-'), input: made.stdout, mutates: true });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export const createSecret: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    if (ctx.runner.dryRun) useDryRunSecrets(ctx.config);
    const { secrets, created } = ctx.runner.dryRun ? { secrets: requireSecrets(ctx.config), created: [] } : ensureSecrets(ctx.config);
    if (created.length) ctx.runner.log(`generated ${created.join(', ')} (kept 0600 in ${ctx.config.stateDir}/secrets)`);
    const ns = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'create', 'namespace', ctx.config.k8s.namespace, '--dry-run=client', '-o', 'yaml'), quiet: true });
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'apply', '-f', '-'), input: ns.stdout, mutates: true });
    const dbPassword = ctx.config.db.externalUrl ? parseDatabaseUrl(ctx.config.db.externalUrl).password : secrets.dbPassword;
    await applySecret(ctx, 'digdag-secrets', {
      'secret.properties': secretProperties(dbPassword, secrets.encryptionKey),
      'db-password': dbPassword,
      'postgres-password': secrets.postgresPassword,
    });
    if (ctx.config.gcp.saKeyFile) await applySecret(ctx, 'digdag-gcp-key', { 'key.json': fs.readFileSync(ctx.config.gcp.saKeyFile, 'utf8') });
  },
};
