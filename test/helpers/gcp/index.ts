// The whole offline Google Cloud of the tests, in one place: emulators behind the TLS edge, the
// token authority with its service accounts, an optional metadata server, and the test-only
// settings that point Digdag (JVM hosts file + truststore through JAVA_TOOL_OPTIONS) and the
// gcloud/bq CLIs (their own settings) at it. Nothing here is part of what a user deploys.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEdge, type Edge } from './edge.ts';
import { startBigqueryEmulator, startFakeGcs, type Emulator } from './emulators.ts';
import { startMetadataServer, type MetadataServer } from './metadata-server.ts';
import { GOOGLEAPIS_HOSTS, makeTestPki, type TestPki } from './pki.ts';
import { newServiceAccountKey, newUserLogin, TokenAuthority, type UserLogin } from './tokens.ts';

export { emulatorsMissing } from './emulators.ts';
export type { Edge, EdgeRequest } from './edge.ts';

/** The loopback address the edge answers on, port 443 (Digdag's clients use the default port). */
export const EDGE_IP = '127.0.0.77';

export interface GoogleApis {
  dir: string;
  project: string;
  pki: TestPki;
  authority: TokenAuthority;
  edge: Edge;
  bigquery: Emulator;
  storage: Emulator;
  /** The JVM hosts file: the googleapis names → EDGE_IP (other names do not resolve, localhost does). */
  hostsFile: string;
  /** A service-account key file (token_uri at the edge) for a registered account. */
  keyFile(email: string): string;
  /** A well-formed key for the account whose private key is NOT the registered one. */
  wrongKeyFile(email: string): string;
  /** A user's login (registered with the authority) as the authorized_user ADC file gcloud writes. */
  userAdcFile(email: string): { file: string; login: UserLogin };
  /** `bind`: the address it listens on (default 127.0.0.1; the own cluster's bridge address for pods). */
  startMetadata(email: string, bind?: string): Promise<MetadataServer>;
  /**
   * The test-only environment of the Digdag processes (their sh> tasks inherit it): the JVM
   * redirection and the CLIs' endpoint/CA settings; with `metadata`, where ADC finds its server.
   * Without it, ADC's metadata lookup goes to a closed loopback port (fails fast: no identity).
   */
  env(metadata?: MetadataServer): Record<string, string>;
  stop(): Promise<void>;
}

/** `edgeIps`: more addresses the edge answers on, port 443 too (e.g. the own cluster's bridge, for pods). */
export async function startGoogleApis(opts: { dir: string; project: string; accounts: string[]; buckets?: string[]; edgeIps?: string[] }): Promise<GoogleApis> {
  fs.mkdirSync(opts.dir, { recursive: true });
  const pki = makeTestPki(path.join(opts.dir, 'pki'), EDGE_IP);
  const authority = new TokenAuthority();
  const tokenUri = 'https://oauth2.googleapis.com/token';
  const keys = new Map<string, string>();
  for (const email of opts.accounts) {
    const k = newServiceAccountKey(email, opts.project, tokenUri);
    authority.register({ email, publicKey: k.publicKey });
    keys.set(email, k.json);
  }
  const stops: (() => Promise<void>)[] = [];
  try {
    // GCS first: the BigQuery emulator's extract jobs write there.
    const storage = await startFakeGcs(opts.dir, opts.buckets);
    stops.push(storage.stop);
    const bigquery = await startBigqueryEmulator(opts.project, opts.dir, storage.url);
    stops.push(bigquery.stop);
    const edge = await startEdge({ pki, authority, upstreams: { bigquery: bigquery.url, storage: storage.url }, ip: EDGE_IP, port: 443, extraIps: opts.edgeIps });
    stops.push(edge.close);
    const hostsFile = path.join(opts.dir, 'hosts');
    fs.writeFileSync(hostsFile, `127.0.0.1 localhost ${os.hostname()}\n${EDGE_IP} ${GOOGLEAPIS_HOSTS.join(' ')}\n`);
    const bigqueryrc = path.join(opts.dir, 'bigqueryrc');
    // bq (Python) ignores the JVM hosts file: it gets the edge's address as its API root.
    fs.writeFileSync(bigqueryrc, `--api=${edge.url}\n`);
    const writeKey = (name: string, text: string) => {
      const f = path.join(opts.dir, 'keys', name);
      fs.mkdirSync(path.dirname(f), { recursive: true, mode: 0o700 });
      fs.writeFileSync(f, text, { mode: 0o600 });
      return f;
    };
    return {
      dir: opts.dir, project: opts.project, pki, authority, edge, bigquery, storage, hostsFile,
      keyFile: (email) => writeKey(`${email}.json`, keys.get(email)!),
      wrongKeyFile: (email) => writeKey(`${email}.wrong.json`, newServiceAccountKey(email, opts.project, tokenUri).json),
      userAdcFile: (email) => {
        const { login, json } = newUserLogin(email);
        authority.registerUser(login);
        return { file: writeKey(`${email}.${login.clientId.split('-')[0]}.adc.json`, json), login };
      },
      startMetadata: async (email, bind) => {
        const m = await startMetadataServer({ authority, email, project: opts.project, bind });
        stops.push(m.close);
        return m;
      },
      env: (metadata) => {
        const md = metadata?.hostPort ?? '127.0.0.1:9';
        return {
          JAVA_TOOL_OPTIONS: [`-Djdk.net.hosts.file=${hostsFile}`, `-Djavax.net.ssl.trustStore=${pki.truststore}`,
            `-Djavax.net.ssl.trustStorePassword=${pki.truststorePassword}`, '-Djavax.net.ssl.trustStoreType=PKCS12'].join(' '),
          // Java (google-auth, google-api-client) and bq's google-auth; gcloud reads GCE_METADATA_ROOT.
          GCE_METADATA_HOST: md,
          GCE_METADATA_IP: md,
          GCE_METADATA_ROOT: md,
          BIGQUERYRC: bigqueryrc,
          CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE: pki.caPem,
          // gcloud's token refresh goes through plain requests sessions, which read only this.
          REQUESTS_CA_BUNDLE: pki.caPem,
          // gcloud's token refresh for a key goes to the key's token_uri; its own Python resolves
          // names through the system: requests to oauth2.googleapis.com go to the edge by address.
          CLOUDSDK_AUTH_TOKEN_HOST: `${edge.url}/token`,
          CLOUDSDK_CORE_DISABLE_USAGE_REPORTING: 'true',
          CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: 'true',
        };
      },
      stop: async () => {
        for (const s of stops.reverse()) await s().catch(() => undefined);
      },
    };
  } catch (err) {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    throw err;
  }
}
