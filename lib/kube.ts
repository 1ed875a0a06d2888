// Kubernetes implementations of the tasks (minikube and gke), keyed by task name, and teardown.
// Every kubectl call names the context and namespace; secrets travel on stdin or in 0600 files.
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { ROOT } from './cli.ts';
import type { Config } from './config.ts';
import { ensureSecrets, requireSecrets, useDryRunSecrets } from './credentials.ts';
import { answersVersion } from './digdag.ts';
import { tail, UserError } from './errors.ts';
import { dbLocation, renderManifests, type KubeObject } from './kube-render.ts';
import type { Ctx, Impl, TaskName } from './pipeline.ts';
import { isPortFree, parseDatabaseUrl, psqlVariables } from './postgres.ts';
import { isAlive, listProcesses, registerProcess, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from './processes.ts';
import { secretProperties } from './properties.ts';
import { ROLES, ROLE_FLAGS } from './roles.ts';
import { validateObjects } from './schema.ts';
import { listFiles, writePrivateFile } from './state.ts';
import { DIGDAG_RELEASE_JAR_SHA256, DIGDAG_VERSION } from './versions.ts';

export const PORT_FORWARD = 'port-forward';

/** kubectl with the configured context (cluster-scoped calls: the namespace itself). */
export function clusterKubectl(config: Config, ...args: string[]): string[] {
  return ['kubectl', ...(config.k8s.context ? ['--context', config.k8s.context] : []), ...args];
}

/** kubectl with the configured context and namespace. */
export function kubectl(config: Config, ...args: string[]): string[] {
  return clusterKubectl(config, '-n', config.k8s.namespace, ...args);
}

/** Fails with the fix when the cluster does not answer, before anything is changed. */
export async function requireCluster(ctx: Ctx): Promise<void> {
  const res = await ctx.runner.run({ argv: [...kubectl(ctx.config, 'version', '--request-timeout=10s', '-o', 'json')], nothrow: true });
  if (res.code !== 0 || !/"serverVersion"/.test(res.stdout)) {
    const where = ctx.config.k8s.context ? `context ${ctx.config.k8s.context}` : 'the current kubectl context';
    throw new UserError(
      `the Kubernetes cluster (${where}) does not answer`,
      ctx.config.target === 'minikube'
        ? `start it: minikube start -p ${ctx.config.k8s.minikubeProfile} (or run npx tsx tasks/e2e.ts, which does)`
        : 'check KUBE_CONTEXT and your credentials: gcloud container clusters get-credentials <cluster> --region <region>',
      tail(res.stderr || res.stdout, 5),
    );
  }
}

async function applyObjects(ctx: Ctx, objects: readonly KubeObject[]): Promise<void> {
  const yaml = objects.map((o) => stringify(o)).join('---\n');
  await ctx.runner.run({ argv: kubectl(ctx.config, 'apply', '-f', '-'), input: yaml, mutates: true });
}

/** On a failed wait: the namespace's recent events and the pods' state, to show the user. */
async function diagnostics(ctx: Ctx, selector: string): Promise<string> {
  const events = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'events', '--sort-by=.lastTimestamp'), nothrow: true });
  const pods = await ctx.runner.run({ argv: kubectl(ctx.config, 'describe', 'pods', '-l', selector), nothrow: true });
  return `events:\n${tail(events.stdout, 15)}\npods:\n${tail(pods.stdout, 25)}`;
}

async function rollout(ctx: Ctx, kind: 'deployment' | 'statefulset', name: string, selector: string): Promise<void> {
  const res = await ctx.runner.run({
    argv: kubectl(ctx.config, 'rollout', 'status', `${kind}/${name}`, `--timeout=${ctx.config.k8s.rolloutTimeoutSeconds}s`),
    nothrow: true,
  });
  if (res.code !== 0) {
    throw new UserError(`${kind}/${name} did not become ready within ${ctx.config.k8s.rolloutTimeoutSeconds}s`, 'read the events below; raise ROLLOUT_TIMEOUT_SECONDS if the image pull is slow', await diagnostics(ctx, selector));
  }
}

