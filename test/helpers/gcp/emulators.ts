// The Google API emulators as test fixtures: goccy's BigQuery emulator and fsouza's
// fake-gcs-server, built once by .ci/install-gcp-emulators into the cache; each started on a free
// loopback port for one test suite (the BigQuery emulator's memory grows per query: keep runs short).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePortRange } from '../../../lib/ports.ts';
import { BIGQUERY_EMULATOR_VERSION, FAKE_GCS_SERVER_VERSION } from '../../../lib/versions.ts';

const cacheRoot = () => path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'digdag-ha');
export const bigqueryEmulatorBin = () => path.join(cacheRoot(), `bigquery-emulator-${BIGQUERY_EMULATOR_VERSION}`, 'bigquery-emulator');
export const fakeGcsBin = () => path.join(cacheRoot(), `fake-gcs-server-${FAKE_GCS_SERVER_VERSION}`, 'fake-gcs-server');

/** Why the emulators cannot run here (then the tests report SKIPPED), or undefined. */
export function emulatorsMissing(): string | undefined {
  const missing = [bigqueryEmulatorBin(), fakeGcsBin()].filter((b) => !fs.existsSync(b));
  return missing.length ? `GCP emulators not built (${missing.join(', ')}): run bash .ci/install-gcp-emulators` : undefined;
}

export interface Emulator {
  url: string;
  logFile: string;
  /** Resident memory in MB (from /proc), to watch the BigQuery emulator's growth. */
  rssMb(): number;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => { for (const c of running) c.kill('SIGKILL'); });

async function waitReady(url: string, child: ChildProcess, logFile: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 50; Date.now() < deadline; delay = Math.min(delay * 2, 500)) {
    if (child.exitCode !== null) throw new Error(`emulator exited (${child.exitCode}): ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    const ok = await fetch(url, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, delay));
  }
  throw new Error(`emulator did not answer ${url} within ${timeoutMs / 1000}s: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
}

function start(bin: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', fd, fd], env });
  fs.closeSync(fd);
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

function handle(child: ChildProcess, url: string, logFile: string): Emulator {
  return {
    url,
    logFile,
    rssMb: () => {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        return m ? Math.round(Number(m[1]) / 1024) : 0;
      } catch {
        return 0;
      }
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** The BigQuery emulator with one project (in memory); its extract jobs (bq_extract>) write to the
 * fake GCS at storageUrl (its Go storage client's STORAGE_EMULATOR_HOST). */
export async function startBigqueryEmulator(project: string, logDir: string, storageUrl?: string): Promise<Emulator> {
  const port = await freePortRange(2, 62100);
  const logFile = path.join(logDir, 'bigquery-emulator.log');
  const env = storageUrl ? { ...process.env, STORAGE_EMULATOR_HOST: new URL(storageUrl).host } : process.env;
  const child = start(bigqueryEmulatorBin(), [`--project=${project}`, '--host=127.0.0.1', `--port=${port}`, `--grpc-port=${port + 1}`, '--log-level=info'], logFile, env);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/bigquery/v2/projects/${project}/datasets`, child, logFile);
  return handle(child, url, logFile);
}

/** fake-gcs-server over plain HTTP in memory (the edge terminates TLS), with the given buckets. */
export async function startFakeGcs(logDir: string, buckets: string[] = []): Promise<Emulator> {
  const port = await freePortRange(1, 62200);
  const logFile = path.join(logDir, 'fake-gcs-server.log');
  const child = start(fakeGcsBin(), ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory',
    '-public-host', 'storage.googleapis.com', '-external-url', 'https://www.googleapis.com', '-log-level', 'info'], logFile);
  const url = `http://127.0.0.1:${port}`;
  await waitReady(`${url}/storage/v1/b`, child, logFile);
  for (const name of buckets) {
    const res = await fetch(`${url}/storage/v1/b?project=test`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
    if (!res.ok) throw new Error(`fake-gcs-server did not create bucket ${name}: HTTP ${res.status} ${await res.text()}`);
  }
  return handle(child, url, logFile);
}
