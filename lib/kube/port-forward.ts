// port-forward on Kubernetes: a tracked background `kubectl port-forward` to the UI Service.
import fs from 'node:fs';
import path from 'node:path';
import { answersVersion } from '../digdag.ts';
import { tail, UserError } from '../errors.ts';
import type { Ctx, Impl } from '../pipeline.ts';
import { isPortFree, portFreeSoon } from '../ports.ts';
import { isAlive, listProcesses, registerProcess, stopProcess, unregisterProcess, waitFor, type ProcessEntry } from '../processes.ts';
import { kubectl, requireCluster } from './kubectl.ts';
import { changesApplied } from '../runner.ts';

export const PORT_FORWARD = 'port-forward';
/** What the forward points at when it serves the UI/API (verify-ha moves it to single pods). */
export const UI_SERVICE = 'svc/digdag-ui';

/** The URL this machine reaches the UI/API on: the forward this run started, else its port. */
export const forwardedUrl = (ctx: Ctx): string => ctx.facts.endpoint ?? `http://127.0.0.1:${ctx.config.k8s.portForwardPort}`;

/** Starts (or moves) the tracked port-forward; `to` is the UI Service unless verify-ha needs a
 * particular pod. */
export async function startPortForward(ctx: Ctx, to = UI_SERVICE): Promise<string> {
  const port = ctx.config.k8s.portForwardPort;
  const existing = listProcesses(ctx.config).find((p) => p.name === PORT_FORWARD);
  if (existing) {
    await stopProcess(existing, 5000);
    unregisterProcess(ctx.config, PORT_FORWARD, existing.pid);
  }
  // The forward just stopped may hold its socket a moment after it looks dead.
  if (!(await portFreeSoon(port))) throw new UserError(`port ${port} on 127.0.0.1 is in use`, 'set PORT_FORWARD_PORT to a free port');
  const logFile = path.join(ctx.config.stateDir, 'logs', 'port-forward.log');
  const argv = kubectl(ctx.config, 'port-forward', '--address', '127.0.0.1', to, `${port}:65432`);
  const pid = await ctx.runner.spawnBackground({ argv, logFile });
  const entry: ProcessEntry = { name: PORT_FORWARD, pid, marker: to, logFile, startedAt: new Date().toISOString(), port };
  const endpoint = `http://127.0.0.1:${port}`;
  if (!changesApplied(ctx.runner)) return endpoint;
  registerProcess(ctx.config, entry);
  ctx.started.push(entry);
  const ok = await waitFor(async () => !isAlive(entry) || !!(await answersVersion(endpoint)), 30_000, 500);
  if (!ok || !isAlive(entry)) {
    throw new UserError(`kubectl port-forward to ${to} did not come up on ${endpoint}`, 'check that the pods are ready (apply)', fs.existsSync(logFile) ? tail(fs.readFileSync(logFile, 'utf8'), 10) : '');
  }
  return endpoint;
}

export const portForward: Impl = {
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
