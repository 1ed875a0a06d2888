// The repository's own directories, found from this file's location (never from the working
// directory), for every module that reads what the checkout ships.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The Digdag image's Dockerfile and entrypoint; docker/postgres: the cluster target's PostgreSQL image. */
export const DOCKER_DIR = path.join(ROOT, 'docker');
/** SQL init-db applies in name order. */
export const SQL_DIR = path.join(ROOT, 'sql');
/** Digdag projects the toolkit pushes (ha-sample, the schedule probe). */
export const WORKFLOWS_DIR = path.join(ROOT, 'workflows');
/** Prometheus rules, the JMX exporter's rules, dashboards. */
export const MONITORING_DIR = path.join(ROOT, 'monitoring');
/** The Go module that builds the test cluster's Kubernetes binaries. */
export const CLUSTER_MODULE_DIR = path.join(ROOT, 'cluster', 'k8s');
/** The plain manifests for `kubectl apply` users. */
export const MANIFESTS_DIR = path.join(ROOT, 'manifests');
/** The Helm chart. */
export const CHART_DIR = path.join(ROOT, 'chart', 'digdag-ha');
