// A recording stand-in for the Google APIs the gcloud CLI calls while tasks/gcp.ts provisions
// (serviceusage, cloudresourcemanager, artifactregistry, container, sqladmin, storage, iam):
// plain HTTP on 127.0.0.1, state kept in memory, every long-running operation done at once,
// every request recorded. The real gcloud is pointed at it with CLOUDSDK_API_ENDPOINT_OVERRIDES_*.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  query: Record<string, string>;
  body: any;
  auth: string;
}

type Policy = { version?: number; etag: string; bindings: { role: string; members: string[]; condition?: unknown }[] };

export interface FakeGcpOptions {
  project: string;
  projectNumber?: string;
  /** Projects whose IAM policy read answers 403 (the caller lacks resourcemanager.projects.getIamPolicy). */
  denyIamRead?: boolean;
}

/** The API names gcloud's endpoint overrides use, and the path prefix each is served under here. */
export const OVERRIDDEN_APIS = ['SERVICEUSAGE', 'CLOUDRESOURCEMANAGER', 'ARTIFACTREGISTRY', 'CONTAINER', 'SQL', 'STORAGE', 'IAM'] as const;

export class FakeGcp {
  readonly requests: RecordedRequest[] = [];
  readonly enabled = new Set<string>();
  readonly repos = new Map<string, any>();
  readonly clusters = new Map<string, any>();
  readonly instances = new Map<string, any>();
  readonly databases = new Map<string, any>();
  readonly users = new Map<string, any>();
  readonly buckets = new Map<string, any>();
  readonly bucketPolicies = new Map<string, Policy>();
  readonly serviceAccounts = new Map<string, any>();
  readonly saPolicies = new Map<string, Policy>();
  projectPolicy: Policy = { version: 1, etag: 'BwAAAA==', bindings: [{ role: 'roles/owner', members: ['user:owner@example.com'] }] };
  private server?: http.Server;
  private opSeq = 0;
  url = '';

  constructor(readonly opts: FakeGcpOptions) {}