const byKind = (objects: readonly KubeObject[], ...kinds: string[]) => objects.filter((o) => kinds.includes(o.kind));
const component = (o: KubeObject) => o.metadata.labels?.['app.kubernetes.io/component'];

const buildImage: Impl = {
  inputs: (ctx) => ({
    values: { image: ctx.config.k8s.image, gcloud: ctx.config.k8s.installGcloud, tz: ctx.config.k8s.tz, lang: ctx.config.k8s.lang, target: ctx.config.target },
    files: listFiles(path.join(ROOT, 'docker')),
  }),
  healthy: async (ctx) => {
    const res = await ctx.runner.run({ argv: ['docker', 'image', 'inspect', '--format', '{{.Id}}', ctx.config.k8s.image], nothrow: true, quiet: true });
    return res.code === 0 ? `image ${ctx.config.k8s.image} built` : false;
  },
  run: async (ctx) => {
    const info = await ctx.runner.run({ argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], nothrow: true });
    if (info.code !== 0) throw new UserError('no Docker engine answers', 'start Docker (or use --target local, which needs none)', tail(info.stderr, 3));
    const c = ctx.config.k8s;
    await ctx.runner.run({
      argv: ['docker', 'build', '-f', path.join(ROOT, 'docker', 'Dockerfile'), '-t', c.image,
        '--build-arg', `DIGDAG_VERSION=${DIGDAG_VERSION}`, '--build-arg', `DIGDAG_SHA256=${DIGDAG_RELEASE_JAR_SHA256}`,
        '--build-arg', `INSTALL_GCLOUD=${c.installGcloud}`, '--build-arg', `TZ=${c.tz}`, '--build-arg', `LANG=${c.lang}`,
        path.join(ROOT, 'docker')],
      mutates: true,
    });
    if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', c.minikubeProfile, 'image', 'load', c.image], mutates: true });
    else await ctx.runner.run({ argv: ['docker', 'push', c.image], mutates: true });
  },
};

/** `kubectl create secret … --dry-run=client -o yaml | kubectl apply -f -`, values from 0600 files. */
async function applySecret(ctx: Ctx, name: string, files: Record<string, string>): Promise<void> {
  const dir = path.join(ctx.config.stateDir, 'secrets', `.${name}`);
  try {
    const args: string[] = [];
    for (const [key, value] of Object.entries(files)) {
      writePrivateFile(path.join(dir, key), value);
      args.push(`--from-file=${key}=${path.join(dir, key)}`);
    }
    const made = await ctx.runner.run({ argv: kubectl(ctx.config, 'create', 'secret', 'generic', name, ...args, '--dry-run=client', '-o', 'yaml'), quiet: true });
    await ctx.runner.run({ argv: kubectl(ctx.config, 'apply', '-f', '-'), input: made.stdout, mutates: true });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const createSecret: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    if (ctx.runner.dryRun) useDryRunSecrets(ctx.config);
    const { secrets, created } = ctx.runner.dryRun ? { secrets: requireSecrets(ctx.config), created: [] } : ensureSecrets(ctx.config);
    if (created.length) ctx.runner.log(`generated ${created.join(', ')} (kept 0600 in ${ctx.config.stateDir}/secrets)`);
    const ns = await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'create', 'namespace', ctx.config.k8s.namespace, '--dry-run=client', '-o', 'yaml'), quiet: true });
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'apply', '-f', '-'), input: ns.stdout, mutates: true });
    const dbPassword = ctx.config.db.externalUrl ? parseDatabaseUrl(ctx.config.db.externalUrl).password : secrets.dbPassword;
    await applySecret(ctx, 'digdag-secrets', {
      'secret.properties': secretProperties(dbPassword, secrets.encryptionKey),
      'db-password': dbPassword,
      'postgres-password': secrets.postgresPassword,
    });
    if (ctx.config.gcp.saKeyFile) await applySecret(ctx, 'digdag-gcp-key', { 'key.json': fs.readFileSync(ctx.config.gcp.saKeyFile, 'utf8') });
  },
};

