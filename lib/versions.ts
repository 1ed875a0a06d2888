// The one place where pinned versions and checksums live.

export const DIGDAG_VERSION = '0.10.5.1';

/** sha256 of the self-running release jar digdag-0.10.5.1.jar (web UI included). */
export const DIGDAG_RELEASE_JAR_SHA256 = '4d1337d777bd334c2348e07ebc1795283aa50a2fd3b7d720cba5ee33b5486aa8';
export const DIGDAG_RELEASE_JAR_URL = `https://github.com/treasure-data/digdag/releases/download/v${DIGDAG_VERSION}/digdag-${DIGDAG_VERSION}.jar`;

/** Guice 5.0.1 (Digdag's pin) breaks on Java 17; 5.1.0 fixes it. */
export const GUICE_OVERRIDE_VERSION = '5.1.0';

/** Kubernetes release whose OpenAPI spec the manifests are validated against (strict). */
export const K8S_SCHEMA_VERSION = 'v1.31.3';
