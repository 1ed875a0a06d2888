// push-workflow (both targets): push the sample project (and WORKFLOW_DIR, if set) with the real `digdag push`
// client, under a content-hash revision so an unchanged project is not pushed again. With basic
// auth on, the client reads the Authorization header from a 0600 `-c` file, never from argv.
import path from 'node:path';
import { authenticatedEndpoint, clientConfigFile, credentialsHint, writeClientConfig } from './auth.ts';
import { WORKFLOWS_DIR } from './paths.ts';
import type { Config } from './config.ts';
import { CLIENT_JVM_OPTS, detectJava, digdagArgv, getJson, obtainRuntime, readRuntime, writeRuntime, type AuthEndpoint } from './digdag.ts';
import { UserError } from './errors.ts';
import type { Ctx, Impl } from './pipeline.ts';
import { hashInputs, listFiles } from './state.ts';
import type { Target } from './target.ts';
import { outcome } from './runner.ts';

export const SAMPLE_PROJECT = 'ha-sample';
export const sampleDir = () => path.join(WORKFLOWS_DIR, SAMPLE_PROJECT);

export function projects(config: Config): { name: string; dir: string }[] {
  const out = [{ name: SAMPLE_PROJECT, dir: sampleDir() }];
  if (config.workflows.dir) out.push({ name: config.workflows.project, dir: config.workflows.dir });
  return out;
}

/** Revision = hash of the project's files: the same files are never pushed twice. */
export const revisionOf = (dir: string) =>
  // .digdag/ is the client's scratch dir inside the project, not part of it.
  `dh-${hashInputs('rev', listFiles(dir).filter((f) => !f.includes(`${path.sep}.digdag${path.sep}`))).slice(0, 16)}`;

async function serverRevision(endpoint: AuthEndpoint, name: string): Promise<string | undefined> {
  try {
    const res = await getJson<{ projects: { revision: string }[] }>(endpoint, `/api/projects?name=${encodeURIComponent(name)}`);
    return res.projects[0]?.revision;
  } catch {
    return undefined;
  }
}

/** Pushes one project with the real client under its content-hash revision (a no-op when the
 * server already has that revision); returns what it did. */
/** How long one `digdag push` may take (a loaded machine needs ~10 s). */
export const PUSH_TIMEOUT_MS = 300_000;

export async function pushProject(ctx: Ctx, endpoint: AuthEndpoint, p: { name: string; dir: string }): Promise<string> {
  const url = endpoint.url;
  const rev = revisionOf(p.dir);
  // Digdag refuses a revision it already has (409): a project already at it is left alone.
  if ((await serverRevision(endpoint, p.name)) === rev) return `${p.name} already at revision ${rev} on ${url}`;
  // The client's endpoint and header, 0600; `ps` shows only the file's path.
  const clientFile = clientConfigFile(ctx.config);
  await ctx.runner.change(`would write ${clientFile} (0600): client.http.endpoint and the Authorization header`, () => writeClientConfig(ctx.config, url));
  const java = await detectJava(ctx.config, ctx.runner);
  // The client runs on this machine; on Kubernetes targets the runtime may not be cached yet.
  let rt = readRuntime(ctx.config);
  if (!rt) {
    rt = await obtainRuntime(ctx.config, ctx.runner);
    const found = rt;
    await ctx.runner.change(undefined, () => writeRuntime(ctx.config, found));
  }
  const res = await ctx.runner.run({
    // -c: only this file is read (not ~/.config/digdag/config), and it carries the endpoint.
    argv: digdagArgv(java, rt, CLIENT_JVM_OPTS, ['push', p.name, '--project', p.dir, '-r', rev, '-c', clientFile]),
    mutates: true,
    nothrow: true,
    // The client sets no read timeout: a server that accepts and never answers would hold it forever.
    timeoutMs: PUSH_TIMEOUT_MS,
  });
  if (res.code !== 0) {
    const out = `${res.stdout}\n${res.stderr}`.trim();
    const unreachable = /Connection refused|UnknownHost|connect timed out|stopped: no answer within/i.test(out);
    const refused = /\b401\b|Unauthorized/i.test(out);
    throw new UserError(
      unreachable ? `cannot reach Digdag at ${url} to push ${p.name}`
        : refused ? `Digdag at ${url} refused the credentials in ${clientFile}`
          : `digdag push ${p.name} was rejected (is a workflow in ${p.dir} broken?)`,
      unreachable ? 'run the apply task (and port-forward on Kubernetes) first'
        : refused ? 'the running servers have another password than the state dir: run apply again (it restarts roles whose properties changed)'
          : `fix the workflow files in ${p.dir}; the error above names the file and key`,
      out.split('\n').slice(-12).join('\n'),
    );
  }
  return `${outcome(ctx.runner, 'pushed', 'would push')} ${p.name} revision ${rev} to ${url}`;
}

/** push-workflow on a target: the same everywhere, to the UI/API URL the target reaches. */
export function pushWorkflowOn(target: Pick<Target, 'apiUrl'>): Impl {
  const endpointOf = (ctx: Ctx): AuthEndpoint => authenticatedEndpoint(ctx.config, target.apiUrl(ctx));
  return {
    inputs: (ctx) => ({ values: { endpoint: target.apiUrl(ctx), auth: ctx.config.security.auth, projects: projects(ctx.config).map((p) => [p.name, revisionOf(p.dir)]) } }),
    healthy: async (ctx) => {
      const endpoint = endpointOf(ctx);
      for (const p of projects(ctx.config)) if ((await serverRevision(endpoint, p.name)) !== revisionOf(p.dir)) return false;
      return `projects already at their revisions on ${endpoint.url}`;
    },
    run: async (ctx) => {
      const endpoint = endpointOf(ctx);
      ctx.facts.pushed = [];
      for (const p of projects(ctx.config)) {
        ctx.runner.log(await pushProject(ctx, endpoint, p));
        ctx.facts.pushed.push({ project: p.name, revision: revisionOf(p.dir) });
      }
      for (const line of credentialsHint(ctx.config)) ctx.runner.log(line);
    },
  };
}
