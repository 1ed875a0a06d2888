// The test cluster's settings: where its state and binary cache live, its images, addresses
// and ports — derived from the project's Config (its Test cluster section, lib/config/cluster.ts)
// and the harness's fixed network, then frozen. Nothing here reads the environment.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.ts';
import { CLUSTER_SECTION_VARIABLES, type ClusterAddon } from '../config/cluster.ts';
import { UserError } from '../errors.ts';
import { CLOUD_SQL_PROXY_VERSION, K8S_SCHEMA_VERSION } from '../versions.ts';

export interface ClusterConfig {
  /** The one directory holding everything the running cluster writes. */
  readonly dir: string;
  /** Its admin kubeconfig (in `dir`). */
  readonly kubeconfig: string;
  /** Built binaries; outside the repository so fresh clones reuse them. */
  readonly binDir: string;
  /** The debootstrapped root file system and other made-once artefacts. */
  readonly cacheDir: string;
  readonly baseImage: string;
  readonly pauseImage: string;
  readonly testImage: string;
  /** The real Cloud SQL Auth Proxy (CLOUD_SQL_PROXY_VERSION, built from the Go module proxy) as an image of its own, like Google's distroless one: the binary alone, no shell. */
  readonly cloudSqlProxyImage: string;
  readonly debianMirror: string;
  /** Debian's docker CLI matches Debian's dockerd; a newer CLI elsewhere on PATH may not. */
  readonly dockerCli: string;
  readonly net: {
    /** Pods' bridge; its address is the node's address and the pods' gateway. */
    readonly bridge: string;
    readonly bridgeIp: string;
    readonly podCidr: string;
    readonly clusterCidr: string;
    readonly serviceCidr: string;
    readonly dnsIp: string;
  };
  readonly ports: {
    readonly apiserver: number;
    readonly etcdClient: number;
    readonly etcdPeer: number;
    readonly controllerManager: number;
    readonly scheduler: number;
    readonly kubelet: number;
    readonly kubeletHealthz: number;
    readonly proxyMetrics: number;
    readonly proxyHealthz: number;
    readonly corednsReady: number;
  };
  /** The cgroup (in every v1 hierarchy) under which the kubelet puts all pods. */
  readonly cgroupRoot: string;
  /** Add-ons `up` starts after the node is Ready (CLUSTER_ADDONS). */
  readonly addons: readonly ClusterAddon[];
}

/** The variables the harness reads (its config section), for --help. */
export const CLUSTER_VARIABLES: Readonly<Record<string, string>> = Object.fromEntries(
  CLUSTER_SECTION_VARIABLES.map((v) => [v.name, v.default ? `${v.description} (default: ${v.default})` : v.description]),
);

/** The harness's settings from the project's Config (its Test cluster section) and the harness's fixed network and ports. */
export function loadClusterConfig(config: Config): ClusterConfig {
  const { dir, kubeconfig, cacheDir: cacheRoot, baseImage, debianMirror } = config.cluster;
  // containerd and dockerd listen on unix sockets below `dir`; a socket path is limited to 107 bytes.
  if (Buffer.byteLength(path.join(dir, 'containerd', 'containerd.sock')) > 100) {
    throw new UserError(`DIGDAG_HA_CLUSTER_DIR=${dir} is too long for the unix sockets placed in it`, 'set DIGDAG_HA_CLUSTER_DIR to a shorter path, e.g. /var/tmp/digdag-ha-cluster');
  }
  const cc: ClusterConfig = {
    dir,
    kubeconfig,
    binDir: path.join(cacheRoot, `k8s-${K8S_SCHEMA_VERSION}`, 'bin'),
    cacheDir: cacheRoot,
    baseImage,
    pauseImage: 'digdag-ha.local/pause:3.10',
    testImage: 'digdag-ha.local/test-busybox:1',
    cloudSqlProxyImage: `digdag-ha.local/cloud-sql-proxy:${CLOUD_SQL_PROXY_VERSION}`,
    debianMirror,
    dockerCli: fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker',
    net: {
      bridge: 'dhcluster0',
      bridgeIp: config.cluster.nodeAddress,
      podCidr: '10.244.0.0/24',
      clusterCidr: '10.244.0.0/16',
      serviceCidr: '10.96.0.0/16',
      dnsIp: '10.96.0.10',
    },
    ports: {
      apiserver: 6443,
      etcdClient: 2379,
      etcdPeer: 2380,
      controllerManager: 10257,
      scheduler: 10259,
      kubelet: 10250,
      kubeletHealthz: 10248,
      proxyMetrics: 10249,
      proxyHealthz: 10256,
      corednsReady: 8181,
    },
    cgroupRoot: 'digdag-ha-cluster',
    addons: Object.freeze([...config.cluster.addons]),
  };
  return Object.freeze({ ...cc, net: Object.freeze(cc.net), ports: Object.freeze(cc.ports) });
}

/** Paths inside the state dir, one place so that up, down and status agree. */
export function clusterPaths(cc: ClusterConfig) {
  const d = cc.dir;
  return {
    pki: path.join(d, 'pki'),
    kubeconfig: cc.kubeconfig,
    logs: path.join(d, 'logs'),
    run: path.join(d, 'run'),
    containerdDir: path.join(d, 'containerd'),
    containerdSock: path.join(d, 'containerd', 'containerd.sock'),
    dockerDir: path.join(d, 'docker'),
    dockerSock: path.join(d, 'docker', 'docker.sock'),
    etcdData: path.join(d, 'etcd'),
    kubeletDir: path.join(d, 'kubelet'),
    cniConfDir: path.join(d, 'cni', 'net.d'),
    cniDataDir: path.join(d, 'cni', 'ipam'),
    volumes: path.join(d, 'volumes'),
    /** iptables chains and sysctls as they were before `up`, so `down` restores exactly those. */
    baseline: path.join(d, 'host-baseline.json'),
  };
}
