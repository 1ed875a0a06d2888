// The one place where pinned versions and checksums live.

export const DIGDAG_VERSION = '0.10.5.1';

/** sha256 of the self-running release jar digdag-0.10.5.1.jar (web UI included). */
export const DIGDAG_RELEASE_JAR_SHA256 = '4d1337d777bd334c2348e07ebc1795283aa50a2fd3b7d720cba5ee33b5486aa8';
export const DIGDAG_RELEASE_JAR_URL = `https://github.com/treasure-data/digdag/releases/download/v${DIGDAG_VERSION}/digdag-${DIGDAG_VERSION}.jar`;

/** Guice 5.0.1 (Digdag's pin) breaks on Java 17; 5.1.0 fixes it. */
export const GUICE_OVERRIDE_VERSION = '5.1.0';

/** Kubernetes release whose OpenAPI spec the manifests are validated against (strict). */
export const K8S_SCHEMA_VERSION = 'v1.31.3';

// The project's own test cluster (lib/cluster): Kubernetes components are built from the Go
// module proxy at K8S_SCHEMA_VERSION; containerd, runc, etcd, Docker and the CNI plugins come
// from Debian (.ci/install-cluster).
/** git commit of the Kubernetes release tag, stamped into the binaries like an official build. */
export const K8S_GIT_COMMIT = 'c83cbee114ddb732cdc06d3d1b62c9eb9220726f';
export const COREDNS_VERSION = 'v1.11.3';
/** NetworkPolicy enforcer: kube-router with only its firewall (iptables + ipset); see lib/cluster/components.ts. */
export const KUBE_ROUTER_VERSION = 'v2.1.0';
/** Debian release debootstrapped into the registry-free base image. */
export const BASE_IMAGE_SUITE = 'bookworm';
