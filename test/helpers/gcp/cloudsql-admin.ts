// A stand-in of the Cloud SQL Admin API (test only) for the real Cloud SQL Auth Proxy
// (`--sqladmin-api-endpoint`): HTTPS with a certificate of the test CA (pki.ts), answering the two
// calls a connector makes for one instance — GET …/connectSettings (region, SECOND_GEN, the
// instance's IP addresses, its server CA) and POST …:generateEphemeralCert (the proxy's public key
// signed by the instance's CA). Like Google, it refuses a call whose token the token authority did
// not mint (401) and an instance it does not know (404), and records every request with the
// token it carried and whom that token was minted for. Shapes follow the connector's own mock
// (cloud.google.com/go/cloudsqlconn internal/mock/sqladmin.go); no mdxProtocolSupport is
// announced, so the proxy sends the client's PostgreSQL bytes right after the TLS handshake.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { CloudSqlInstancePki, TestPki } from './pki.ts';
import type { MintedToken, TokenAuthority } from './tokens.ts';

export interface SqlAdminRequest {
  method: string;
  path: string;
  kind: 'connectSettings' | 'generateEphemeralCert' | 'other';
  /** project:instance from the path (region is not part of Admin API paths). */
  instance?: string;
  userAgent: string;
  token?: string;
  minted?: MintedToken;
  status: number;
}

export interface FakeSqlAdmin {
  /** https://ip:port — the value of --sqladmin-api-endpoint (http://… without `tls`: an upstream of the edge). */
  url: string;
  requests: SqlAdminRequest[];
  close(): Promise<void>;
}

export interface FakeSqlAdminOptions {
  /** Its HTTPS certificate; without it, plain HTTP on loopback — behind the TLS edge (edge.ts), which
   * then answers for sqladmin.googleapis.com as Google does. */
  tls?: TestPki;
  authority: TokenAuthority;
  /** The one instance: PROJECT:REGION:INSTANCE. */
  connectionName: string;
  instancePki: CloudSqlInstancePki;
  /** The instance's addresses (the proxy dials ADDRESS:3307): PRIMARY = public, PRIVATE = private IP. */
  publicIp?: string;
  privateIp?: string;
  databaseVersion?: string;
  /** Where to listen (loopback or a test address covered by the TLS certificate). */
  bind: string;
  port?: number;
}

const googleError = (code: number, status: string, reason: string, message: string) =>
  JSON.stringify({ error: { code, message, status, errors: [{ message, domain: 'global', reason }] } });

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The proxy sends a PKIX (SubjectPublicKeyInfo) key in a block labelled "RSA PUBLIC KEY": re-label it. */
function pkixPem(text: string): string {
  const m = /-----BEGIN [A-Z ]*PUBLIC KEY-----([\s\S]*?)-----END [A-Z ]*PUBLIC KEY-----/.exec(text);
  if (!m) throw new Error('no PEM public key');
  const pem = `-----BEGIN PUBLIC KEY-----${m[1]}-----END PUBLIC KEY-----\n`;
  const key = crypto.createPublicKey(pem);
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`an ${key.asymmetricKeyType} key, not RSA`);
  return pem;
}

export async function startFakeSqlAdmin(opts: FakeSqlAdminOptions): Promise<FakeSqlAdmin> {
  const [project, region, instance] = opts.connectionName.split(':');
  const requests: SqlAdminRequest[] = [];
  const base = `/sql/v1beta4/projects/${project}/instances/${instance}`;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'https://sqladmin.googleapis.com');
      const m = /^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/:]+)(\/connectSettings|:generateEphemeralCert)$/.exec(url.pathname);
      const kind: SqlAdminRequest['kind'] = m?.[3] === '/connectSettings' && req.method === 'GET' ? 'connectSettings'
        : m?.[3] === ':generateEphemeralCert' && req.method === 'POST' ? 'generateEphemeralCert' : 'other';
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      const minted = opts.authority.whose(token);
      const rec: SqlAdminRequest = {
        method: req.method ?? '', path: req.url ?? '', kind, instance: m ? `${m[1]}:${m[2]}` : undefined,
        userAgent: String(req.headers['user-agent'] ?? ''), token, minted, status: 0,
      };
      requests.push(rec);
      const body = await readBody(req);
      const send = (status: number, text: string) => {
        rec.status = status;
        res.writeHead(status, { 'Content-Type': 'application/json; charset=UTF-8' });
        res.end(text);
      };
      if (!minted) {
        return send(401, googleError(401, 'UNAUTHENTICATED', 'authError',
          'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.'));
      }
      if (kind === 'other') return send(404, googleError(404, 'NOT_FOUND', 'notFound', `No such method: ${req.method} ${url.pathname}`));
      if (!url.pathname.startsWith(base)) {
        return send(404, googleError(404, 'NOT_FOUND', 'instanceDoesNotExist', 'The Cloud SQL instance does not exist.'));
      }
      if (kind === 'connectSettings') {
        const ipAddresses = [
          ...(opts.publicIp ? [{ type: 'PRIMARY', ipAddress: opts.publicIp }] : []),
          ...(opts.privateIp ? [{ type: 'PRIVATE', ipAddress: opts.privateIp }] : []),
        ];
        return send(200, JSON.stringify({
          kind: 'sql#connectSettings',
          serverCaCert: { kind: 'sql#sslCert', cert: opts.instancePki.caText, commonName: 'C=US,O=Google\\, Inc,CN=Google Cloud SQL Server CA', instance },
          ipAddresses,
          region,
          databaseVersion: opts.databaseVersion ?? 'POSTGRES_15',
          backendType: 'SECOND_GEN',
          pscEnabled: false,
          serverCaMode: 'GOOGLE_MANAGED_INTERNAL_CA',
        }));
      }
      let publicKey: string;
      try {
        publicKey = pkixPem(String((JSON.parse(body) as { public_key?: unknown }).public_key ?? ''));
      } catch (err) {
        return send(400, googleError(400, 'INVALID_ARGUMENT', 'invalid', `Invalid request: public_key: ${(err as Error).message}`));
      }
      const cert = opts.instancePki.signClientKey(publicKey);
      const now = new Date();
      return send(200, JSON.stringify({
        ephemeralCert: {
          kind: 'sql#sslCert', cert, commonName: 'Google Cloud SQL Client', instance,
          createTime: now.toISOString(), expirationTime: new Date(now.getTime() + 86_400_000).toISOString(),
        },
      }));
    })().catch((err) => {
      res.writeHead(500, { 'Content-Type': 'application/json' });
      res.end(googleError(500, 'INTERNAL', 'backendError', String(err)));
    });
  };
  const server = opts.tls ? https.createServer({ cert: fs.readFileSync(opts.tls.certPem), key: fs.readFileSync(opts.tls.keyPem) }, handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.bind, resolve);
  });
  const a = server.address() as AddressInfo;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${a.address}:${a.port}`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
