// Probe pods on the project's own test cluster: the small busybox test image (lib/cluster/images.ts)
// as a Pod Security "restricted" pod, and a bounded TCP/HTTP connection attempt from inside one,
// for the tests that prove NetworkPolicies block or allow a connection.
import assert from 'node:assert/strict';
import type { ClusterConfig } from '../../lib/cluster/config.ts';
import { waitFor } from '../../lib/processes.ts';
import type { Cmd, Result } from '../../lib/runner.ts';

/** A Pod Security "restricted" pod running the test image (busybox as nobody). */
export function probePod(cc: ClusterConfig, name: string, ns: string, labels: Record<string, string>, args: string[] = ['sleep', '3600']) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: {
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      securityContext: { runAsNonRoot: true, runAsUser: 65534, runAsGroup: 65534, seccompProfile: { type: 'RuntimeDefault' } },
      volumes: [{ name: 'tmp', emptyDir: {} }],
      containers: [
        {
          name: 'main',
          image: cc.testImage,
          // Never pull: the image was loaded into containerd, there is no registry.
          imagePullPolicy: 'Never',
          args,
          securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '200m', memory: '64Mi' } },
          volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
        },
      ],
    },
  };
}

type Kubectl = (args: string[], extra?: Partial<Cmd>) => Promise<Result>;

/** A namespace enforcing Pod Security "restricted", ready for pods (its default ServiceAccount,
 * which the controller-manager creates, exists). `k` runs kubectl without a namespace. */
export async function restrictedNamespace(k: Kubectl, name: string): Promise<void> {
  const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' } } };
  const r = await k(['apply', '-f', '-'], { input: JSON.stringify(ns), nothrow: true });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await waitFor(async () => (await k(['get', 'serviceaccount', 'default', '-n', name], { nothrow: true })).code === 0, 60_000, 250), `ServiceAccount default in ${name}`);
}

/**
 * Whether `pod` (in `ns`) opens a TCP connection to host:port within 3 s (busybox nc with an
 * empty stdin exits 0 once connected; a dropped SYN times out, a reject fails at once). The
 * answer comes from inside the pod: an exec that fails (no such pod) throws instead of reading
 * as "blocked".
 */
export async function canConnect(k: Kubectl, ns: string, pod: string, host: string, port: number): Promise<boolean> {
  if (!host) throw new Error(`probe from ${ns}/${pod}: no address to connect to (port ${port})`);
  const probe = `if busybox timeout 3 busybox nc ${host} ${port} </dev/null >/dev/null 2>&1; then echo CONNECTED; else echo BLOCKED; fi`;
  const r = await k(['exec', '-n', ns, pod, '--', 'busybox', 'sh', '-c', probe], { nothrow: true, timeoutMs: 20_000 });
  const answer = r.stdout.trim();
  if (answer !== 'CONNECTED' && answer !== 'BLOCKED') throw new Error(`probe from ${ns}/${pod} to ${host}:${port} did not run: ${r.stderr.trim() || r.stdout.trim()}`);
  return answer === 'CONNECTED';
}
