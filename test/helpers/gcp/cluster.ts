// The offline Google Cloud on the own cluster (test only; kube-e2e's blocks call these): a keyless
// chart release whose pods take their identity from the project's metadata server on the bridge
// address (Application Default Credentials, as Workload Identity gives a GKE pod), with GCS task
// logs; the BigQuery sample run there whole (bq_ddl>, bq>, sh> bq) and read back through another
// pod; the failure cases (no identity, a wrong key): the attempt fails by itself with the cause in
// its task error (digdag-ha's credential patch; Digdag 0.10.5.1's bq> retried it forever), no
// secret printed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { Config } from '../../../lib/config.ts';
import { clientConfig } from '../../../lib/auth.ts';
import { attemptTasks, getAttempt, logFiles, projectId, request, startAttempt, waitAttempt, workflowId } from '../../../lib/digdag-api.ts';
import { answersVersion, authHeaders, CLIENT_JVM_OPTS, detectJava, digdagArgv, getJson, requireRuntime, type AuthEndpoint } from '../../../lib/digdag.ts';
import { GCP_CREDENTIAL_SECRET } from '../../../lib/gcp.ts';
import { ROOT } from '../../../lib/paths.ts';
import { freePortRange } from '../../../lib/ports.ts';
import { revisionOf } from '../../../lib/push-workflow.ts';
import { waitFor } from '../../../lib/processes.ts';
import type { Result, Runner } from '../../../lib/runner.ts';
import { tempDir } from '../fixtures.ts';
import type { EdgeRequest } from './edge.ts';
import type { GoogleApis } from './index.ts';
import type { MetadataServer } from './metadata-server.ts';

export const SAMPLE_DIR = path.join(ROOT, 'workflows', 'bigquery-sample');
/** One bq> query and nothing else: what the identity failure cases run. */
export const IDENTITY_FIXTURE = path.join(ROOT, 'test', 'fixtures', 'bq-identity');
/** The sample's tables as its queries make them (sorted rows). */
export const SAMPLE_ROWS = {
  orders: [['nagoya', '50'], ['osaka', '80'], ['tokyo', '120'], ['tokyo', '30']],
  orders_by_region: [['nagoya', '1', '50'], ['osaka', '1', '80'], ['tokyo', '2', '150']],
};

/** The bucket the sample's export step writes to (its export_bucket parameter); the tests create it. */
export const EXPORT_BUCKET = 'digdag-ha-test-exports';

/**
 * The sample's export step ran: bq_extract> had the emulator write orders_by_region as CSV into
 * EXPORT_BUCKET (the rows the sample's tables hold), and gcs_wait> found that object through the
 * edge from Digdag's Java client — as `email`, like every other request (assertOneIdentity).
 */
export async function assertExported(gcp: GoogleApis, dataset: string, requests: EdgeRequest[], email: string): Promise<string> {
  const object = `digdag-ha-sample/${dataset}/orders_by_region.csv`;
  const res = await fetch(`${gcp.storage.url}/download/storage/v1/b/${EXPORT_BUCKET}/o/${encodeURIComponent(object)}?alt=media`);
  assert.equal(res.status, 200, `gs://${EXPORT_BUCKET}/${object} was not written by bq_extract>`);
  const [header, ...rows] = (await res.text()).trim().split('\n');
  assert.equal(header, 'region,orders,total', `the export's header: ${header}`);
  assert.deepEqual(rows.map((r) => r.split(',')).sort((a, b) => a.join().localeCompare(b.join())), SAMPLE_ROWS.orders_by_region);
  const jobs = requests.filter((r) => r.service === 'bigquery' && isJava(r) && r.method === 'POST' && /\/jobs(\?|$)/.test(r.path));
  assert.ok(jobs.length >= 3, `bq>, bq> and bq_extract> each submitted a job from Digdag: ${jobs.length}`);
  const stat = requests.filter((r) => r.service === 'storage' && isJava(r) && r.method === 'GET' && r.path.includes(`/b/${EXPORT_BUCKET}/o/`));
  assert.ok(stat.length > 0, `gcs_wait> asked GCS for the export: ${requests.filter((r) => r.service === 'storage').map((r) => `${r.method} ${r.path}`).join('; ') || 'no GCS request'}`);
  assert.ok(stat.every((r) => r.minted?.email === email), `gcs_wait> ran as ${stat.map((r) => r.minted?.email).join(', ')}, not ${email}`);
  return `bq_extract> wrote gs://${EXPORT_BUCKET}/${object} (${rows.length} rows), gcs_wait> found it as ${email}`;
}

