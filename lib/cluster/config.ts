// The test cluster's settings: where its state and binary cache live, its images, addresses
// and ports — derived once from the project's Config and the environment, validated, frozen.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config.ts';
import { UserError } from '../errors.ts';
import { BASE_IMAGE_SUITE, K8S_SCHEMA_VERSION } from '../versions.ts';

export interface ClusterConfig {
  /** The one directory holding everything the running cluster writes. */
  readonly dir: string;
  /** Built binaries; outside the repository so fresh clones reuse them. */
  readonly binDir: string;
  /** The debootstrapped root file system and other made-once artefacts. */
  readonly cacheDir: string;
  readonly baseImage: string;
  readonly pauseImage: string;
  readonly testImage: string;
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
}

export interface ClusterEnv {
  DIGDAG_HA_CLUSTER_DIR?: string;
  DIGDAG_HA_CACHE_DIR?: string;
  XDG_CACHE_HOME?: string;
  HOME?: string;
  CLUSTER_BASE_IMAGE?: string;
  CLUSTER_DEBIAN_MIRROR?: string;
}

/** The variables this module reads, for --help and the README. */
export const CLUSTER_VARIABLES = {
  DIGDAG_HA_CLUSTER_DIR: 'state dir of the test cluster (default: <DIGDAG_HA_STATE_DIR>/test-cluster)',
  DIGDAG_HA_CACHE_DIR: 'cache for built binaries and the base image (default: ${XDG_CACHE_HOME:-$HOME/.cache}/digdag-ha)',
  CLUSTER_BASE_IMAGE: `name of the debootstrapped base image (default: digdag-ha-base:${BASE_IMAGE_SUITE})`,
  CLUSTER_DEBIAN_MIRROR: 'Debian mirror for debootstrap (default: http://deb.debian.org/debian)',
} as const;

const IMAGE_NAME = /^[a-z0-9][a-z0-9._\-/]*:[A-Za-z0-9._-]+$/;

export function loadClusterConfig(config: Config, env: ClusterEnv & NodeJS.ProcessEnv = process.env): ClusterConfig {
  const stateRoot = path.resolve(config.root, config.vars.DIGDAG_HA_STATE_DIR ?? '.state');
  const dir = path.resolve(config.root, env.DIGDAG_HA_CLUSTER_DIR || path.join(stateRoot, 'test-cluster'));
  const cacheRoot = path.resolve(env.DIGDAG_HA_CACHE_DIR || path.join(env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache'), 'digdag-ha'));
  const baseImage = env.CLUSTER_BASE_IMAGE || `digdag-ha-base:${BASE_IMAGE_SUITE}`;
  if (!IMAGE_NAME.test(baseImage)) {
    throw new UserError(`CLUSTER_BASE_IMAGE=${baseImage} is not an image name with a tag`, `set CLUSTER_BASE_IMAGE=digdag-ha-base:${BASE_IMAGE_SUITE}`);
  }
  const debianMirror = env.CLUSTER_DEBIAN_MIRROR || 'http://deb.debian.org/debian';
  if (!/^(https?|file):\/\//.test(debianMirror)) {
    throw new UserError(`CLUSTER_DEBIAN_MIRROR=${debianMirror} is not a URL`, 'set CLUSTER_DEBIAN_MIRROR=http://deb.debian.org/debian');
  }
  // containerd and dockerd listen on unix sockets below `dir`; a socket path is limited to 107 bytes.
  if (Buffer.byteLength(path.join(dir, 'containerd', 'containerd.sock')) > 100) {
    throw new UserError(`DIGDAG_HA_CLUSTER_DIR=${dir} is too long for the unix sockets placed in it`, 'set DIGDAG_HA_CLUSTER_DIR to a shorter path, e.g. /var/tmp/digdag-ha-cluster');
  }
  const cc: ClusterConfig = {
    dir,
    binDir: path.join(cacheRoot, `k8s-${K8S_SCHEMA_VERSION}`, 'bin'),
    cacheDir: cacheRoot,
    baseImage,
    pauseImage: 'digdag-ha.local/pause:3.10',
    testImage: 'digdag-ha.local/test-busybox:1',
    debianMirror,
    dockerCli: fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker',
    net: {
      bridge: 'dhcluster0',
      bridgeIp: '10.244.0.1',
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
  };
  return Object.freeze({ ...cc, net: Object.freeze(cc.net), ports: Object.freeze(cc.ports) });
}

/** Paths inside the state dir, one place so that up, down and status agree. */
export function clusterPaths(cc: ClusterConfig) {
  const d = cc.dir;
  return {
    pki: path.join(d, 'pki'),
    kubeconfig: path.join(d, 'kubeconfig'),
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
