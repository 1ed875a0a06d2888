// What a person reaching the Ingress gets, checked from this machine: with TLS on, plain HTTP is
// redirected to HTTPS and HTTPS answers (saying whether the certificate is trusted: without
// INGRESS_HOST nginx serves its own self-signed one); without credentials the API refuses (401
// from Digdag, or from nginx with EDGE_AUTH=nginx-basic); with them it answers. Requests go to
// the Ingress address with the host name in Host and SNI, so no DNS record is needed. When the
// toolkit knows the certificate the Ingress must serve (its TLS Secret, INGRESS_TLS=existingSecret),
// the one served must be exactly that one, for the host.
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { apiCredentials, authorizationHeader } from '../auth.ts';
import type { Config } from '../config.ts';

export interface IngressTarget {
  /** The Ingress address (IP or host name) the controller answers on. */
  address: string;
  httpPort?: number;
  httpsPort?: number;
  /** PEM of the certificate the controller must serve (from the Ingress's TLS Secret). */
  certificate?: string;
}

interface Answer {
  status?: number;
  location?: string;
  error?: string;
  untrusted?: boolean;
  /** sha256 fingerprint of the certificate the server presented (TLS only). */
  served?: string;
}

function get(tls: boolean, t: IngressTarget, host: string | undefined, path: string, headers: Record<string, string>, insecure: boolean): Promise<Answer> {
  return new Promise((resolve) => {
    const opts = {
      host: t.address,
      port: tls ? (t.httpsPort ?? 443) : (t.httpPort ?? 80),
      path,
      method: 'GET',
      headers: { ...(host ? { host } : {}), ...headers },
      timeout: 10_000,
      ...(tls ? { servername: host && !/^[\d.]+$/.test(host) ? host : undefined, rejectUnauthorized: !insecure } : {}),
    };
    const req = (tls ? https : http).request({ ...opts, agent: false }, (res) => {
      const served = tls ? (res.socket as import('node:tls').TLSSocket).getPeerCertificate?.()?.fingerprint256 : undefined;
      res.resume();
      resolve({ status: res.statusCode, location: res.headers.location, served });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

const CERT_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;

/** HTTPS GET, trusting the certificate if possible; says when it had to be accepted untrusted. */
async function getTls(t: IngressTarget, host: string | undefined, path: string, headers: Record<string, string>): Promise<Answer> {
  const trusted = await get(true, t, host, path, headers, false);
  if (!trusted.error || !CERT_ERRORS.test(trusted.error)) return trusted;
  return { ...(await get(true, t, host, path, headers, true)), untrusted: true };
}

export interface IngressReport {
  ok: boolean;
  detail: string;
  /** The URL people use (https when TLS is on). */
  url: string;
}

export async function probeIngress(config: Config, t: IngressTarget): Promise<IngressReport> {
  const host = config.k8s.ingressHost || undefined;
  const name = host ?? t.address;
  const tls = config.security.ingressTls !== 'none';
  const creds = apiCredentials(config);
  const auth: Record<string, string> = creds ? { authorization: authorizationHeader(creds) } : {};
  const notes: string[] = [];
  let ok = true;
  if (tls) {
    const plain = await get(false, t, host, '/api/version', {}, false);
    const redirected = !!plain.status && plain.status >= 301 && plain.status <= 308 && /^https:\/\//.test(plain.location ?? '');
    ok &&= redirected;
    notes.push(redirected ? `http → ${plain.status} ${plain.location}` : `http NOT redirected to https (${plain.status ?? plain.error})`);
  }
  const fetch = (path: string, headers: Record<string, string>) => (tls ? getTls(t, host, path, headers) : get(false, t, host, path, headers, false));
  const without = await fetch('/api/projects', {});
  if (config.security.edgeAuth === 'iap') {
    // IAP answers a request without a Google login with a redirect to it (or 401/403).
    const refused = !!without.status && without.status !== 200;
    notes.push(`IAP: no Google login → ${without.status ?? without.error}${refused ? '' : ' (NOT refused)'}; with one: not checkable from here`);
    return { ok: ok && refused, detail: notes.join('; '), url: `https://${name}` };
  }
  const withCreds = await fetch('/api/projects', auth);
  if (tls && t.certificate) {
    // Pinned: the Secret's certificate, for this host, is what the controller presented.
    const want = new crypto.X509Certificate(t.certificate);
    const same = !!withCreds.served && withCreds.served === want.fingerprint256;
    const forHost = !host || !!want.checkHost(host);
    ok &&= same && forHost;
    notes.push(same ? `certificate served = the TLS Secret's (${want.subject.replace(/\n/g, ', ')}${host ? `, for ${host}` : ''})` : `certificate served is NOT the TLS Secret's (${withCreds.served ?? withCreds.error})`);
    if (!forHost) notes.push(`the TLS Secret's certificate is not for ${host}`);
  }
  if (creds) {
    ok &&= without.status === 401;
    notes.push(`no credentials → ${without.status ?? without.error}`);
  } else {
    notes.push(`AUTH=none: no credentials → ${without.status ?? without.error}`);
  }
  ok &&= withCreds.status === 200;
  notes.push(`${creds ? 'generated credentials' : 'request'} → ${withCreds.status ?? withCreds.error}`);
  if (withCreds.untrusted && !t.certificate) notes.push(host ? `certificate for ${host} NOT trusted yet (cert-manager still issuing? check: kubectl -n ${config.k8s.namespace} describe certificate)` : 'certificate not trusted: without INGRESS_HOST nginx serves its self-signed default one');
  return { ok, detail: notes.join('; '), url: `${tls ? 'https' : 'http'}://${name}` };
}
