// The test CA of the GCP fixtures (openssl): one server certificate for the googleapis edge's
// names and address, the CA as PEM (gcloud, bq) and as a PKCS12 truststore (Java). Test only.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The Google API names the edge answers for (Digdag's clients, the log server, the CLIs, the Cloud SQL Auth Proxy's Admin API). */
export const GOOGLEAPIS_HOSTS = ['www.googleapis.com', 'oauth2.googleapis.com', 'bigquery.googleapis.com', 'storage.googleapis.com', 'sqladmin.googleapis.com'] as const;

export interface TestPki {
  dir: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** PKCS12 truststore holding only the test CA (JVM: -Djavax.net.ssl.trustStore). */
  truststore: string;
  truststorePassword: string;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** A fresh CA and a server certificate for GOOGLEAPIS_HOSTS and `ip` (one or more addresses), under `dir` (keys 0600). */
export function makeTestPki(dir: string, ip: string | string[]): TestPki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=digdag-ha GCP test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', ...ec, '-keyout', f('edge.key'), '-out', f('edge.csr'), '-subj', '/CN=www.googleapis.com']);
  const sans = [...GOOGLEAPIS_HOSTS.map((h) => `DNS:${h}`), ...[ip].flat().map((a) => `IP:${a}`)].join(',');
  fs.writeFileSync(f('edge.ext'), `subjectAltName=${sans}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['x509', '-req', '-in', f('edge.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('edge.pem'), '-days', '2', '-extfile', f('edge.ext')]);
  const truststorePassword = 'test-truststore';
  execFileSync('keytool', ['-importcert', '-noprompt', '-alias', 'digdag-ha-gcp-test-ca', '-file', f('ca.pem'), '-keystore', f('truststore.p12'),
    '-storetype', 'PKCS12', '-storepass', truststorePassword], { stdio: ['ignore', 'ignore', 'pipe'] });
  for (const k of ['ca.key', 'edge.key']) fs.chmodSync(f(k), 0o600);
  return {
    dir, caPem: f('ca.pem'), certPem: f('edge.pem'), keyPem: f('edge.key'), truststore: f('truststore.p12'), truststorePassword,
  };
}

/**
 * A Cloud SQL instance's own PKI, as the Admin API describes it (legacy "GOOGLE_MANAGED_INTERNAL_CA"
 * mode): a per-instance server CA (connectSettings.serverCaCert), the instance's server certificate
 * with CN `project:instance` (what the connectors check when the instance has no DNS name), and
 * ephemeral client certificates signed by the same CA for the public keys generateEphemeralCert
 * receives. Made with the same openssl steps as the test CA above; a separate CA on purpose, as
 * in Cloud SQL (the Admin API's HTTPS certificate and the instance's are unrelated).
 */
export interface CloudSqlInstancePki {
  caPem: string;
  /** PEM text of the CA (the connectSettings answer). */
  caText: string;
  certPem: string;
  keyPem: string;
  /** A PEM client certificate (CN "Google Cloud SQL Client", clientAuth, valid 1 day) for an RSA public key in PEM. */
  signClientKey(publicKeyPem: string): string;
}

export function makeCloudSqlInstancePki(dir: string, connectionName: string): CloudSqlInstancePki {
  const [project, , instance] = connectionName.split(':');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('instance-ca.key'), '-out', f('instance-ca.pem'), '-days', '2',
    '-subj', `/C=US/O=Google\\, Inc/CN=Google Cloud SQL Server CA/dnQualifier=${instance}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/C=US/O=Google\\, Inc/CN=${project}:${instance}`]);
  fs.writeFileSync(f('server.ext'), 'extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('instance-ca.pem'), '-CAkey', f('instance-ca.key'), '-CAcreateserial',
    '-out', f('server.pem'), '-days', '2', '-extfile', f('server.ext')]);
  // generateEphemeralCert gets a bare public key: a placeholder request carries the subject and
  // openssl's -force_pubkey puts the client's key into the signed certificate.
  openssl(['req', '-new', ...ec, '-keyout', f('client-placeholder.key'), '-out', f('client.csr'), '-subj', '/C=US/O=Google\\, Inc/CN=Google Cloud SQL Client']);
  fs.writeFileSync(f('client.ext'), 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n');
  for (const k of ['instance-ca.key', 'server.key', 'client-placeholder.key']) fs.chmodSync(f(k), 0o600);
  let n = 0;
  return {
    caPem: f('instance-ca.pem'),
    caText: fs.readFileSync(f('instance-ca.pem'), 'utf8'),
    certPem: f('server.pem'),
    keyPem: f('server.key'),
    signClientKey: (publicKeyPem) => {
      const pub = f(`client-${++n}.pub.pem`);
      fs.writeFileSync(pub, publicKeyPem);
      const out = f(`client-${n}.pem`);
      openssl(['x509', '-req', '-in', f('client.csr'), '-force_pubkey', pub, '-CA', f('instance-ca.pem'), '-CAkey', f('instance-ca.key'),
        '-set_serial', String(1000 + n), '-out', out, '-days', '1', '-extfile', f('client.ext')]);
      return fs.readFileSync(out, 'utf8');
    },
  };
}
