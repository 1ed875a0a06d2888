// apply on the local target: reconcile the role processes with the config — start what is
// missing, restart what changed or died, stop what was scaled away, wait for each to answer
// /api/version. With AUTH=basic the UI role gets the real password and the login page
// (lib/ui-login.ts), every other role a throw-away password (lib/auth.ts roleAuthProperties).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { apiCredentials, credentialsHint, roleAuthProperties } from '../auth.ts';
import type { Config } from '../config.ts';
import { requireSecrets } from '../credentials.ts';
import { answersVersion, detectJava, digdagArgv, requireRuntime, type Java, type Runtime } from '../digdag.ts';
import { tail, UserError } from '../errors.ts';
import { JMX_EXPORTER_CONFIG, localMetricsPorts, metricsJvmArgs } from '../metrics.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { portFreeSoon } from '../ports.ts';
import { dbEndpoint } from '../postgres.ts';
import { freeze, isAlive, isFrozen, listProcesses, registerProcess, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { secretProperties, serverProperties } from '../properties.ts';
import { instances, localApiRole, roleFlags, runsTasks, holdsApiPassword, type Instance, type Role } from '../roles.ts';
import { writePrivateFile } from '../state.ts';
import { uiOverlayDir, writeUiOverlay } from '../ui-login.ts';
import { DIGDAG_PATCH_CLASSES, localDigdagPatchesDir, patchesEnv } from '../digdag-patches.ts';
import { QUEUE_EXPORTER, queueExporterUp, queueExporterUrl, reconcileQueueExporter } from './queue-exporter.ts';
import { changesApplied, outcome } from '../runner.ts';
import { ensureGcloudConfig, gcpProcessEnv, readAdcFile } from '../gcp.ts';

export interface Planned {
  instance: Instance;
  port: number;
  /** The JMX exporter agent's /metrics port, and Digdag's loopback JMX port. */
  metricsPort: number;
  jmxPort: number;
  propsFile: string;
  /** Non-secret properties, exactly what the generator produced for this process. */
  properties: string;
  /** Holds the real UI/API password (runs no task, or answers the endpoint: lib/roles.ts). */
  servesUsers: boolean;
  /** Serves the login page: its classpath starts with the config.js overlay. */
  loginPage: boolean;
  argv: string[];
  logFile: string;
  /** Changes when anything this process runs with changes (secrets included, hashed). */
  hash: string;
}

/** Whether a local process is configured with the real UI/API password (the endpoint's role and
 * every role that runs no task); the others are locked with a throw-away one. */
export const opensWithApiPassword = (config: Config, role: Role) => role === localApiRole(config) || holdsApiPassword(role);

export const endpointOf = (config: Config) => `http://127.0.0.1:${config.local.portBase}`;
export const taskLogDir = (config: Config) => path.join(config.stateDir, 'logs', 'tasks');

/** Every process of the local layout, with its port, properties and command line. */
export async function planLocal(config: Config, java: Java, rt: Runtime): Promise<Planned[]> {
  const secrets = requireSecrets(config);
  const db = await dbEndpoint(config, secrets.dbPassword);
  if (!rt.jmxAgent) throw new UserError('the JMX exporter agent is not in the runtime cache', 'run the build-image task: npx tsx tasks/build-image.ts');
  // A new login in the same ADC file restarts the processes: the JVMs hold the old one.
  const adc = readAdcFile(config)?.sha256;
  return instances(config).map((instance, i) => {
    const port = config.local.portBase + i;
    const { metrics: metricsPort, jmx: jmxPort } = localMetricsPorts(config, i);
    const properties = serverProperties(config, instance.role, {
      bind: '127.0.0.1',
      port,
      jmxPort,
      dbHost: db.host,
      dbPort: db.port,
      dbName: db.database,
      dbUser: db.user,
      logDir: taskLogDir(config),
      agentId: instance.name,
    });
    const propsFile = path.join(config.stateDir, 'props', `${instance.name}.properties`);
    const endpointRole = instance.role === localApiRole(config);
    const servesUsers = opensWithApiPassword(config, instance.role);
    const loginPage = config.security.auth === 'basic' && endpointRole;
    // The server's own logs go to stdout; access logs are not kept on this target.
    // Only `digdag server` gets the metrics agent: client commands would collide on its port.
    const jvmOpts = [...config.digdag.jvmOpts, ...metricsJvmArgs({ jar: rt.jmxAgent!, config: JMX_EXPORTER_CONFIG, bind: '127.0.0.1', port: metricsPort })];
    const first = [...(loginPage ? [uiOverlayDir(config)] : []), ...(config.digdag.patches ? [localDigdagPatchesDir(config)] : [])];
    const argv = digdagArgv(java, rt, jvmOpts, ['server', '-c', propsFile, ...roleFlags(config.layout, instance.role)], first);
    // Locked roles get a new throw-away password at each start; only the mode is part of the hash.
    const auth = config.security.auth === 'none' ? 'none' : servesUsers ? `${config.security.authUser}:${secrets.apiPassword}` : `locked:${config.security.authUser}`;
    const hash = createHash('sha256')
      .update(JSON.stringify({ properties, argv, db: db.database, user: db.user, pw: db.password, key: secrets.encryptionKey, auth, gcp: gcpProcessEnv(config), adc, patches: patchesEnv(config) }))
      .digest('hex');
    return { instance, port, metricsPort, jmxPort, propsFile, properties, servesUsers, loginPage, argv, logFile: path.join(config.stateDir, 'logs', `${instance.name}.log`), hash };
  });
}

/** Task-running processes finish their running tasks on SIGTERM: the grace a pod would get. */
export const stopGraceMs = (config: Config, role: Role | undefined) => (role && runsTasks(role) ? config.agent.terminationGraceSeconds * 1000 : 60_000);

const roleEntries = (config: Config) => listProcesses(config).filter((p) => p.role);

async function startOne(ctx: Ctx, p: Planned, secretsText: string): Promise<ProcessEntry> {
  if (!(await portFreeSoon(p.port))) {
    throw new UserError(
      `port ${p.port} (for ${p.instance.name}) on 127.0.0.1 is in use by another program`,
      `stop that program, or set LOCAL_PORT_BASE to a free range (this layout needs ${instances(ctx.config).length} consecutive ports)`,
    );
  }
  for (const [what, port] of [['metrics', p.metricsPort], ['JMX', p.jmxPort]] as const) {
    if (!(await portFreeSoon(port))) {
      throw new UserError(
        `port ${port} (${what} of ${p.instance.name}) on 127.0.0.1 is in use by another program`,
        `stop that program, or set LOCAL_METRICS_PORT_BASE to a free range (this layout needs ${2 * instances(ctx.config).length + 1} consecutive ports)`,
      );
    }
  }
  await ctx.runner.change(undefined, () => {
    if (ctx.config.digdag.patches && !DIGDAG_PATCH_CLASSES.every((c) => fs.existsSync(path.join(localDigdagPatchesDir(ctx.config), `${c}.class`)))) {
      throw new UserError('digdag-ha\'s patches to Digdag are not compiled (DIGDAG_PATCHES=true)', 'run the build-image task: npx tsx tasks/build-image.ts (needs a JDK), or set DIGDAG_PATCHES=false');
    }
    writePrivateFile(p.propsFile, p.properties + secretsText + roleAuthProperties(p.servesUsers, apiCredentials(ctx.config)));
    if (p.loginPage) writeUiOverlay(ctx.config);
    fs.mkdirSync(taskLogDir(ctx.config), { recursive: true });
    fs.rmSync(p.logFile, { force: true });
  });
  const pid = await ctx.runner.spawnBackground({
    argv: p.argv,
    logFile: p.logFile,
    // sh> tasks inherit this environment: the sample workflow prints it to prove where it ran;
    // the GCP part (project, the deployment's gcloud configuration) holds no credential.
    env: { ...gcpProcessEnv(ctx.config), ...patchesEnv(ctx.config), DIGDAG_HA_ROLE: p.instance.role, DIGDAG_HA_INSTANCE: p.instance.name },
    cwd: ctx.config.stateDir,
  });
  const entry: ProcessEntry & { hash: string } = {
    name: p.instance.name,
    role: p.instance.role,
    pid,
    port: p.port,
    metricsPort: p.metricsPort,
    marker: p.propsFile,
    logFile: p.logFile,
    startedAt: new Date().toISOString(),
    stopWith: 'signal',
    hash: p.hash,
  };
  await ctx.runner.change(undefined, () => registerProcess(ctx.config, entry));
  ctx.started.push(entry);
  return entry;
}

/** Waits until the process answers /api/version; a dead process fails at once with its log. */
export async function waitHealthy(entry: ProcessEntry, timeoutMs = 180_000): Promise<void> {
  const url = `http://127.0.0.1:${entry.port}`;
  let version: string | undefined;
  const ok = await waitFor(async () => {
    if (!isAlive(entry)) return true;
    version = await answersVersion(url);
    return !!version;
  }, timeoutMs, 500);
  if (ok && version) return;
  const log = fs.existsSync(entry.logFile) ? tail(fs.readFileSync(entry.logFile, 'utf8'), 25) : '(no log)';
  throw new UserError(
    `${entry.name} ${isAlive(entry) ? `did not answer ${url}/api/version within ${timeoutMs / 1000}s` : 'exited during start-up'}`,
    `read ${entry.logFile}`,
    log,
  );
}

/** Brings the running processes in line with the plan; returns what it did, per process. */
export async function reconcileLocal(ctx: Ctx): Promise<string[]> {
  const java = await detectJava(ctx.config, ctx.runner);
  const plan = await planLocal(ctx.config, java, requireRuntime(ctx.config));
  const secrets = requireSecrets(ctx.config);
  const db = await dbEndpoint(ctx.config, secrets.dbPassword);
  const secretsText = secretProperties(db.password, secrets.encryptionKey);
  const running = new Map(roleEntries(ctx.config).map((e) => [e.name, e as ProcessEntry & { hash?: string }]));
  const actions: string[] = [];
  // sh> tasks' gcloud/bq identity, ready before any process that could run one starts.
  actions.push(await ensureGcloudConfig(ctx));

  // A role an interrupted verify-ha left frozen (SIGSTOP) runs again.
  for (const [name, e] of running) {
    if (isFrozen(e)) {
      await freeze(e, false);
      actions.push(`${name}: resumed (left frozen by an interrupted verify-ha)`);
    }
  }
  // Scaled away, first, so their ports are free for the new layout.
  for (const [name, e] of running) {
    if (!plan.some((p) => p.instance.name === name)) {
      await stopProcess(e, 60_000);
      unregisterProcess(ctx.config, name);
      running.delete(name);
      actions.push(`${name}: stopped (scaled down)`);
    }
  }
  // Stop everything that must restart before starting anything: ports shift when the layout or
  // the replica counts change, and a new process must not meet an old one on its port.
  const restart = plan.filter((p) => {
    const cur = running.get(p.instance.name);
    return !(cur && isAlive(cur) && cur.hash === p.hash && !ctx.force);
  });
  const wasAlive = new Map(restart.map((p) => [p.instance.name, !!running.get(p.instance.name) && isAlive(running.get(p.instance.name)!)]));
  await Promise.all(restart.map(async (p) => {
    const cur = running.get(p.instance.name);
    if (!cur) return;
    await stopProcess(cur, stopGraceMs(ctx.config, cur.role as Role));
    unregisterProcess(ctx.config, cur.name);
  }));
  const starting: ProcessEntry[] = [];
  for (const p of plan) {
    const cur = running.get(p.instance.name);
    if (!restart.includes(p)) {
      actions.push(`${p.instance.name}: running, unchanged (pid ${cur!.pid})`);
      continue;
    }
    const e = await startOne(ctx, p, secretsText);
    starting.push(e);
    const did = cur ? (wasAlive.get(p.instance.name) ? 'restarted (config changed)' : 'restarted (was not running)') : 'started';
    actions.push(`${p.instance.name}: ${outcome(ctx.runner, did, `would be ${did}`)} on :${p.port}`);
  }
  if (changesApplied(ctx.runner)) await Promise.all(starting.map((e) => waitHealthy(e)));
  // Queue depth, attempts and schedules: once per deployment, from the database.
  actions.push(await reconcileQueueExporter(ctx));
  return actions;
}

export const apply: Impl = {
  inputs: async (ctx) => {
    const java = await detectJava(ctx.config, ctx.runner);
    return { values: (await planLocal(ctx.config, java, requireRuntime(ctx.config))).map((p) => p.hash) };
  },
  healthy: async (ctx) => {
    const want = instances(ctx.config).map((i) => i.name);
    const entries = roleEntries(ctx.config);
    if (entries.length !== want.length || !want.every((n) => entries.some((e) => e.name === n && isAlive(e)))) return false;
    const answers = await Promise.all(entries.map((e) => answersVersion(`http://127.0.0.1:${e.port}`)));
    const qe = listProcesses(ctx.config).find((p) => p.name === QUEUE_EXPORTER);
    if (!qe || !isAlive(qe) || !(await queueExporterUp(queueExporterUrl(ctx)))) return false;
    return answers.every(Boolean) ? `${entries.length} role processes running and answering, queue exporter connected` : false;
  },
  run: async (ctx) => {
    for (const line of await reconcileLocal(ctx)) ctx.runner.log(line);
    ctx.runner.log(`UI and API: ${endpointOf(ctx.config)}${ctx.config.security.auth === 'basic' ? ' (the UI asks for the user and password below)' : ''}`);
    for (const line of credentialsHint(ctx.config)) ctx.runner.log(line);
  },
};