/** Digdag's Java clients (bq>, bq_ddl>, bq_extract>, gcs_wait>, the GCS log server) by user agent; the rest is the CLI's. */
export const isJava = (r: EdgeRequest) => /Google-API-Java-Client|google-api-java-client|gcloud-java|Java\//i.test(r.userAgent);

/** A table's rows in the emulator, sorted. */
export async function emulatorRows(gcp: GoogleApis, dataset: string, table: string): Promise<string[][]> {
  const res = await fetch(`${gcp.bigquery.url}/bigquery/v2/projects/${gcp.project}/datasets/${dataset}/tables/${table}/data`);
  assert.equal(res.status, 200, `${dataset}.${table} is not in the emulator`);
  const body = (await res.json()) as { rows?: { f: { v: string }[] }[] };
  return (body.rows ?? []).map((r) => r.f.map((c) => c.v)).sort((a, b) => a.join().localeCompare(b.join()));
}

/**
 * Every BigQuery/GCS request came from a pod through the bridge and carried a token minted for
 * `email` by `via` — from Digdag's Java clients and from the CLI in sh> alike (both must appear).
 */
export function assertOneIdentity(requests: EdgeRequest[], email: string, via: 'metadata' | 'key', bridgeIp: string): { java: number; cli: number } {
  const api = requests.filter((r) => r.service === 'bigquery' || r.service === 'storage');
  const java = api.filter(isJava);
  const cli = api.filter((r) => !isJava(r));
  assert.ok(java.length > 0, 'no BigQuery request from Digdag\'s bq>/bq_ddl>');
  assert.ok(cli.length > 0, `no BigQuery request from sh> bq (user agents: ${[...new Set(api.map((r) => r.userAgent))].join(' | ')})`);
  for (const r of requests) assert.equal(r.edgeIp, bridgeIp, `${r.method} ${r.path} (${r.userAgent}) came from this machine, not from a pod through the bridge`);
  for (const r of api) {
    assert.ok(r.minted, `${r.method} ${r.path} (${r.userAgent}) carried no token the test minted`);
    assert.equal(r.minted.email, email, `${r.method} ${r.path} (${r.userAgent}) ran as ${r.minted.email}`);
    assert.equal(r.minted.via, via, `${r.method} ${r.path} (${r.userAgent}) got its token from the ${r.minted.via}`);
  }
  return { java: java.length, cli: cli.length };
}

/** The failed tasks' error messages of an attempt (Digdag's task `error.message`). */
export async function taskErrors(endpoint: AuthEndpoint, id: string): Promise<string> {
  const { tasks } = await getJson<{ tasks: { fullName: string; state: string; error?: { message?: string } }[] }>(endpoint, `/api/attempts/${id}/tasks`);
  return tasks.filter((t) => t.error?.message).map((t) => `${t.fullName}: ${t.error!.message}`).join('\n');
}

/** Runs a workflow to its end; on an unexpected outcome the message has the tasks and the edge's view. */
export async function runWorkflow(endpoint: AuthEndpoint, gcp: GoogleApis, project: string, workflow: string, params: Record<string, string>): Promise<{ id: string; success: boolean; requests: EdgeRequest[]; explain: () => Promise<string> }> {
  const from = gcp.edge.requests.length;
  const id = await startAttempt(endpoint, await workflowId(endpoint, project, workflow), new Date(Math.floor(Date.now() / 1000) * 1000), params);
  const attempt = await waitAttempt(endpoint, id, 300_000);
  const requests = gcp.edge.requests.slice(from);
  const explain = async () => {
    const tasks = (await attemptTasks(endpoint, id)).map((x) => `${x.fullName}: ${x.state}`).join(', ');
    return `attempt ${id} (${tasks})\nerrors: ${await taskErrors(endpoint, id)}\nedge saw ${requests.map((r) => `${r.method} ${r.path} ${r.status}`).join('; ') || 'nothing'}`;
  };
  return { id, success: attempt.success, requests, explain };
}

/** Nothing of the key in `text`: its private key body and its id. */
export function assertKeyNotIn(keyFile: string, where: string, text: string): void {
  const key = JSON.parse(fs.readFileSync(keyFile, 'utf8')) as { private_key: string; private_key_id: string };
  const body = key.private_key.split('\n').filter((l) => l && !l.startsWith('-----'))[1]!;
  assert.ok(!text.includes(body) && !text.includes(key.private_key_id), `${where} contain(s) the key`);
}

