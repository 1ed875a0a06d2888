// Where the generated secrets must never show up, checked on a real Digdag: the environment and
// parent command line a sh> task sees (through that task's log, as a workflow author would read
// it), and the layers of a built image.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import zlib from 'node:zlib';
import { apiCredentials, authorizationHeader } from '../../lib/auth.ts';
import type { Config } from '../../lib/config.ts';
import { requireSecrets } from '../../lib/credentials.ts';
import { logFiles, startAttempt, waitAttempt, workflowId } from '../../lib/digdag-api.ts';
import { authHeaders, urlOf, type AuthEndpoint } from '../../lib/digdag.ts';
import type { Ctx } from '../../lib/pipeline.ts';
import { pushProject } from '../../lib/push-workflow.ts';
import { ROOT } from '../../lib/paths.ts';

/** Every generated value in the forms it travels in (the header's base64 included). */
export function generatedSecrets(config: Config): { name: string; value: string }[] {
  const s = requireSecrets(config);
  const out = [
    { name: 'database password', value: s.dbPassword },
    { name: 'encryption key', value: s.encryptionKey },
    { name: 'UI/API password', value: s.apiPassword },
  ];
  if (s.postgresPassword) out.push({ name: 'PostgreSQL superuser password', value: s.postgresPassword });
  const c = apiCredentials(config, s);
  if (c) out.push({ name: 'Authorization header', value: authorizationHeader(c).replace(/^Basic /, '') });
  return out;
}

export function assertNoSecret(config: Config, where: string, text: string): void {
  for (const { name, value } of generatedSecrets(config)) assert.ok(!text.includes(value), `${where} contains the ${name}`);
}

const PROJECT = 'leak-probe';

/** Pushes test/fixtures/leak-probe, runs it, and returns what a sh> task saw: its environment
 * and its parent's command line — from the task log, or with `fromFile` from the file the task
 * wrote (`fromFile.read` fetches it from wherever the task ran). */
export async function shTaskSees(ctx: Ctx, endpoint: AuthEndpoint, fromFile?: { path: string; read: () => Promise<string> }): Promise<string> {
  await pushProject(ctx, endpoint, { name: PROJECT, dir: path.join(ROOT, 'test', 'fixtures', PROJECT) });
  const params = fromFile ? { dump_file: fromFile.path } : {};
  const id = await startAttempt(endpoint, await workflowId(endpoint, PROJECT, PROJECT), new Date(Math.floor(Date.now() / 1000) * 1000), params);
  const attempt = await waitAttempt(endpoint, id, 180_000);
  assert.ok(attempt.success, `the ${PROJECT} attempt ${id} failed`);
  let text = '';
  if (fromFile) {
    text = await fromFile.read();
  } else {
    for (const f of await logFiles(endpoint, id)) {
      const res = await fetch(`${urlOf(endpoint)}/api/logs/${id}/files/${encodeURIComponent(f.fileName)}`, { headers: authHeaders(endpoint) });
      assert.equal(res.status, 200, `log file ${f.fileName}`);
      const body = Buffer.from(await res.arrayBuffer());
      text += (body[0] === 0x1f && body[1] === 0x8b ? zlib.gunzipSync(body) : body).toString('utf8');
    }
  }
  // The dump really ran: its markers and a variable every process has.
  assert.match(text, /leak-probe begin[\s\S]*\bPATH=[\s\S]*leak-probe end/, `no environment dump from the sh> task:\n${text.slice(0, 500)}`);
  return text;
}

/** Streams `docker save` of an image and returns the names of the secrets found in its bytes
 * (layers are uncompressed tars there; chunks overlap so a value across a boundary is seen). */
export function imageSecrets(dockerArgv: string[], config: Config): Promise<string[]> {
  const secrets = generatedSecrets(config);
  const keep = Math.max(...secrets.map((s) => s.value.length));
  return new Promise((resolve, reject) => {
    const p = spawn(dockerArgv[0]!, dockerArgv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const found = new Set<string>();
    let tail = '';
    let bytes = 0;
    let err = '';
    p.stdout.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      const text = tail + chunk.toString('latin1');
      for (const s of secrets) if (text.includes(s.value)) found.add(s.name);
      tail = text.slice(-keep);
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 && bytes > 0 ? resolve([...found]) : reject(new Error(`${dockerArgv.join(' ')}: exit ${code}, ${bytes} bytes: ${err}`))));
  });
}
