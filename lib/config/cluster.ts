// Config section Test cluster: where the project's own Kubernetes cluster keeps its state and
// its built binaries, and what its images are made from. lib/cluster/config.ts derives the
// harness's full settings (network, ports, paths) from this part.
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { BASE_IMAGE_SUITE } from '../versions.ts';
import { group, str, type Values, type VarSpec } from './spec.ts';

/** The debootstrapped base lib/cluster/images.ts makes (CLUSTER_BASE_IMAGE overrides it). */
export const CLUSTER_BASE_IMAGE_DEFAULT = `digdag-ha-base:${BASE_IMAGE_SUITE}`;
const DEBIAN_MIRROR_DEFAULT = 'http://deb.debian.org/debian';
const IMAGE_NAME = /^[a-z0-9][a-z0-9._\-/]*:[A-Za-z0-9._-]+$/;
/** The node's address on the pods' bridge: pods' gateway, and where the cluster's CoreDNS answers. */
const NODE_ADDRESS = '10.244.0.1';
/** The add-ons the test cluster can start (lib/cluster/keda.ts, lib/cluster/traefik.ts, lib/cluster/metrics-server.ts). */
export const CLUSTER_ADDONS = ['keda', 'traefik', 'metrics-server'] as const;
export type ClusterAddon = (typeof CLUSTER_ADDONS)[number];
const ADDONS_PATTERN = new RegExp(`^((${CLUSTER_ADDONS.join('|')})(,(${CLUSTER_ADDONS.join('|')}))*)?$`);

export const CLUSTER_SECTION_VARIABLES: readonly VarSpec[] = group('Test cluster', [
  { name: 'DIGDAG_HA_CLUSTER_DIR', default: '', kind: str('/var/tmp/digdag-ha-cluster'),
    description: 'State dir of the project\'s own test cluster (npx tsx tasks/cluster.ts up): its processes, sockets, certificates, volumes and logs. Empty: <DIGDAG_HA_STATE_DIR>/test-cluster.' },
  { name: 'DIGDAG_HA_CACHE_DIR', default: '', kind: str('/var/cache/digdag-ha'),
    description: 'Cache for the test cluster\'s built binaries and its base image, outside the repository so fresh clones reuse them. Empty: ${XDG_CACHE_HOME:-$HOME/.cache}/digdag-ha.' },
  { name: 'CLUSTER_BASE_IMAGE', default: CLUSTER_BASE_IMAGE_DEFAULT, kind: str(CLUSTER_BASE_IMAGE_DEFAULT),
    description: 'Name (with a tag) of the debootstrapped base image the test cluster\'s images are built from.' },
  { name: 'CLUSTER_DEBIAN_MIRROR', default: DEBIAN_MIRROR_DEFAULT, kind: str(DEBIAN_MIRROR_DEFAULT),
    description: 'Debian mirror debootstrap makes the test cluster\'s base image from.' },
  { name: 'CLUSTER_ADDONS', default: '', kind: str('keda,traefik,metrics-server', ADDONS_PATTERN),
    description: 'Add-ons `up` starts with the test cluster, comma-separated: keda (KEDA\'s operator and external-metrics API server, built by bash .ci/install-keda; needed by AGENT_AUTOSCALING=keda), traefik (the Ingress controller: Traefik\'s kubernetesIngressNGINX provider serves the `nginx` IngressClass on 127.0.0.1:80/443, built by bash .ci/install-traefik), metrics-server (the resource-metrics API metrics.k8s.io that kubectl top and a CPU HorizontalPodAutoscaler read, built by bash .ci/install-metrics-server; needed by AGENT_AUTOSCALING=hpa). Empty: none.' },
]);

export interface ClusterSection {
  /** The one directory holding everything the running test cluster writes. */
  readonly dir: string;
  /** The admin kubeconfig `up` writes into `dir`; the Kubernetes target's kubectl uses it on the cluster target. */
  readonly kubeconfig: string;
  /** The node's address on the pods' bridge (the kube-dns Service leads there: the Kubernetes target's DNS egress allows it). */
  readonly nodeAddress: string;
  /** Built binaries and made-once artefacts; outside the repository. */
  readonly cacheDir: string;
  readonly baseImage: string;
  readonly debianMirror: string;
  /** Add-ons started with the cluster (lib/cluster/keda.ts, lib/cluster/traefik.ts, lib/cluster/metrics-server.ts). */
  readonly addons: readonly ClusterAddon[];
}

export function clusterSection(v: Values): ClusterSection {
  const baseImage = v.str('CLUSTER_BASE_IMAGE');
  if (!IMAGE_NAME.test(baseImage)) {
    throw new UserError(`CLUSTER_BASE_IMAGE=${baseImage} is not an image name with a tag`, `set CLUSTER_BASE_IMAGE=${CLUSTER_BASE_IMAGE_DEFAULT}`);
  }
  const debianMirror = v.str('CLUSTER_DEBIAN_MIRROR');
  if (!/^(https?|file):\/\//.test(debianMirror)) {
    throw new UserError(`CLUSTER_DEBIAN_MIRROR=${debianMirror} is not a URL`, `set CLUSTER_DEBIAN_MIRROR=${DEBIAN_MIRROR_DEFAULT}`);
  }
  const xdgCache = v.env.XDG_CACHE_HOME || path.join(v.env.HOME || os.homedir(), '.cache');
  const dir = v.path('DIGDAG_HA_CLUSTER_DIR') || path.join(path.resolve(v.root, v.str('DIGDAG_HA_STATE_DIR')), 'test-cluster');
  return {
    dir,
    kubeconfig: path.join(dir, 'kubeconfig'),
    nodeAddress: NODE_ADDRESS,
    // Relative to the working directory, as before this was a config variable.
    cacheDir: path.resolve(v.str('DIGDAG_HA_CACHE_DIR') || path.join(xdgCache, 'digdag-ha')),
    baseImage,
    debianMirror,
    addons: [...new Set(v.str('CLUSTER_ADDONS').split(',').filter(Boolean) as ClusterAddon[])],
  };
}
