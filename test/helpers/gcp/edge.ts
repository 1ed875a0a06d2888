// The TLS "googleapis" edge (test only): one HTTPS server, certificate from the test CA, standing
// in for www/oauth2/bigquery/storage.googleapis.com on a loopback address. It mints tokens for
// key-signed JWTs (the token_uri of the test keys) and for user logins' refresh tokens, refuses API calls without a token it minted
// (like Google: 401), records which token (so which service account) every API request carried,
// and routes by path: /bigquery/v2 and the discovery document to the BigQuery emulator,
// /storage/v1, /upload and /download to fake-gcs-server, /sql/v1beta4 (sqladmin.googleapis.com)
// to the Cloud SQL Admin API stand-in when one is attached (cloudsql-admin.ts).
//
// Two emulator gaps are closed here so a test cannot pass by accident: the BigQuery emulator's
// discovery document names its own plain-HTTP address as rootUrl (bq would bypass the edge), and
// its jobs.get answers DONE without the error a failed jobs.insert reported (Digdag polls jobs.get,
// so a failed query would look like a success) — the edge carries the insert's error forward.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import fs from 'node:fs';
import type { TestPki } from './pki.ts';
import type { MintedToken, TokenAuthority } from './tokens.ts';

export interface EdgeRequest {
  method: string;
  /** Path and query as received. */
  path: string;
  service: 'token' | 'bigquery' | 'storage' | 'discovery' | 'sqladmin' | 'other';
  /** The edge address it arrived at (the loopback one, or an extra one such as the own cluster's bridge). */
  edgeIp: string;
  userAgent: string;
  /** The token the request carried and whom it was minted for (undefined: none or unknown). */
  token?: string;
  minted?: MintedToken;
  status: number;
}

export interface Edge {
  ip: string;
  port: number;
  /** https://ip[:port] — for CLIs that take an API root (bq --api). */
  url: string;
  requests: EdgeRequest[];
  /** Where it forwards each API; read per request, so an upstream can be attached later (sqladmin). */
  upstreams: EdgeUpstreams;
  close(): Promise<void>;
}

export interface EdgeUpstreams {
  /** http://127.0.0.1:P of the BigQuery emulator. */
  bigquery?: string;
  /** http://127.0.0.1:P of fake-gcs-server. */
  storage?: string;
  /** http://127.0.0.1:P of the Cloud SQL Admin API stand-in. */
  sqladmin?: string;
}

const googleError = (code: number, status: string, message: string) => JSON.stringify({ error: { code, message, status, errors: [{ message, reason: status.toLowerCase() }] } });