const startPostgres: Impl = {
  notApplicable: (ctx) => (ctx.config.db.externalUrl ? `DATABASE_URL is set: using ${dbLocation(ctx.config).host}, no in-cluster PostgreSQL` : undefined),
  run: async (ctx) => {
    await requireCluster(ctx);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await applyObjects(ctx, [...byKind(objects, 'Namespace', 'ServiceAccount'), ...objects.filter((o) => component(o) === 'postgres')]);
    await rollout(ctx, 'statefulset', 'digdag-postgres', 'app.kubernetes.io/component=postgres');
  },
};

const initDb: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    const secrets = requireSecrets(ctx.config);
    const db = dbLocation(ctx.config);
    if (!ctx.config.db.externalUrl) {
      const vars = psqlVariables({ db_user: db.user, db_password: secrets.dbPassword, db_name: db.database });
      for (const file of fs.readdirSync(path.join(ROOT, 'sql')).filter((f) => f.endsWith('.sql')).sort()) {
        await ctx.runner.run({
          argv: kubectl(ctx.config, 'exec', '-i', 'digdag-postgres-0', '-c', 'postgres', '--', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-U', 'postgres', '-d', 'postgres', '-f', '-'),
          input: vars + fs.readFileSync(path.join(ROOT, 'sql', file), 'utf8'),
          mutates: true,
        });
      }
    }
    // The Job's template is immutable: a new migration is a new Job.
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', 'job', 'digdag-migrate', '--ignore-not-found', '--wait=true'), mutates: true });
    await applyObjects(ctx, [...byKind(objects, 'ConfigMap'), ...byKind(objects, 'Job')]);
    const done = await ctx.runner.run({
      argv: kubectl(ctx.config, 'wait', '--for=condition=complete', 'job/digdag-migrate', `--timeout=${ctx.config.k8s.rolloutTimeoutSeconds}s`),
      nothrow: true,
      mutates: true,
    });
    if (done.code !== 0) {
      const logs = await ctx.runner.run({ argv: kubectl(ctx.config, 'logs', 'job/digdag-migrate', '--tail=30'), nothrow: true });
      throw new UserError('the migration Job did not complete', 'read its log below; check the database and the digdag-secrets Secret', `${tail(logs.stdout + logs.stderr, 30)}\n${await diagnostics(ctx, 'app.kubernetes.io/component=migrate')}`);
    }
  },
};

const apply: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const errors = await validateObjects(objects);
    if (errors.length) throw new UserError('the rendered manifests do not validate', 'fix the manifests or the .env values named below', errors.map((e) => `${e.object}: ${e.message}`).join('\n'));
    // The migration Job belongs to init-db (its template is immutable).
    await applyObjects(ctx, objects.filter((o) => o.kind !== 'Job'));
    for (const role of ROLES) await rollout(ctx, 'deployment', `digdag-${role}`, `app.kubernetes.io/component=${role}`);
  },
};

async function waitIngressAddress(ctx: Ctx): Promise<string> {
  let address = '';
  await waitFor(async () => {
    const res = await ctx.runner.run({ argv: kubectl(ctx.config, 'get', 'ingress', 'digdag', '-o', 'jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}'), nothrow: true, quiet: true });
    address = res.stdout.trim();
    return !!address || ctx.runner.dryRun;
  }, 300_000, 3000);
  if (!address && !ctx.runner.dryRun) throw new UserError('the Ingress got no address within 300s', 'check the ingress controller (minikube: minikube addons enable ingress; GKE: install ingress-nginx)', await diagnostics(ctx, 'app.kubernetes.io/component=ui'));
  return address;
}

const ingress: Impl = {
  run: async (ctx) => {
    await requireCluster(ctx);
    if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', ctx.config.k8s.minikubeProfile, 'addons', 'enable', 'ingress'], mutates: true });
    const address = await waitIngressAddress(ctx);
    ctx.facts.ingressEndpoint = `http://${ctx.config.k8s.ingressHost || address}`;
    ctx.runner.log(`UI through the Ingress: ${ctx.facts.ingressEndpoint}`);
  },
};

