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
/** Prometheus JMX exporter Java agent: the newest version Maven Central's metadata lists (2026-11). */
export const JMX_EXPORTER_VERSION = '1.0.1';
/** sha256 of io.prometheus.jmx:jmx_prometheus_javaagent:1.0.1 (Maven's .sha1 is f9c53eb0aa1828c3c9cd7647238563e43a4ed68c). */
export const JMX_EXPORTER_SHA256 = '7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1';

/** promtool: go install github.com/prometheus/prometheus/cmd/promtool@<this> (module v0.316.x = Prometheus 3.x). */
export const PROMTOOL_MODULE_VERSION = 'v0.316.0';

/**
 * The queue exporter: prometheus-community/postgres_exporter with custom queries. The Go module
 * proxy refuses that module (and sql_exporter), so locally it is Debian's build of the same
 * release; in a cluster, the upstream image of the same version.
 */
export const POSTGRES_EXPORTER_DEBIAN_VERSION = '0.11.1-3+b5';
export const POSTGRES_EXPORTER_IMAGE = 'quay.io/prometheuscommunity/postgres-exporter:v0.11.1';

/** Prometheus Operator whose CRD schemas (example/prometheus-operator-crd) validate the monitoring component. */
export const PROMETHEUS_OPERATOR_VERSION = 'v0.85.0';

/**
 * Cloud SQL Auth Proxy v2: the chart's sidecar image tag and the module .ci/install-cloud-sql-proxy
 * builds for offline tests. Not 2.28.0: the Go module proxy refuses the genproto version it needs.
 */
export const CLOUD_SQL_PROXY_VERSION = '2.27.0';
export const CLOUD_SQL_PROXY_IMAGE = `gcr.io/cloud-sql-connectors/cloud-sql-proxy:${CLOUD_SQL_PROXY_VERSION}`;

// Google API emulators: test fixtures only (test/helpers/gcp), built by .ci/install-gcp-emulators.
/** goccy/bigquery-emulator: pure Go since v0.7 (CGO_ENABLED=0); `go install @version` is refused, so the module is downloaded and built with its own go.sum. */
export const BIGQUERY_EMULATOR_VERSION = 'v0.8.1';
/** fsouza/fake-gcs-server (needs Go >= 1.26). */
export const FAKE_GCS_SERVER_VERSION = 'v1.56.1';

// The own cluster's autoscaling add-ons (.ci/install-keda builds them from the Go module proxy).
/** KEDA (operator + external-metrics API server); cluster/keda/go.mod requires the same version. */
export const KEDA_VERSION = 'v2.16.1';
/** metrics-server, for the CPU HPA option (`go install` works: no replace directives). */
export const METRICS_SERVER_VERSION = 'v0.8.0';

/**
 * The own cluster's Ingress controller: Traefik, whose kubernetesIngressNGINX provider serves
 * `ingressClassName: nginx` Ingresses with the nginx.ingress.kubernetes.io/* annotations
 * (.ci/install-traefik builds it; cluster/traefik/go.mod requires the same version). Not v3.7.x:
 * the Go module proxy cannot build it (a nested module replace).
 */
export const TRAEFIK_VERSION = 'v3.6.12';
