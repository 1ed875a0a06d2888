// create-secret on the local target: generate the DB password, the Digdag encryption key and the
// UI/API password once (0600, outside git) and reuse them; say where to read the password.
import { credentialsHint } from '../auth.ts';
import { ensureSecrets, readSecrets, secretsFile, useDryRunSecrets } from '../credentials.ts';
import type { Impl } from '../pipeline.ts';

export const createSecret: Impl = {
  // Never regenerated once made: the encryption key must match the data already encrypted.
  notApplicable: (ctx) => (readSecrets(ctx.config) && !ctx.force ? `secrets exist in ${secretsFile(ctx.config)} (kept; never rotated automatically)` : undefined),
  run: async (ctx) => {
    const made = await ctx.runner.change(`would write ${secretsFile(ctx.config)} (0600) with any missing secret`, () => ensureSecrets(ctx.config));
    if (!made) {
      // Placeholders, so the later tasks of a dry run can show their commands.
      useDryRunSecrets(ctx.config);
      return;
    }
    const { created } = made;
    ctx.runner.log(created.length ? `generated ${created.join(', ')} in ${secretsFile(ctx.config)} (0600)` : 'secrets already present; kept');
    for (const line of credentialsHint(ctx.config)) ctx.runner.log(line);
  },
};
