// The server side of a Cloud SQL instance (test only): a mutual-TLS listener on port 3307 (the
// port the connectors always dial) with the instance's server certificate (CN project:instance,
// signed by the instance CA the Admin API stand-in hands out), requiring TLS 1.3 and a client
// certificate signed by that CA (an ephemeral certificate from generateEphemeralCert), then
// piping the decrypted bytes to a real PostgreSQL. It records each connection: the client
// certificate's subject, and what the client sent first — the proxy sends the PostgreSQL client's
// own bytes (an SSLRequest or a StartupMessage), no header of its own unless the Admin API
// announces metadata exchange (this stand-in does not).
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { CloudSqlInstancePki } from './pki.ts';

export interface InstanceConnection {
  clientSubject: string;
  /** Where the connection came from (on the own cluster: the pod's address). */
  remoteAddress: string;
  /** When the handshake completed (ms since the epoch). */
  at: number;
  /** The first bytes the client sent after the handshake (hex, up to 8). */
  firstBytes: string;
  /** What they are: a PostgreSQL SSLRequest, a StartupMessage (protocol 3.0), or something else. */
  firstMessage: 'SSLRequest' | 'StartupMessage' | 'GSSENCRequest' | 'CancelRequest' | 'other';
}

export interface InstanceListener {
  address: string;
  port: number;
  connections: InstanceConnection[];
  /** Handshakes refused (e.g. no or a foreign client certificate): the TLS error's code or message. */
  refused: string[];
  close(): Promise<void>;
}

/** Cloud SQL's server side listens on 3307 and the connectors dial that port, always. */
export const CLOUD_SQL_SERVER_PORT = 3307;

function classify(b: Buffer): InstanceConnection['firstMessage'] {
  if (b.length < 8) return 'other';
  const code = b.readUInt32BE(4);
  if (code === 80877103) return 'SSLRequest';
  if (code === 80877104) return 'GSSENCRequest';
  if (code === 80877102) return 'CancelRequest';
  if (code === 196608) return 'StartupMessage';
  return 'other';
}

export async function startInstanceListener(opts: { pki: CloudSqlInstancePki; bind: string; upstream: { host: string; port: number }; port?: number }): Promise<InstanceListener> {
  const connections: InstanceConnection[] = [];
  const refused: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({
    cert: fs.readFileSync(opts.pki.certPem),
    key: fs.readFileSync(opts.pki.keyPem),
    ca: [fs.readFileSync(opts.pki.caPem)],
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const subject = client.getPeerCertificate().subject as unknown as Record<string, string> | undefined;
    const conn: InstanceConnection = {
      clientSubject: subject ? Object.entries(subject).map(([k, v]) => `${k}=${v}`).join(',') : '',
      remoteAddress: (client.remoteAddress ?? '').replace(/^::ffff:/, ''), at: Date.now(), firstBytes: '', firstMessage: 'other',
    };
    connections.push(conn);
    const upstream = net.connect(opts.upstream.port, opts.upstream.host);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.once('data', (b: Buffer) => {
      conn.firstBytes = b.subarray(0, 8).toString('hex');
      conn.firstMessage = classify(b);
    });
    client.pipe(upstream).pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('error', end);
    upstream.on('error', end);
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException) => refused.push(err.code ?? err.message));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? CLOUD_SQL_SERVER_PORT, opts.bind, resolve);
  });
  const a = server.address() as net.AddressInfo;
  return {
    address: a.address,
    port: a.port,
    connections,
    refused,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