/** Starts (or restarts) the tracked background port-forward to the UI Service. */
export async function startPortForward(ctx: Ctx): Promise<string> {
  const port = ctx.config.k8s.portForwardPort;
  const existing = listProcesses(ctx.config).find((p) => p.name === PORT_FORWARD);
  if (existing) {
    await stopProcess(existing, 5000);
    unregisterProcess(ctx.config, PORT_FORWARD, existing.pid);
  }
  if (!(await isPortFree(port))) throw new UserError(`port ${port} on 127.0.0.1 is in use`, 'set PORT_FORWARD_PORT to a free port');
  const logFile = path.join(ctx.config.stateDir, 'logs', 'port-forward.log');
  const argv = kubectl(ctx.config, 'port-forward', '--address', '127.0.0.1', 'svc/digdag-ui', `${port}:65432`);
  const pid = await ctx.runner.spawnBackground({ argv, logFile });
  const entry: ProcessEntry = { name: PORT_FORWARD, pid, marker: 'svc/digdag-ui', logFile, startedAt: new Date().toISOString(), port };
  const endpoint = `http://127.0.0.1:${port}`;
  if (ctx.runner.dryRun) return endpoint;
  registerProcess(ctx.config, entry);
  ctx.started.push(entry);
  const ok = await waitFor(async () => !isAlive(entry) || !!(await answersVersion(endpoint)), 30_000, 500);
  if (!ok || !isAlive(entry)) {
    throw new UserError(`kubectl port-forward to svc/digdag-ui did not come up on ${endpoint}`, 'check that the UI pods are ready (apply)', fs.existsSync(logFile) ? tail(fs.readFileSync(logFile, 'utf8'), 10) : '');
  }
  return endpoint;
}

const portForward: Impl = {
  healthy: async (ctx) => {
    const e = listProcesses(ctx.config).find((p) => p.name === PORT_FORWARD);
    return e && isAlive(e) && (await answersVersion(`http://127.0.0.1:${ctx.config.k8s.portForwardPort}`)) ? `forward on 127.0.0.1:${ctx.config.k8s.portForwardPort} answering` : false;
  },
  inputs: (ctx) => ({ values: { port: ctx.config.k8s.portForwardPort, ns: ctx.config.k8s.namespace, context: ctx.config.k8s.context } }),
  run: async (ctx) => {
    await requireCluster(ctx);
    ctx.facts.endpoint = await startPortForward(ctx);
    ctx.runner.log(`UI and API: ${ctx.facts.endpoint} (kubectl port-forward, stopped by down)`);
  },
};

export const kubeImpls: Partial<Record<TaskName, Impl>> = {
  'build-image': buildImage,
  'create-secret': createSecret,
  'start-postgres': startPostgres,
  'init-db': initDb,
  apply,
  ingress,
  'port-forward': portForward,
};

/** The container args a role's pods must run with. */
export const expectedArgs = (role: (typeof ROLES)[number]) => ['server', ...ROLE_FLAGS[role]];

/** Teardown: the port-forward, then the workloads; --purge deletes the namespace (volumes too). */
export async function kubeDown(ctx: Ctx, purge: boolean): Promise<string[]> {
  const done: string[] = [];
  for (const e of listProcesses(ctx.config)) {
    done.push(`${e.name}: ${await stopProcess(e, 5000)}`);
    unregisterProcess(ctx.config, e.name, e.pid);
  }
  await requireCluster(ctx);
  if (purge) {
    await ctx.runner.run({ argv: clusterKubectl(ctx.config, 'delete', 'namespace', ctx.config.k8s.namespace, '--ignore-not-found'), mutates: true });
    done.push(`deleted namespace ${ctx.config.k8s.namespace} (database volume included)`);
  } else {
    const { objects } = await renderManifests(ctx.config, ctx.runner);
    const yaml = objects.filter((o) => o.kind !== 'Namespace').map((o) => stringify(o)).join('---\n');
    await ctx.runner.run({ argv: kubectl(ctx.config, 'delete', '-f', '-', '--ignore-not-found'), input: yaml, mutates: true });
    done.push(`deleted the digdag-ha objects in ${ctx.config.k8s.namespace}; the database volume is kept (down --purge deletes it)`);
  }
  return done;
}

