// create-secret on the local target: generate the DB password and the Digdag encryption key
// once (0600, outside git) and reuse them.
import { ensureSecrets, readSecrets, secretsFile, useDryRunSecrets } from '../credentials.ts';
import type { Impl } from '../pipeline.ts';

export const createSecret: Impl = {
  // Never regenerated once made: the encryption key must match the data already encrypted.
  notApplicable: (ctx) => (readSecrets(ctx.config) && !ctx.force ? `secrets exist in ${secretsFile(ctx.config)} (kept; never rotated automatically)` : undefined),
  run: async (ctx) => {
    if (ctx.runner.dryRun) {
      ctx.runner.log(`[dry-run] would write ${secretsFile(ctx.config)} (0600) with any missing secret`);
      useDryRunSecrets(ctx.config);
      return;
    }
    const { created } = ensureSecrets(ctx.config);
    ctx.runner.log(created.length ? `generated ${created.join(', ')} in ${secretsFile(ctx.config)} (0600)` : 'secrets already present; kept');
  },
};