function serviceOf(p: string): EdgeRequest['service'] {
  if (p === '/token' || p.startsWith('/oauth2/v4/token') || p.startsWith('/token?')) return 'token';
  if (p.startsWith('/bigquery/v2/')) return 'bigquery';
  if (p.startsWith('/discovery/v1/apis/bigquery/') || p.startsWith('/$discovery/')) return 'discovery';
  if (p.startsWith('/storage/v1/') || p.startsWith('/upload/storage/v1/') || p.startsWith('/download/storage/v1/')) return 'storage';
  if (p.startsWith('/sql/v1beta4/')) return 'sqladmin';
  return 'other';
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function startEdge(opts: { pki: TestPki; authority: TokenAuthority; upstreams: EdgeUpstreams; ip: string; port?: number; extraIps?: string[] }): Promise<Edge> {
  const requests: EdgeRequest[] = [];
  /** jobId → the errorResult jobs.insert reported (carried into later jobs.get answers). */
  const failedJobs = new Map<string, { errorResult: unknown; errors: unknown }>();

  async function proxy(req: IncomingMessage, res: ServerResponse, upstream: string, body: Buffer, service: EdgeRequest['service']): Promise<number> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v === undefined || ['host', 'connection', 'accept-encoding', 'content-length', 'transfer-encoding'].includes(k)) continue;
      headers[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    const up = await fetch(`${upstream}${req.url}`, { method: req.method, headers, body: ['GET', 'HEAD'].includes(req.method ?? 'GET') ? undefined : new Uint8Array(body), redirect: 'manual' });
    let out: Buffer = Buffer.from(await up.arrayBuffer());
    const type = up.headers.get('content-type') ?? '';
    if (service === 'discovery') {
      // Point bq back at the edge (the emulator advertises its own plain-HTTP address).
      const base = `https://${req.headers.host ?? opts.ip}/`;
      // As Google's own document has it: the API under bigquery/v2/ of the root.
      const doc = JSON.parse(out.toString('utf8')) as Record<string, unknown>;
      Object.assign(doc, { rootUrl: base, servicePath: 'bigquery/v2/', baseUrl: `${base}bigquery/v2/` });
      out = Buffer.from(JSON.stringify(doc));
    } else if (service === 'bigquery' && type.includes('json') && out.length) {
      out = carryJobErrors(req.method ?? 'GET', (req.url ?? '').split('?')[0]!, out);
    }
    const respHeaders: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (!['content-length', 'content-encoding', 'transfer-encoding', 'connection'].includes(k)) respHeaders[k] = v;
    });
    // A resumable upload's session URL (Location) names the emulator's own loopback address: a pod
    // cannot reach it (found on the own cluster: GCS log uploads "Connection refused"), and a local
    // client would bypass the edge. Point it back at the edge, as Google's names its own host.
    const location = respHeaders.location;
    if (location) {
      const origin = new URL(upstream).origin;
      if (location.startsWith(origin)) respHeaders.location = `https://${req.headers.host ?? opts.ip}${location.slice(origin.length)}`;
    }
    respHeaders['content-length'] = String(out.length);
    res.writeHead(up.status, respHeaders);
    res.end(out);
    return up.status;
  }

  function carryJobErrors(method: string, p: string, out: Buffer): Buffer {
    const insert = method === 'POST' && /^\/bigquery\/v2\/projects\/[^/]+\/jobs$/.test(p);
    const get = method === 'GET' && /^\/bigquery\/v2\/projects\/[^/]+\/(jobs|queries)\/[^/]+$/.test(p);
    if (!insert && !get) return out;
    let job: { jobReference?: { jobId?: string }; status?: { state?: string; errorResult?: unknown; errors?: unknown } };
    try {
      job = JSON.parse(out.toString('utf8'));
    } catch {
      return out;
    }
    const id = job.jobReference?.jobId ?? decodeURIComponent(p.split('/').pop() ?? '');
    if (insert && job.status?.errorResult) failedJobs.set(id, { errorResult: job.status.errorResult, errors: job.status.errors ?? [job.status.errorResult] });
    const failed = failedJobs.get(id);
    if (get && failed && /\/jobs\//.test(p)) {
      job.status = { ...job.status, state: 'DONE', errorResult: failed.errorResult, errors: failed.errors };
      return Buffer.from(JSON.stringify(job));
    }
    return out;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = req.url ?? '/';
    const service = serviceOf(p);
    const body = await readBody(req);
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
    const minted = opts.authority.whose(token);
    const rec: EdgeRequest = { method: req.method ?? 'GET', path: p, service, edgeIp: (req.socket.localAddress ?? '').replace(/^::ffff:/, ''), userAgent: String(req.headers['user-agent'] ?? ''), token, minted, status: 0 };
    requests.push(rec);
    const reply = (status: number, text: string) => {
      rec.status = status;
      res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(text);
    };
    if (service === 'token') {
      const form = new URLSearchParams(body.toString('utf8'));
      if (form.get('grant_type') === 'refresh_token') {
        const r = opts.authority.exchangeRefreshToken(form);
        if (!r.ok) return reply(r.status, JSON.stringify({ error: r.error, error_description: r.description }));
        rec.minted = r.minted;
        return reply(200, JSON.stringify({ access_token: r.minted.token, expires_in: 3599, scope: 'https://www.googleapis.com/auth/cloud-platform', token_type: 'Bearer' }));
      }
      if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer' || !form.get('assertion')) {
        return reply(400, JSON.stringify({ error: 'unsupported_grant_type', error_description: 'Invalid grant_type.' }));
      }
      const r = opts.authority.exchangeJwt(form.get('assertion')!);
      if (!r.ok) return reply(400, JSON.stringify({ error: r.error, error_description: r.description }));
      rec.minted = r.minted;
      return reply(200, JSON.stringify({ access_token: r.minted.token, expires_in: 3599, token_type: 'Bearer' }));
    }
    const upstream = service === 'storage' ? opts.upstreams.storage : service === 'bigquery' || service === 'discovery' ? opts.upstreams.bigquery
      : service === 'sqladmin' ? opts.upstreams.sqladmin : undefined;
    if (!upstream) return reply(404, googleError(404, 'NOT_FOUND', `the test edge serves no ${p}`));
    // Discovery documents are public at Google too; every API call needs a token the authority minted.
    if (service !== 'discovery' && !minted) {
      return reply(401, googleError(401, 'UNAUTHENTICATED', 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.'));
    }
    rec.status = await proxy(req, res, upstream, body, service);
  }

  // One server per address (the same handler, records and tokens): the loopback one for this
  // machine's processes, extra ones where pods reach the edge (the own cluster's bridge address).
  const servers: https.Server[] = [];
  const closeAll = () => Promise.all(servers.map((s) => new Promise<void>((resolve) => { s.closeAllConnections(); s.close(() => resolve()); })));
  let port = opts.port ?? 443;
  try {
    for (const ip of [opts.ip, ...(opts.extraIps ?? [])]) {
      const server = https.createServer({ cert: fs.readFileSync(opts.pki.certPem), key: fs.readFileSync(opts.pki.keyPem) }, (req, res) => {
        handle(req, res).catch((err: unknown) => {
          if (!res.headersSent) {
            res.writeHead(502, { 'content-type': 'application/json' });
            res.end(googleError(502, 'BAD_GATEWAY', `test edge: ${String(err)}`));
          } else res.destroy();
        });
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, ip, resolve);
      });
      servers.push(server);
      port = (server.address() as AddressInfo).port;
    }
  } catch (err) {
    await closeAll();
    throw err;
  }
  return {
    ip: opts.ip,
    port,
    url: port === 443 ? `https://${opts.ip}` : `https://${opts.ip}:${port}`,
    requests,
    upstreams: opts.upstreams,
    close: async () => { await closeAll(); },
  };
}