/**
 * An identity Google refuses: digdag-ha's credential patch (docker/digdag-patches) exchanges it for
 * a token before bq> runs, so the attempt fails by itself — Digdag 0.10.5.1 as released retried it
 * forever inside bq> — and the task's error message (UI, `digdag attempt`, alerts) names the cause.
 * No kill: an attempt still running after 120 s is a failure of this proof.
 */
export async function proveRefused(o: { endpoint: AuthEndpoint; gcp: GoogleApis; project: string; logsSince: (isoTime: string) => Promise<string>; cause: RegExp }): Promise<{ seconds: number; cause: string; id: string }> {
  const t0 = Date.now();
  const since = new Date(t0 - 1000).toISOString();
  const id = await startAttempt(o.endpoint, await workflowId(o.endpoint, o.project, 'identity'), new Date(Math.floor(t0 / 1000) * 1000), { gcp_project: o.gcp.project });
  const ended = await waitFor(async () => (await getAttempt(o.endpoint, id)).done, 120_000, 1000);
  const attempt = await getAttempt(o.endpoint, id);
  if (!ended) {
    const logs = await o.logsSince(since);
    const res = await request(o.endpoint, 'POST', `/api/attempts/${id}/kill`);
    assert.fail(`${o.project}: the attempt was still running after 120 s (killed: HTTP ${res.status}) — the refusal did not fail the task:\n${logs.slice(-3000)}`);
  }
  assert.equal(attempt.success, false, `${o.project}: bq> succeeded`);
  const errors = await taskErrors(o.endpoint, id);
  const cause = errors.split('\n').find((l) => o.cause.test(l));
  assert.ok(cause, `${o.project}: the task error does not name the cause (${o.cause}): ${errors || 'no task error'}`);
  return { seconds: Number(((Date.now() - t0) / 1000).toFixed(1)), cause: `failed: ${cause.trim()}`, id };
}

/**
 * A wrong key: the project's gcp.credential replaced by a well-formed key the token endpoint does
 * not know (a revoked or mistyped key). The token endpoint refuses it (invalid_grant), bq> never
 * gets a token, the task fails naming the refusal, and nothing of the key is printed.
 */
export async function proveWrongKey(o: { endpoint: AuthEndpoint; gcp: GoogleApis; account: string; push: (dir: string, name: string) => Promise<unknown>; logsSince: (isoTime: string) => Promise<string> }): Promise<string> {
  const wrong = o.gcp.wrongKeyFile(o.account);
  await o.push(IDENTITY_FIXTURE, 'bq-wrong-key');
  const id = await projectId(o.endpoint, 'bq-wrong-key');
  const res = await request(o.endpoint, 'PUT', `/api/projects/${id}/secrets/${GCP_CREDENTIAL_SECRET}`, { value: fs.readFileSync(wrong, 'utf8') });
  assert.ok(res.ok, `setting the wrong key: HTTP ${res.status}`);
  const from = o.gcp.edge.requests.length;
  const r = await proveRefused({ endpoint: o.endpoint, gcp: o.gcp, project: 'bq-wrong-key', logsSince: o.logsSince, cause: /invalid_grant|Invalid JWT Signature/ });
  const requests = o.gcp.edge.requests.slice(from);
  assert.ok(requests.some((q) => q.service === 'token' && q.status === 400 && !q.minted), 'the wrong key was refused at the token endpoint');
  assert.ok(!requests.some((q) => q.service === 'bigquery' && q.minted), 'a BigQuery request carried a token');
  assertKeyNotIn(wrong, 'the pods\' logs', await o.logsSince(new Date(0).toISOString()));
  return `${r.seconds} s to a failed attempt naming the cause — ${r.cause.slice(0, 240)}`;
}

