// Every process of the test cluster, in start order: its command line, the files it reads, and
// the check that says it is serving. All listen on 127.0.0.1, except CoreDNS and the API server,
// which listen on the pods' bridge address (pods reach them there through their Services), and
// the kubelet's API, which listens there too (the node's InternalIP: metrics-server's pod scrapes
// it there; its health endpoint stays on loopback).
//
// NetworkPolicy enforcer: kube-router v2.1.0 with only its firewall (--run-firewall, no routing,
// no service proxy). It enforces policies with iptables and ipsets, which this kernel has
// (xt_set, ip_set hash:ip/net). sigs.k8s.io/kube-network-policies was the first choice, but
// every version the Go module proxy serves (v0.7, v0.8) queues packets with nftables' `queue`
// statement, and this kernel is built without CONFIG_NFT_QUEUE (only xt NFQUEUE is there), so
// its rules cannot be loaded here.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Runner } from '../runner.ts';
import { ensureDir } from '../state.ts';
import { aggregationLayerFlags } from './aggregation.ts';
import { binPath } from './build.ts';
import { clusterPaths, type ClusterConfig } from './config.ts';
import { ctr } from './images.ts';
import { apiServerUrl } from './pki.ts';

export interface Component {
  name: string;
  argv: string[];
  /** Writes the files the process reads. */
  prepare?(): void;
  /** True once it serves. */
  ready(runner: Runner): Promise<boolean>;
  readyTimeoutMs: number;
}

/** GET a URL (TLS: our CA and a client certificate, or unverified for self-signed component
 * certs on loopback); resolves to the status code, 0 when nothing answers. */
export function httpStatus(url: string, opts: { ca?: string; cert?: string; key?: string; socketPath?: string } = {}): Promise<number> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const tls = u.protocol === 'https:';
    const req = (tls ? https : http).request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        socketPath: opts.socketPath,
        timeout: 2000,
        ...(tls
          ? {
              ca: opts.ca ? fs.readFileSync(opts.ca) : undefined,
              cert: opts.cert ? fs.readFileSync(opts.cert) : undefined,
              key: opts.key ? fs.readFileSync(opts.key) : undefined,
              rejectUnauthorized: !!opts.ca,
            }
          : {}),
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

const ok = (status: Promise<number>) => status.then((s) => s === 200);

