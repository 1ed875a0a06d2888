// The state directory: stamps that make tasks make-like, and 0600 files for generated secrets.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';

export function ensureDir(dir: string, mode = 0o700): string {
  fs.mkdirSync(dir, { recursive: true, mode });
  return dir;
}

/** Hash of values and file contents: a task's inputs. A missing file hashes as missing. */
export function hashInputs(values: unknown, files: readonly string[] = []): string {
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify(values));
  for (const f of [...files].sort()) {
    h.update(`\0${f}\0`);
    h.update(fs.existsSync(f) ? fs.readFileSync(f) : '<missing>');
  }
  return h.digest('hex');
}

/** All files below a directory (or the file itself), for hashing a directory as an input. */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  if (fs.statSync(dir).isFile()) return [dir];
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out.sort();
}

const stampFile = (config: Config, task: string) => path.join(config.stateDir, 'stamps', `${task}.json`);

export function readStamp(config: Config, task: string): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(stampFile(config, task), 'utf8')) as { hash: string }).hash;
  } catch {
    return undefined;
  }
}

export function writeStamp(config: Config, task: string, hash: string): void {
  ensureDir(path.dirname(stampFile(config, task)));
  fs.writeFileSync(stampFile(config, task), JSON.stringify({ hash, at: new Date().toISOString() }) + '\n');
}

/** Writes a file only the owner can read, atomically (no window where it is world-readable). */
export function writePrivateFile(file: string, content: string): void {
  ensureDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, content, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}
