// Generated secrets (DB password, Digdag encryption key): made once, kept 0600 in the state
// dir outside git, reused on every run — the encryption key must never change under live data.
import crypto from 'node:crypto';
import path from 'node:path';
import type { Config } from './config.ts';
import { UserError } from './errors.ts';
import { registerSecret } from './secrets.ts';
import { readJson, writePrivateFile } from './state.ts';

export interface Secrets {
  dbPassword: string;
  /** digdag.secret-encryption-key: base64 of 16 random bytes, the same on every node. */
  encryptionKey: string;
  /** Superuser of the in-cluster PostgreSQL (Kubernetes targets). */
  postgresPassword: string;
  /** Password of the UI/API user (AUTH_USER) for Digdag's basic authenticator (lib/auth.ts). */
  apiPassword: string;
}

export const secretsFile = (config: Config) => path.join(config.stateDir, 'secrets', 'secrets.json');

export function isValidEncryptionKey(key: string): boolean {
  return /^[A-Za-z0-9+/]{22}==$/.test(key) && Buffer.from(key, 'base64').length === 16;
}

/** Placeholders a dry run of create-secret stands in with, so later tasks can show their commands. */
const dryRunSecrets = new Map<string, Secrets>();

export function useDryRunSecrets(config: Config): void {
  if (!readJson(secretsFile(config))) dryRunSecrets.set(config.stateDir, { dbPassword: 'dry-run-db-password', encryptionKey: 'ZHJ5LXJ1bi1rZXktMTIzNA==', postgresPassword: 'dry-run-pg-password', apiPassword: 'dry-run-api-password' });
}

export function readSecrets(config: Config): Secrets | undefined {
  const s = readJson<Partial<Secrets>>(secretsFile(config)) ?? dryRunSecrets.get(config.stateDir);
  if (!s?.dbPassword || !s.encryptionKey || !s.postgresPassword || !s.apiPassword) return undefined;
  registerAll(s as Secrets);
  return s as Secrets;
}

export function requireSecrets(config: Config): Secrets {
  const s = readSecrets(config);
  if (!s) throw new UserError('no generated secrets yet', 'run the create-secret task first: npx tsx tasks/create-secret.ts');
  if (!isValidEncryptionKey(s.encryptionKey)) {
    throw new UserError(`${secretsFile(config)} holds an encryption key that is not base64 of 16 bytes`, 'restore the file from backup; do not regenerate it while the database holds encrypted secrets');
  }
  return s;
}

/** Creates whatever is missing and returns what was created; existing values are never replaced. */
export function ensureSecrets(config: Config): { secrets: Secrets; created: string[] } {
  const existing = readJson<Partial<Secrets>>(secretsFile(config)) ?? {};
  const created: string[] = [];
  const secrets: Secrets = {
    dbPassword: existing.dbPassword ?? (created.push('database password'), crypto.randomBytes(24).toString('hex')),
    encryptionKey: existing.encryptionKey ?? (created.push('encryption key'), crypto.randomBytes(16).toString('base64')),
    postgresPassword: existing.postgresPassword ?? (created.push('PostgreSQL superuser password'), crypto.randomBytes(24).toString('hex')),
    // base64url: safe in a properties file (no backslash) and in HTTP basic auth (no colon).
    apiPassword: existing.apiPassword ?? (created.push('UI/API password'), crypto.randomBytes(24).toString('base64url')),
  };
  if (created.length) writePrivateFile(secretsFile(config), JSON.stringify(secrets, null, 2) + '\n');
  registerAll(secrets);
  return { secrets, created };
}

/** Every generated value is masked in logs (lib/auth.ts adds the Authorization header it travels in). */
function registerAll(s: Secrets): void {
  registerSecret(s.dbPassword);
  registerSecret(s.encryptionKey);
  registerSecret(s.postgresPassword);
  registerSecret(s.apiPassword);
}