  get project(): string {
    return this.opts.project;
  }
  get projectNumber(): string {
    return this.opts.projectNumber ?? '123456789012';
  }

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const u = new URL(req.url ?? '/', 'http://fake');
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: any = undefined;
        try {
          body = raw ? JSON.parse(raw) : undefined;
        } catch {
          body = raw;
        }
        const rec: RecordedRequest = { method: req.method ?? 'GET', path: decodeURIComponent(u.pathname), query: Object.fromEntries(u.searchParams), body, auth: String(req.headers.authorization ?? '') };
        this.requests.push(rec);
        let status = 200;
        let out: unknown;
        try {
          out = this.route(rec);
        } catch (e) {
          if (e instanceof ApiError) [status, out] = [e.code, { error: { code: e.code, message: e.message, status: e.status, errors: [{ message: e.message, reason: e.status.toLowerCase() }] } }];
          else [status, out] = [500, { error: { code: 500, message: String(e), status: 'INTERNAL' } }];
        }
        const text = JSON.stringify(out ?? {});
        res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/`;
    return this.url;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** The environment that points gcloud here. */
  endpointEnv(): Record<string, string> {
    return Object.fromEntries(OVERRIDDEN_APIS.map((a) => [`CLOUDSDK_API_ENDPOINT_OVERRIDES_${a}`, this.url]));
  }

  /** Requests that change something (every method but GET, minus the read-only POSTs gcloud uses for IAM reads). */
  changes(): RecordedRequest[] {
    return this.requests.filter((r) => r.method !== 'GET' && !/:getIamPolicy$/.test(r.path));
  }

  private op(kind: 'lro' | 'gke' | 'sql', extra: Record<string, unknown> = {}): any {
    const id = `op-${++this.opSeq}`;
    if (kind === 'gke') return { name: id, status: 'DONE', operationType: extra.operationType ?? 'CREATE_CLUSTER', selfLink: `${this.url}v1/projects/${this.project}/locations/${extra.location}/operations/${id}`, targetLink: extra.targetLink ?? '', ...extra };
    if (kind === 'sql') return { kind: 'sql#operation', name: id, status: 'DONE', operationType: extra.operationType ?? 'CREATE', targetId: extra.targetId ?? '', targetProject: this.project, selfLink: `${this.url}sql/v1beta4/projects/${this.project}/operations/${id}` };
    return { name: extra.name ?? `operations/${id}`, done: true, response: extra.response ?? {} };
  }

  private route(r: RecordedRequest): unknown {
    const P = this.project;
    const m = (re: RegExp) => r.path.match(re);
    let g: RegExpMatchArray | null;

    // cloudresourcemanager
    if ((g = m(/^\/v1\/projects\/([^/:]+)$/)) && r.method === 'GET') {
      if (g[1] !== P) throw new ApiError(403, 'PERMISSION_DENIED', `The caller does not have permission on project ${g[1]}, or it does not exist`);
      return { projectId: P, projectNumber: this.projectNumber, lifecycleState: 'ACTIVE', name: P };
    }
    if ((g = m(/^\/v1\/projects\/([^/:]+):getIamPolicy$/))) {
      if (this.opts.denyIamRead) throw new ApiError(403, 'PERMISSION_DENIED', `The caller does not have permission resourcemanager.projects.getIamPolicy on project ${g[1]}`);
      return this.projectPolicy;
    }
    if ((g = m(/^\/v1\/projects\/([^/:]+):setIamPolicy$/))) {
      this.projectPolicy = { ...r.body.policy, etag: nextEtag(this.projectPolicy.etag) };
      return this.projectPolicy;
    }

    // serviceusage
    if ((g = m(/^\/v1\/projects\/([^/]+)\/services$/)) && r.method === 'GET') {
      return { services: [...this.enabled].map((s) => ({ name: `projects/${this.projectNumber}/services/${s}`, config: { name: s, title: s }, state: 'ENABLED', parent: `projects/${this.projectNumber}` })) };
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/services:batchEnable$/))) {
      for (const s of r.body.serviceIds) this.enabled.add(s);
      return this.op('lro', { response: { '@type': 'type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse', services: r.body.serviceIds.map((s: string) => ({ name: `projects/${this.projectNumber}/services/${s}`, state: 'ENABLED' })) } });
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/services\/([^/:]+):enable$/))) {
      this.enabled.add(g[2]!);
      return this.op('lro', { response: { '@type': 'type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse', service: { name: `projects/${this.projectNumber}/services/${g[2]}`, state: 'ENABLED' } } });
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/services\/([^/:]+)$/)) && r.method === 'GET') {
      return { name: `projects/${this.projectNumber}/services/${g[2]}`, config: { name: g[2] }, state: this.enabled.has(g[2]!) ? 'ENABLED' : 'DISABLED' };
    }
    if ((g = m(/^\/v1\/(operations\/[^/]+)$/))) return { name: g[1], done: true, response: {} };

    // artifactregistry
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/repositories\/([^/]+)$/))) {
      const key = r.path.slice(4);
      if (r.method === 'GET') return this.get(this.repos, key, 'Repository');
      if (r.method === 'DELETE') {
        this.get(this.repos, key, 'Repository');
        this.repos.delete(key);
        return this.op('lro', { name: `projects/${P}/locations/${g[2]}/operations/op-${this.opSeq + 1}`, response: { '@type': 'type.googleapis.com/google.protobuf.Empty' } });
      }
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/repositories$/)) && r.method === 'POST') {
      const name = `projects/${P}/locations/${g[2]}/repositories/${r.query.repositoryId}`;
      if (this.repos.has(name)) throw new ApiError(409, 'ALREADY_EXISTS', `the repository already exists`);
      const repo = { ...r.body, name, createTime: '2026-12-01T00:00:00Z', updateTime: '2026-12-01T00:00:00Z' };
      this.repos.set(name, repo);
      return this.op('lro', { name: `projects/${P}/locations/${g[2]}/operations/op-${this.opSeq + 1}`, response: { '@type': 'type.googleapis.com/google.devtools.artifactregistry.v1.Repository', ...repo } });
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/operations\/([^/]+)$/))) {
      if (r.query.alt === 'json' && /^op-/.test(g[3]!) && this.clusterOps.has(g[3]!)) return this.clusterOps.get(g[3]!);
      return { name: r.path.slice(4), done: true, response: {} };
    }

    // container
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/clusters\/([^/:]+)$/))) {
      const key = r.path.slice(4);
      if (r.method === 'GET') return this.get(this.clusters, key, 'Cluster');
      if (r.method === 'DELETE') {
        this.get(this.clusters, key, 'Cluster');
        this.clusters.delete(key);
        return this.clusterOp(g[2]!, 'DELETE_CLUSTER', key);
      }
      if (r.method === 'PUT') {
        const c = this.get(this.clusters, key, 'Cluster');
        const u = r.body.update ?? {};
        if (u.desiredWorkloadIdentityConfig) c.workloadIdentityConfig = u.desiredWorkloadIdentityConfig;
        return this.clusterOp(g[2]!, 'UPDATE_CLUSTER', key);
      }
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/clusters$/)) && r.method === 'POST') {
      const c = r.body.cluster;
      const key = `projects/${P}/locations/${g[2]}/clusters/${c.name}`;
      if (this.clusters.has(key)) throw new ApiError(409, 'ALREADY_EXISTS', `Already exists: ${key}`);
      this.clusters.set(key, {
        ...c,
        location: g[2],
        // gcloud names the kubectl context after the (legacy) zone field, which GKE sets to the location.
        zone: g[2],
        status: 'RUNNING',
        endpoint: '127.0.0.1',
        selfLink: `${this.url}v1/${key}`,
        currentMasterVersion: '1.31.3-gke.1000',
        currentNodeVersion: '1.31.3-gke.1000',
        masterAuth: { clusterCaCertificate: Buffer.from('-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n').toString('base64') },
        workloadIdentityConfig: c.workloadIdentityConfig ?? (c.autopilot?.enabled ? { workloadPool: `${P}.svc.id.goog` } : undefined),
      });
      return this.clusterOp(g[2]!, 'CREATE_CLUSTER', key);
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/clusters$/)) && r.method === 'GET') {
      return { clusters: [...this.clusters.values()] };
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/locations\/([^/]+)\/serverConfig$/))) {
      return { defaultClusterVersion: '1.31.3-gke.1000', validMasterVersions: ['1.31.3-gke.1000'], validNodeVersions: ['1.31.3-gke.1000'], channels: [{ channel: 'REGULAR', defaultVersion: '1.31.3-gke.1000', validVersions: ['1.31.3-gke.1000'] }] };
    }

    // sqladmin
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/operations\/([^/]+)$/))) return this.sqlOps.get(g[2]!) ?? this.op('sql');
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/instances$/)) && r.method === 'POST') {
      const b = r.body;
      if (this.instances.has(b.name)) throw new ApiError(409, 'ALREADY_EXISTS', 'The Cloud SQL instance already exists.');
      this.instances.set(b.name, {
        ...b,
        kind: 'sql#instance',
        project: P,
        state: 'RUNNABLE',
        connectionName: `${P}:${b.region}:${b.name}`,
        ipAddresses: [{ type: 'PRIMARY', ipAddress: '203.0.113.10' }],
        backendType: 'SECOND_GEN',
        databaseInstalledVersion: 'POSTGRES_15_10',
      });
      return this.sqlOp('CREATE', b.name);
    }
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/]+)$/))) {
      const name = g[2]!;
      if (r.method === 'GET') return this.get(this.instances, name, 'Cloud SQL instance');
      if (r.method === 'PATCH') {
        const cur = this.get(this.instances, name, 'Cloud SQL instance');
        const s = r.body.settings ?? {};
        cur.settings = { ...cur.settings, ...s, backupConfiguration: { ...cur.settings?.backupConfiguration, ...s.backupConfiguration } };
        return this.sqlOp('UPDATE', name);
      }
      if (r.method === 'DELETE') {
        const cur = this.get(this.instances, name, 'Cloud SQL instance');
        if (cur.settings?.deletionProtectionEnabled) throw new ApiError(400, 'FAILED_PRECONDITION', 'The instance is protected. Please disable the deletion protection and try again.');
        this.instances.delete(name);
        return this.sqlOp('DELETE', name);
      }
    }
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/]+)\/databases\/([^/]+)$/)) && r.method === 'GET') {
      this.get(this.instances, g[2]!, 'Cloud SQL instance');
      return this.get(this.databases, `${g[2]}/${g[3]}`, 'database');
    }
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/]+)\/databases$/)) && r.method === 'POST') {
      this.get(this.instances, g[2]!, 'Cloud SQL instance');
      this.databases.set(`${g[2]}/${r.body.name}`, { kind: 'sql#database', ...r.body, charset: 'UTF8', collation: 'en_US.UTF8' });
      return this.sqlOp('CREATE_DATABASE', g[2]!);
    }
    if ((g = m(/^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/]+)\/users$/))) {
      this.get(this.instances, g[2]!, 'Cloud SQL instance');
      if (r.method === 'GET') return { kind: 'sql#usersList', items: [...this.users.values()].filter((u) => u.instance === g![2]).map(({ password: _p, ...u }) => u) };
      if (r.method === 'POST') {
        this.users.set(`${g[2]}/${r.body.name}`, { kind: 'sql#user', ...r.body });
        return this.sqlOp('CREATE_USER', g[2]!);
      }
      if (r.method === 'PUT') {
        const u = this.get(this.users, `${g[2]}/${r.query.name}`, 'user');
        u.password = r.body.password;
        return this.sqlOp('UPDATE_USER', g[2]!);
      }
    }

    // storage
    if ((g = m(/^\/storage\/v1\/b$/)) && r.method === 'POST') {
      const name = r.body.name;
      if (this.buckets.has(name)) throw new ApiError(409, 'CONFLICT', 'Your previous request to create the named bucket succeeded and you already own it.');
      const b = { kind: 'storage#bucket', ...r.body, id: name, projectNumber: this.projectNumber, location: String(r.body.location ?? 'US').toUpperCase(), storageClass: r.body.storageClass ?? 'STANDARD', timeCreated: '2026-12-01T00:00:00.000Z', updated: '2026-12-01T00:00:00.000Z', metageneration: '1', etag: 'CAE=' };
      this.buckets.set(name, b);
      this.bucketPolicies.set(name, { version: 1, etag: 'CAE=', bindings: [{ role: 'roles/storage.legacyBucketOwner', members: [`projectOwner:${P}`] }] });
      return b;
    }
    if ((g = m(/^\/storage\/v1\/b\/([^/]+)$/))) {
      const b = this.get(this.buckets, g[1]!, 'bucket');
      if (r.method === 'GET') return b;
      if (r.method === 'PATCH') {
        Object.assign(b, r.body);
        return b;
      }
      if (r.method === 'DELETE') {
        this.buckets.delete(g[1]!);
        return {};
      }
    }
    if ((g = m(/^\/storage\/v1\/b\/([^/]+)\/iam$/))) {
      this.get(this.buckets, g[1]!, 'bucket');
      if (r.method === 'GET') return { kind: 'storage#policy', resourceId: `projects/_/buckets/${g[1]}`, ...this.bucketPolicies.get(g[1]!) };
      if (r.method === 'PUT') {
        this.bucketPolicies.set(g[1]!, { ...r.body, etag: nextEtag(this.bucketPolicies.get(g[1]!)?.etag ?? 'CAE=') });
        return { kind: 'storage#policy', ...this.bucketPolicies.get(g[1]!) };
      }
    }
    if ((g = m(/^\/storage\/v1\/b\/([^/]+)\/storageLayout$/))) {
      const b = this.get(this.buckets, g[1]!, 'bucket');
      return { kind: 'storage#storageLayout', bucket: g[1], location: b.location, locationType: 'region', hierarchicalNamespace: { enabled: false } };
    }
    if ((g = m(/^\/storage\/v1\/b\/([^/]+)\/managedFolders$/))) {
      this.get(this.buckets, g[1]!, 'bucket');
      return { kind: 'storage#managedFolders', items: [] };
    }
    if ((g = m(/^\/storage\/v1\/b\/([^/]+)\/o$/))) {
      this.get(this.buckets, g[1]!, 'bucket');
      return { kind: 'storage#objects', items: [] };
    }

    // iam
    if ((g = m(/^\/v1\/projects\/([^/]+)\/serviceAccounts$/)) && r.method === 'POST') {
      const email = `${r.body.accountId}@${P}.iam.gserviceaccount.com`;
      if (this.serviceAccounts.has(email)) throw new ApiError(409, 'ALREADY_EXISTS', `Service account ${r.body.accountId} already exists within project projects/${P}.`);
      const sa = { name: `projects/${P}/serviceAccounts/${email}`, projectId: P, uniqueId: '1000000000000000000001', email, displayName: r.body.serviceAccount?.displayName ?? '', etag: 'MDEwMjE5MjA=', oauth2ClientId: '1000000000000000000001' };
      this.serviceAccounts.set(email, sa);
      this.saPolicies.set(email, { version: 1, etag: 'ACAB', bindings: [] });
      return sa;
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/serviceAccounts\/([^/:]+)$/))) {
      const sa = this.get(this.serviceAccounts, g[2]!, 'service account');
      if (r.method === 'GET') return sa;
      if (r.method === 'DELETE') {
        this.serviceAccounts.delete(g[2]!);
        this.saPolicies.delete(g[2]!);
        return {};
      }
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/serviceAccounts\/([^/:]+):getIamPolicy$/))) {
      this.get(this.serviceAccounts, g[2]!, 'service account');
      return this.saPolicies.get(g[2]!);
    }
    if ((g = m(/^\/v1\/projects\/([^/]+)\/serviceAccounts\/([^/:]+):setIamPolicy$/))) {
      this.get(this.serviceAccounts, g[2]!, 'service account');
      this.saPolicies.set(g[2]!, { ...r.body.policy, etag: nextEtag(this.saPolicies.get(g[2]!)?.etag ?? 'ACAB') });
      return this.saPolicies.get(g[2]!);
    }

    throw new ApiError(404, 'NOT_FOUND', `fake GCP: no route for ${r.method} ${r.path}`);
  }

  private readonly clusterOps = new Map<string, any>();
  private clusterOp(location: string, operationType: string, key: string): any {
    const op = this.op('gke', { location, operationType, targetLink: `${this.url}v1/${key}` });
    this.clusterOps.set(op.name, op);
    return op;
  }

  private readonly sqlOps = new Map<string, any>();
  private sqlOp(operationType: string, targetId: string): any {
    const op = this.op('sql', { operationType, targetId });
    this.sqlOps.set(op.name, op);
    return op;
  }

  private get<T>(map: Map<string, T>, key: string, what: string): T {
    const v = map.get(key);
    if (v === undefined) throw new ApiError(404, 'NOT_FOUND', `The ${what} ${key} was not found.`);
    return v;
  }
}

class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly status: string,
    message: string,
  ) {
    super(message);
  }
}

function nextEtag(etag: string): string {
  return Buffer.from(`${Buffer.from(etag, 'base64').toString('latin1')}+`).toString('base64');
}