/** Helm values of a keyless release pointed at the offline Google Cloud; starts its metadata server on the bridge. */
export async function keylessReleaseValues(gcp: GoogleApis, o: { bridgeIp: string; account: string; bucket: string }): Promise<{ args: string[]; metadata: MetadataServer }> {
  const res = await fetch(`${gcp.storage.url}/storage/v1/b?project=${gcp.project}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: o.bucket }) });
  assert.ok(res.ok, `bucket ${o.bucket}: HTTP ${res.status}`);
  const metadata = await gcp.startMetadata(o.account, o.bridgeIp);
  const set = (k: string, v: string) => ['--set', `${k}=${v}`];
  return {
    metadata,
    args: [...set('googleApis.address', o.bridgeIp), '--set-file', `googleApis.caBundle=${gcp.pki.caPem}`, ...set('googleApis.metadataServer', metadata.hostPort),
      ...set('gcp.project', gcp.project), ...set('logs.server', 'gcs'), ...set('logs.gcsBucket', o.bucket), ...set('logs.gcsPath', 'digdag-logs')],
  };
}

export interface ReleaseCtx {
  config: Config;
  runner: Runner;
  /** kubectl argv for this cluster (no namespace). */
  kubectl: (...args: string[]) => string[];
  ns: string;
  gcp: GoogleApis;
  metadata: MetadataServer;
  account: string;
  bucket: string;
  bridgeIp: string;
  log: (l: string) => void;
}

/**
 * The keyless release: the BigQuery sample whole (its export to GCS too) in its worker pods with ADC from the metadata
 * server (every request with a token minted for the account by it), its task logs objects in the
 * bucket read through a ui pod (API and `digdag log`); before that, no identity → no success, the cause named.
 */
export async function proveKeylessRelease(o: ReleaseCtx): Promise<string[]> {
  const out: string[] = [];
  const k = (...args: string[]): Promise<Result> => o.runner.run({ argv: o.kubectl('-n', o.ns, ...args), quiet: true, nothrow: true, timeoutMs: 120_000 });
  const data = async (key: string) => Buffer.from((await k('get', 'secret', 'digdag-api-credentials', '-o', `jsonpath={.data.${key}}`)).stdout.trim(), 'base64').toString('utf8');
  assert.notEqual((await k('get', 'secret', 'digdag-gcp-key')).code, 0, 'the release has no key Secret');
  const env = (await k('get', 'deployments', '-o', 'jsonpath={.items[*].spec.template.spec.containers[*].env}')).stdout;
  assert.doesNotMatch(env, /GOOGLE_APPLICATION_CREDENTIALS/);
  const ui = (await k('get', 'pods', '-l', 'digdag-ha/api=true', '-o', 'jsonpath={.items[0].metadata.name}')).stdout.trim();
  const port = await freePortRange(1, 61300);
  const pid = await o.runner.spawnBackground({ argv: o.kubectl('-n', o.ns, 'port-forward', '--address', '127.0.0.1', `pod/${ui}`, `${port}:65432`), logFile: path.join(tempDir('pf-release-'), 'pf.log') });
  try {
    const url = `http://127.0.0.1:${port}`;
    assert.ok(await waitFor(async () => !!(await answersVersion(url)), 30_000, 500), `port-forward to ${ui}`);
    const creds = { user: await data('username'), password: await data('password') };
    const endpoint: AuthEndpoint = { url, authorization: `Basic ${Buffer.from(`${creds.user}:${creds.password}`).toString('base64')}` };
    const clientFile = path.join(tempDir('release-client-'), 'client.properties');
    fs.writeFileSync(clientFile, clientConfig(url, creds), { mode: 0o600 });
    const java = await detectJava(o.config, o.runner);
    const cli = (args: string[]) => o.runner.run({ argv: digdagArgv(java, requireRuntime(o.config), CLIENT_JVM_OPTS, [...args, '-c', clientFile]), quiet: true, nothrow: true, timeoutMs: 300_000 });
    const push = async (dir: string, name: string) => {
      const r = await cli(['push', name, '--project', dir, '-r', revisionOf(dir)]);
      assert.equal(r.code, 0, `digdag push ${name}: ${r.stderr}`);
    };

    // No identity first: the metadata server serves no account (a pod without Workload Identity).
    // First, because Digdag's Google client keeps a credential it once got for the JVM's life.
    let t0 = Date.now();
    // The sample's push needs no Google identity: it goes on while the no-identity case runs.
    const samplePushed = push(SAMPLE_DIR, 'bigquery-sample');
    samplePushed.catch(() => undefined);
    o.metadata.serveIdentity(false);
    try {
      await push(IDENTITY_FIXTURE, 'bq-identity');
      const from = o.gcp.edge.requests.length;
      const logsSince = async (since: string) => (await k('logs', '-l', 'app.kubernetes.io/component=worker', `--since-time=${since}`, '--tail=-1')).stdout;
      const r = await proveRefused({ endpoint, gcp: o.gcp, project: 'bq-identity', logsSince, cause: /computeMetadata|Compute Engine metadata|404 Not Found/ });
      assert.ok(o.metadata.requests.some((q) => q.includes('/token')), 'the token was asked of the metadata server');
      assert.ok(!o.gcp.edge.requests.slice(from).some((q) => q.service === 'bigquery' && q.minted), 'a BigQuery request carried a token without an identity');
      out.push(`no identity: ${r.seconds} s to a failed attempt naming the cause — ${r.cause.slice(0, 240)}`);
    } finally {
      o.metadata.serveIdentity(true);
    }

    // The sample, whole: bq_ddl>, bq>, and sh> bq (check.sh) as the metadata server's account.
    t0 = Date.now();
    await samplePushed;
    const tokensBefore = o.metadata.requests.filter((r) => r.includes('/token')).length;
    const run = await runWorkflow(endpoint, o.gcp, 'bigquery-sample', 'bigquery', { gcp_project: o.gcp.project, dataset: 'sample_adc_cluster', export_bucket: EXPORT_BUCKET });
    if (!run.success) {
      const logs = await k('logs', '-l', 'app.kubernetes.io/component=worker', '--tail=80', '--prefix');
      assert.fail(`${await run.explain()}\n${logs.stdout.slice(-4000)}`);
    }
    assert.deepEqual(await emulatorRows(o.gcp, 'sample_adc_cluster', 'orders'), SAMPLE_ROWS.orders);
    assert.deepEqual(await emulatorRows(o.gcp, 'sample_adc_cluster', 'orders_by_region'), SAMPLE_ROWS.orders_by_region);
    const n = assertOneIdentity(run.requests, o.account, 'metadata', o.bridgeIp);
    assert.ok(!run.requests.some((r) => r.service === 'token'), 'no key was exchanged for a token: the identity is the metadata server\'s');
    assert.ok(o.metadata.requests.filter((r) => r.includes('/token')).length > tokensBefore, 'the pods asked the metadata server for tokens');
    const exported = await assertExported(o.gcp, 'sample_adc_cluster', run.requests, o.account);
    out.push(`ADC sample in the release's worker pods: ${n.java} requests from bq>/bq_extract>/gcs_wait>/GCS logs, ${n.cli} from sh> bq, all as ${o.account} via the metadata server, ${((Date.now() - t0) / 1000).toFixed(1)} s; ${exported}`);

    // GCS task logs: objects in the bucket (uploaded by the workers), read through the ui pod.
    const uploads = run.requests.filter((r) => r.service === 'storage' && r.path.startsWith('/upload/storage/v1/'));
    assert.ok(uploads.length > 0, 'no task log was uploaded through the edge');
    const listed = (await (await fetch(`${o.gcp.storage.url}/storage/v1/b/${o.bucket}/o?prefix=digdag-logs/`)).json()) as { items?: { name: string }[] };
    const objects = (listed.items ?? []).map((i) => i.name);
    assert.ok(objects.length >= 4, `task logs in gs://${o.bucket}: ${JSON.stringify(objects)}`);
    const files = await logFiles(endpoint, run.id);
    assert.ok(files.length > 0 && files.every((f) => !f.agentId.includes(ui)), `the tasks ran elsewhere than ${ui}, which serves the API: ${files.map((f) => f.agentId).join(', ')}`);
    const check = files.find((f) => f.taskName.endsWith('+check'));
    assert.ok(check, `a log file of +check: ${files.map((f) => f.taskName).join(', ')}`);
    const res = await fetch(`${url}/api/logs/${run.id}/files/${encodeURIComponent(check.fileName)}`, { headers: authHeaders(endpoint) });
    const body = Buffer.from(await res.arrayBuffer());
    assert.match((body[0] === 0x1f && body[1] === 0x8b ? zlib.gunzipSync(body) : body).toString('utf8'), /check passed/, 'the API serves +check\'s log from the bucket');
    const shown = await cli(['log', run.id]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /check passed/, '`digdag log` through the ui pod shows the worker\'s log');
    out.push(`GCS task logs: ${objects.length} objects in gs://${o.bucket}, ${uploads.length} uploads as ${o.account}; API and digdag log through ${ui} show them`);
  } finally {
    process.kill(pid, 'SIGTERM');
  }
  return out;
}
