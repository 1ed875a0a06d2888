// The test CA of the GCP fixtures (openssl): one server certificate for the googleapis edge's
// names and address, the CA as PEM (gcloud, bq) and as a PKCS12 truststore (Java). Test only.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The Google API names the edge answers for (Digdag's clients, the log server, the CLIs). */
export const GOOGLEAPIS_HOSTS = ['www.googleapis.com', 'oauth2.googleapis.com', 'bigquery.googleapis.com', 'storage.googleapis.com'] as const;

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

/** A fresh CA and a server certificate for GOOGLEAPIS_HOSTS and `ip`, under `dir` (keys 0600). */
export function makeTestPki(dir: string, ip: string): TestPki {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const f = (n: string) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=digdag-ha GCP test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', ...ec, '-keyout', f('edge.key'), '-out', f('edge.csr'), '-subj', '/CN=www.googleapis.com']);
  const sans = [...GOOGLEAPIS_HOSTS.map((h) => `DNS:${h}`), `IP:${ip}`].join(',');
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
