// create-secret on Kubernetes: the generated secrets (lib/credentials.ts) applied as Secrets
// through stdin; the namespace (the rendered one, with its Pod Security labels) first.
import fs from 'node:fs';
import path from 'node:path';
import { apiCredentials, credentialsHint, htpasswdLine } from '../auth.ts';
import { ensureSecrets, requireSecrets, useDryRunSecrets } from '../credentials.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { parseDatabaseUrl } from '../postgres.ts';
import { secretProperties } from '../properties.ts';
import { writePrivateFile } from '../state.ts';
import { applyObjects, byKind, kubectl, requireCluster } from './kubectl.ts';
import { renderManifests } from './render.ts';

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
    // Rendered first: a configuration the chart refuses stops here, before anything is made.
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await requireCluster(ctx);
    const made = await ctx.runner.change(undefined, () => ensureSecrets(ctx.config));
    if (!made) useDryRunSecrets(ctx.config);
    const { secrets, created } = made ?? { secrets: requireSecrets(ctx.config), created: [] };
    if (created.length) ctx.runner.log(`generated ${created.join(', ')} (kept 0600 in ${ctx.config.stateDir}/secrets)`);
    // The same Namespace object start-postgres and apply send: a bare `create namespace` here
    // would drop its Pod Security labels on the next apply.
    await applyObjects(ctx, byKind(objects, 'Namespace'));
    // A DATABASE_URL without a password (as tasks/gcp.ts writes it) means the generated one, which gcp up gave the Cloud SQL user.
    const dbPassword = (ctx.config.db.externalUrl ? parseDatabaseUrl(ctx.config.db.externalUrl).password : '') || secrets.dbPassword;
    await applySecret(ctx, 'digdag-secrets', {
      'secret.properties': secretProperties(dbPassword, secrets.encryptionKey),
      'db-password': dbPassword,
      'postgres-password': secrets.postgresPassword,
    });
    const creds = apiCredentials(ctx.config, secrets);
    if (creds) {
      // Mounted whole into the UI pods, only `username` into the others (they lock their API).
      await applySecret(ctx, 'digdag-api-credentials', { username: creds.user, password: creds.password });
      if (ctx.config.security.edgeAuth === 'nginx-basic') await applySecret(ctx, 'digdag-edge-auth', { auth: htpasswdLine(creds) });
    }
    if (ctx.config.gcp.saKeyFile) await applySecret(ctx, 'digdag-gcp-key', { 'key.json': fs.readFileSync(ctx.config.gcp.saKeyFile, 'utf8') });
    for (const line of credentialsHint(ctx.config)) ctx.runner.log(line);
  },
};