export function components(cc: ClusterConfig): Component[] {
  const p = clusterPaths(cc);
  const pki = (f: string) => path.join(p.pki, f);
  const bin = (n: string) => binPath(cc, n);
  const loop = '127.0.0.1';
  const kc = (id: string) => pki(`${id}.kubeconfig`);
  const write = (file: string, text: string) => {
    ensureDir(path.dirname(file));
    fs.writeFileSync(file, text);
  };
  const cd = p.containerdDir;
  return [
    {
      name: 'containerd',
      argv: ['containerd', '--config', path.join(cd, 'config.toml')],
      prepare: () => {
        write(
          path.join(cd, 'config.toml'),
          `version = 2
root = "${cd}/root"
state = "${cd}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${p.containerdSock}"
[ttrpc]
  address = "${p.containerdSock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${cd}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${cc.pauseImage}"
  # Root here lacks CAP_SYS_RESOURCE: a sandbox's negative oom_score_adj would be refused.
  restrict_oom_score_adj = true
  stream_server_address = "${loop}"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${cd}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${p.cniConfDir}"
`,
        );
        // Pods get an address on the bridge and a route to Services only: no default route, no
        // masquerade, so nothing in a pod can address the world beyond this machine.
        write(
          path.join(p.cniConfDir, '10-digdag-ha.conflist'),
          JSON.stringify(
            {
              cniVersion: '1.0.0',
              name: 'digdag-ha',
              plugins: [
                {
                  type: 'bridge',
                  bridge: cc.net.bridge,
                  isGateway: true,
                  ipMasq: false,
                  hairpinMode: true,
                  ipam: {
                    type: 'host-local',
                    ranges: [[{ subnet: cc.net.podCidr, gateway: cc.net.bridgeIp }]],
                    routes: [{ dst: cc.net.serviceCidr }],
                    dataDir: p.cniDataDir,
                  },
                },
                { type: 'portmap', capabilities: { portMappings: true } },
              ],
            },
            null,
            2,
          ) + '\n',
        );
      },
      ready: async (runner) => (await runner.run({ argv: ctr(cc, 'version'), nothrow: true, quiet: true })).code === 0,
      readyTimeoutMs: 30_000,
    },
    {
      name: 'dockerd',
      // Builds images only: no bridge, no iptables, no forwarding (a build that needs the network
      // uses `docker build --network host`), unix socket only.
      argv: [
        'dockerd',
        '--host', `unix://${p.dockerSock}`,
        '--config-file', path.join(p.dockerDir, 'daemon.json'),
        '--data-root', path.join(p.dockerDir, 'root'),
        '--exec-root', path.join(p.dockerDir, 'exec'),
        '--pidfile', path.join(p.dockerDir, 'docker.pid'),
        '--bridge', 'none',
        '--iptables=false',
        '--ip-forward=false',
        '--ip-masq=false',
        '--exec-opt', 'native.cgroupdriver=cgroupfs',
        '--cgroup-parent', `/${cc.cgroupRoot}-docker`,
      ],
      prepare: () => write(path.join(p.dockerDir, 'daemon.json'), '{}\n'),
      ready: () => ok(httpStatus('http://docker/_ping', { socketPath: p.dockerSock })),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'etcd',
      argv: [
        'etcd',
        '--name', 'default',
        '--data-dir', p.etcdData,
        '--listen-client-urls', `http://${loop}:${cc.ports.etcdClient}`,
        '--advertise-client-urls', `http://${loop}:${cc.ports.etcdClient}`,
        '--listen-peer-urls', `http://${loop}:${cc.ports.etcdPeer}`,
        '--initial-advertise-peer-urls', `http://${loop}:${cc.ports.etcdPeer}`,
        '--initial-cluster', `default=http://${loop}:${cc.ports.etcdPeer}`,
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      ready: () => ok(httpStatus(`http://${loop}:${cc.ports.etcdClient}/health`)),
      readyTimeoutMs: 30_000,
    },
    {
      name: 'kube-apiserver',
      argv: [
        bin('kube-apiserver'),
        `--etcd-servers=http://${loop}:${cc.ports.etcdClient}`,
        // The bridge address, not loopback: the `kubernetes` Service's Endpoints (which reject
        // 127.0.0.0/8) point there, so pods with a service-account token reach the API (Patroni's
        // DCS, operators) — where NetworkPolicies let them. Nothing beyond the machine routes to
        // the bridge, and the host fence drops what arrives for it on another interface.
        `--bind-address=${cc.net.bridgeIp}`,
        `--advertise-address=${cc.net.bridgeIp}`,
        `--secure-port=${cc.ports.apiserver}`,
        `--service-cluster-ip-range=${cc.net.serviceCidr}`,
        `--tls-cert-file=${pki('apiserver.crt')}`,
        `--tls-private-key-file=${pki('apiserver.key')}`,
        `--client-ca-file=${pki('ca.crt')}`,
        `--kubelet-client-certificate=${pki('apiserver-kubelet-client.crt')}`,
        `--kubelet-client-key=${pki('apiserver-kubelet-client.key')}`,
        // Logs, exec and port-forward reach the kubelet on the node's InternalIP (the bridge
        // address, its --node-ip), where it listens; the node's name is "localhost".
        '--kubelet-preferred-address-types=InternalIP',
        `--service-account-key-file=${pki('sa.pub')}`,
        `--service-account-signing-key-file=${pki('sa.key')}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        '--authorization-mode=Node,RBAC',
        ...aggregationLayerFlags(cc),
        // PodSecurity is on by default; NodeRestriction keeps the kubelet to its own node.
        '--enable-admission-plugins=NodeRestriction',
        '--allow-privileged=true',
        // The default `lease` reconciler keeps the `kubernetes` Endpoints(lices) at the advertise address.
        '--profiling=false',
      ],
      ready: () => ok(httpStatus(`${apiServerUrl(cc)}/readyz`, { ca: pki('ca.crt'), cert: pki('admin.crt'), key: pki('admin.key') })),
      readyTimeoutMs: 90_000,
    },
    {
      name: 'kube-controller-manager',
      argv: [
        bin('kube-controller-manager'),
        `--kubeconfig=${kc('controller-manager')}`,
        `--authentication-kubeconfig=${kc('controller-manager')}`,
        `--authorization-kubeconfig=${kc('controller-manager')}`,
        `--bind-address=${loop}`,
        `--secure-port=${cc.ports.controllerManager}`,
        `--service-account-private-key-file=${pki('sa.key')}`,
        `--root-ca-file=${pki('ca.crt')}`,
        `--cluster-signing-cert-file=${pki('ca.crt')}`,
        `--cluster-signing-key-file=${pki('ca.key')}`,
        '--use-service-account-credentials=true',
        '--allocate-node-cidrs=true',
        `--cluster-cidr=${cc.net.clusterCidr}`,
        `--node-cidr-mask-size=${cc.net.podCidr.split('/')[1]}`,
        `--service-cluster-ip-range=${cc.net.serviceCidr}`,
        '--leader-elect=false',
        '--profiling=false',
      ],
      ready: () => ok(httpStatus(`https://${loop}:${cc.ports.controllerManager}/healthz`)),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'kube-scheduler',
      argv: [
        bin('kube-scheduler'),
        `--kubeconfig=${kc('scheduler')}`,
        `--authentication-kubeconfig=${kc('scheduler')}`,
        `--authorization-kubeconfig=${kc('scheduler')}`,
        `--bind-address=${loop}`,
        `--secure-port=${cc.ports.scheduler}`,
        '--leader-elect=false',
        '--profiling=false',
      ],
      ready: () => ok(httpStatus(`https://${loop}:${cc.ports.scheduler}/healthz`)),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'kubelet',
      argv: [
        bin('kubelet'),
        `--config=${path.join(p.kubeletDir, 'config.yaml')}`,
        `--kubeconfig=${kc('kubelet')}`,
        `--root-dir=${p.kubeletDir}`,
        '--hostname-override=localhost',
        // The bridge's address: the node is reachable from pods there and nowhere else.
        `--node-ip=${cc.net.bridgeIp}`,
      ],
      prepare: () => {
        write(path.join(p.kubeletDir, 'resolv.conf'), `nameserver ${cc.net.dnsIp}\n`);
        write(
          path.join(p.kubeletDir, 'config.yaml'),
          `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${cc.net.bridgeIp}
port: ${cc.ports.kubelet}
readOnlyPort: 0
healthzBindAddress: ${loop}
healthzPort: ${cc.ports.kubeletHealthz}
containerRuntimeEndpoint: unix://${p.containerdSock}
cgroupDriver: cgroupfs
cgroupRoot: /${cc.cgroupRoot}
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki('ca.crt')}}
authorization: {mode: Webhook}
clusterDNS: [${cc.net.dnsIp}]
clusterDomain: cluster.local
resolvConf: ${path.join(p.kubeletDir, 'resolv.conf')}
podLogsDir: ${path.join(p.kubeletDir, 'pod-logs')}
tlsCertFile: ${pki('kubelet-serving.crt')}
tlsPrivateKeyFile: ${pki('kubelet-serving.key')}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
`,
        );
      },
      ready: () => ok(httpStatus(`http://${loop}:${cc.ports.kubeletHealthz}/healthz`)),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'kube-proxy',
      argv: [
        bin('kube-proxy'),
        `--kubeconfig=${kc('kube-proxy')}`,
        '--proxy-mode=iptables',
        '--hostname-override=localhost',
        `--cluster-cidr=${cc.net.clusterCidr}`,
        `--bind-address=${loop}`,
        `--metrics-bind-address=${loop}:${cc.ports.proxyMetrics}`,
        `--healthz-bind-address=${loop}:${cc.ports.proxyHealthz}`,
        // NodePorts only on the bridge: never on the machine's own network.
        `--nodeport-addresses=${cc.net.bridgeIp}/32`,
        '--conntrack-max-per-core=0',
        '--conntrack-tcp-timeout-established=0s',
        '--conntrack-tcp-timeout-close-wait=0s',
      ],
      ready: () => ok(httpStatus(`http://${loop}:${cc.ports.proxyHealthz}/healthz`)),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'coredns',
      argv: [bin('coredns'), '-conf', path.join(cc.dir, 'coredns', 'Corefile')],
      // Serves the cluster's names only (no forward plugin: nothing is asked of the outside).
      prepare: () =>
        write(
          path.join(cc.dir, 'coredns', 'Corefile'),
          `.:53 {
    bind ${cc.net.bridgeIp}
    errors
    ready ${loop}:${cc.ports.corednsReady}
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${kc('coredns')}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`,
        ),
      ready: () => ok(httpStatus(`http://${loop}:${cc.ports.corednsReady}/ready`)),
      readyTimeoutMs: 60_000,
    },
    {
      name: 'kube-router',
      argv: [
        bin('kube-router'),
        `--kubeconfig=${kc('kube-router')}`,
        '--run-firewall=true',
        '--run-router=false',
        '--run-service-proxy=false',
        '--hostname-override=localhost',
        `--service-cluster-ip-range=${cc.net.serviceCidr}`,
        '--enable-ipv6=false',
        // Its health server would listen on every interface.
        '--health-port=0',
      ],
      ready: async (runner) => (await runner.run({ argv: ['iptables', '-w', '-S', 'KUBE-ROUTER-FORWARD'], nothrow: true, quiet: true })).code === 0,
      readyTimeoutMs: 60_000,
    },
  ];
}
