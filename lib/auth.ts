// UI/API authentication: Digdag's basic authenticator (server.authenticator.*) fed from the
// password create-secret generates, in the forms each consumer needs — server properties, a 0600
// client config for `digdag push/start -c`, and an Authorization header for lib/digdag-api.ts.
// Nothing here ever puts the password on a command line or in an environment variable.
import crypto from 'node:crypto';
import path from 'node:path';
import type { Config } from './config.ts';
import type { AuthEndpoint } from './digdag.ts';
import { requireSecrets, secretsFile, type Secrets } from './credentials.ts';
import { registerSecret } from './secrets.ts';
import { writePrivateFile } from './state.ts';

export interface ApiCredentials {
  user: string;
  password: string;
}

/** The credentials the UI/API expects, or undefined when AUTH=none. */
export function apiCredentials(config: Config, secrets?: Pick<Secrets, 'apiPassword'>): ApiCredentials | undefined {
  if (config.security.auth === 'none') return undefined;
  return { user: config.security.authUser, password: (secrets ?? requireSecrets(config)).apiPassword };
}

/** `Basic …` for the Authorization header; registered so no log line can show it. */
export function authorizationHeader(c: ApiCredentials): string {
  const token = Buffer.from(`${c.user}:${c.password}`, 'utf8').toString('base64');
  registerSecret(token);
  return `Basic ${token}`;
}

/**
 * Secret part of a role's properties (appended to the 0600 file / mounted from the Secret).
 * Digdag 0.10.5.1 (BasicAuthenticatorFactory): type defaults to basic, and without a
 * username it falls back to NoAuthenticator — so AUTH=none writes nothing.
 */
export function authProperties(c: ApiCredentials | undefined): string {
  if (!c) return '';
  return [
    'server.authenticator.type = basic',
    `server.authenticator.basic.username = ${c.user}`,
    `server.authenticator.basic.password = ${c.password}`,
    // Admin rights (/api/admin/*) are not needed by the UI, the CLI or this toolkit.
    'server.authenticator.basic.admin = false',
    '',
  ].join('\n');
}

/**
 * A role nobody should call (agent, scheduler, workflow on Kubernetes) still serves the API:
 * lock it with a throw-away password that exists only in that process's properties, so a sh>
 * task reading its own pod's files learns nothing that opens the UI.
 */
export function lockedAuthProperties(user: string): string {
  const throwaway = crypto.randomBytes(24).toString('base64url');
  registerSecret(throwaway);
  return authProperties({ user, password: throwaway });
}

/**
 * The auth part of one process's secret properties: the real password where people log in
 * (lib/roles.ts servesUsers, localApiRole), a throw-away one elsewhere, nothing with AUTH=none.
 */
export function roleAuthProperties(servesUsers: boolean, c: ApiCredentials | undefined): string {
  if (!c) return '';
  return servesUsers ? authProperties(c) : lockedAuthProperties(c.user);
}

export const clientConfigFile = (config: Config) => path.join(config.stateDir, 'secrets', 'digdag-client.properties');

/**
 * Config for the digdag CLI client, read with `-c FILE` (ClientCommand.buildClient):
 * client.http.headers.* become request headers, so the password stays off argv (unlike
 * --basic-auth user:pass) and out of the environment (unlike DIGDAG_CONFIG).
 */
export function clientConfig(endpoint: string, c: ApiCredentials | undefined): string {
  const lines = ['# digdag-ha: digdag CLI client config (0600). Use: digdag push|start|… -c <this file>', `client.http.endpoint = ${endpoint}`];
  if (c) lines.push(`client.http.headers.Authorization = ${authorizationHeader(c)}`);
  return lines.join('\n') + '\n';
}

export function writeClientConfig(config: Config, endpoint: string): string {
  const file = clientConfigFile(config);
  writePrivateFile(file, clientConfig(endpoint, apiCredentials(config)));
  return file;
}

/** What the toolkit prints after create-secret / apply: where the password is, never the password. */
export function credentialsHint(config: Config): string[] {
  if (config.security.auth === 'none') {
    return [`WARNING: AUTH=none — Digdag accepts every request without credentials; anyone who reaches its port can run commands through sh> tasks as the user Digdag runs as.`];
  }
  const file = secretsFile(config);
  const lines = [
    `UI/API user: ${config.security.authUser}`,
    `password: in ${file} (0600); print it with: node -p "require('${file}').apiPassword"`,
    `digdag CLI: digdag push <project> -c ${clientConfigFile(config)}   (the file carries the endpoint and the Authorization header)`,
  ];
  if (config.target !== 'local') {
    lines.push(`on the cluster: kubectl -n ${config.k8s.namespace} get secret digdag-api-credentials -o jsonpath='{.data.password}' | base64 -d`);
  }
  return lines;
}

/** The Endpoint lib/digdag-api.ts calls: the URL plus the Authorization header when AUTH=basic. */
export function authenticatedEndpoint(config: Config, url: string): AuthEndpoint {
  const c = apiCredentials(config);
  return c ? { url, authorization: authorizationHeader(c) } : { url };
}

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Apache's $apr1$ MD5-crypt of a password with an 8-character salt (the htpasswd -m format). */
export function apr1(password: string, salt: string): string {
  const md5 = (...parts: Buffer[]) => crypto.createHash('md5').update(Buffer.concat(parts)).digest();
  const pw = Buffer.from(password, 'utf8');
  const s = Buffer.from(salt.slice(0, 8), 'utf8');
  const magic = Buffer.from('$apr1$');
  let alt = md5(pw, s, pw);
  const parts: Buffer[] = [pw, magic, s];
  for (let n = pw.length; n > 0; n -= 16) parts.push(alt.subarray(0, Math.min(n, 16)));
  for (let i = pw.length; i; i >>= 1) parts.push(i & 1 ? Buffer.alloc(1) : pw.subarray(0, 1));
  let f = md5(...parts);
  for (let i = 0; i < 1000; i++) {
    const round: Buffer[] = [i & 1 ? pw : f];
    if (i % 3) round.push(s);
    if (i % 7) round.push(pw);
    round.push(i & 1 ? f : pw);
    f = md5(...round);
  }
  alt = f;
  const to64 = (v: number, n: number) => {
    let out = '';
    for (let i = 0; i < n; i++, v >>= 6) out += ITOA64[v & 0x3f];
    return out;
  };
  let out = '';
  for (const [a, b, c] of [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] as const) out += to64((alt[a]! << 16) | (alt[b]! << 8) | alt[c]!, 4);
  out += to64(alt[11]!, 2);
  return `$apr1$${salt.slice(0, 8)}$${out}`;
}

/**
 * One htpasswd line for basic auth at the edge (Secret digdag-edge-auth, key "auth"), in Apache's
 * $apr1$ format: nginx checks it itself on every libc, and so does every controller that reads
 * the nginx.ingress.kubernetes.io/auth-* annotations (Traefik's kubernetesIngressNGINX provider
 * refuses {SSHA}). The password is 192 random bits, so the hash's speed does not matter.
 */
export function htpasswdLine(c: ApiCredentials, salt = Array.from(crypto.randomBytes(8), (b) => ITOA64[b & 0x3f]).join('')): string {
  return `${c.user}:${apr1(c.password, salt)}\n`;
}
