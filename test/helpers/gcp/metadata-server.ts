// A GCE/GKE metadata server of the project's own (test only): the identity a pod gets under
// Workload Identity. It mints a distinct token (through the shared TokenAuthority) for the one
// service account it serves and records every request. Java (GCE_METADATA_HOST), gcloud
// (GCE_METADATA_ROOT) and bq's google-auth (GCE_METADATA_HOST/GCE_METADATA_IP) all reach it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TokenAuthority } from './tokens.ts';

export interface MetadataServer {
  /** host:port, the value of GCE_METADATA_HOST / GCE_METADATA_ROOT / GCE_METADATA_IP. */
  hostPort: string;
  /** Path (and query) of every request, in order. */
  requests: string[];
  /** false: answers like a VM without a service account (no account listed, 404 for a token) — no identity. */
  serveIdentity(on: boolean): void;
  close(): Promise<void>;
}

const SCOPES = ['https://www.googleapis.com/auth/cloud-platform', 'https://www.googleapis.com/auth/userinfo.email'];

export async function startMetadataServer(opts: { authority: TokenAuthority; email: string; project: string; bind?: string }): Promise<MetadataServer> {
  const requests: string[] = [];
  let identity = true;
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://metadata.google.internal');
    const send = (status: number, body: string, type = 'application/text') => {
      res.writeHead(status, { 'Metadata-Flavor': 'Google', 'Content-Type': type, Server: 'Metadata Server for VM' });
      res.end(body);
    };
    if (url.pathname === '/') return send(200, 'computeMetadata/\n');
    if (!url.pathname.startsWith('/computeMetadata/v1/')) return send(404, 'not found');
    // Like the real server: requests without the header are refused (no SSRF through a proxy).
    if (req.headers['metadata-flavor'] !== 'Google') return send(403, 'Missing Metadata-Flavor:Google header.');
    const p = url.pathname.slice('/computeMetadata/v1/'.length).replace(/\/+$/, '/');
    const sa = /^instance\/service-accounts\/([^/]+)\/(.*)$/.exec(p);
    if (sa && ((sa[1] !== 'default' && sa[1] !== opts.email) || !identity)) return send(404, 'not found');
    if (p === 'instance/service-accounts/' && !identity) return send(200, '');
    const what = sa ? sa[2] : undefined;
    const recursive = url.searchParams.get('recursive') === 'true';
    switch (true) {
      case p === 'project/project-id': return send(200, opts.project);
      case p === 'project/numeric-project-id': return send(200, '123456789012');
      case p === 'instance/id': return send(200, '4242424242424242');
      case p === 'instance/zone': return send(200, 'projects/123456789012/zones/asia-northeast1-a');
      case p === 'instance/service-accounts/': return send(200, `default/\n${opts.email}/\n`);
      case what === '' && recursive: return send(200, JSON.stringify({ aliases: ['default'], email: opts.email, scopes: SCOPES }), 'application/json');
      case what === '': return send(200, 'aliases\nemail\nidentity\nscopes\ntoken\n');
      case what === 'email': return send(200, opts.email);
      case what === 'aliases': return send(200, 'default');
      case what === 'scopes': return send(200, SCOPES.join('\n') + '\n');
      case what === 'token': {
        const t = opts.authority.mint(opts.email, 'metadata');
        return send(200, JSON.stringify({ access_token: t.token, expires_in: 3599, token_type: 'Bearer' }), 'application/json');
      }
      default: return send(404, 'not found');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, opts.bind ?? '127.0.0.1', resolve);
  });
  const a = server.address() as AddressInfo;
  return {
    hostPort: `${a.address}:${a.port}`,
    requests,
    serveIdentity: (on) => { identity = on; },
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
