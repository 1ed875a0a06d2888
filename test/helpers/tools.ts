// Locates helm: HELM_BIN, else PATH, else $(go env GOPATH)/bin — never a silent skip.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export function helmBin(): string {
  const candidates = [process.env.HELM_BIN, 'helm'];
  const gopath = spawnSync('go', ['env', 'GOPATH'], { encoding: 'utf8' }).stdout?.trim();
  if (gopath) candidates.push(path.join(gopath, 'bin', 'helm'));
  for (const c of candidates) {
    if (!c) continue;
    if (c.includes('/') && !fs.existsSync(c)) continue;
    if (spawnSync(c, ['version', '--short'], { encoding: 'utf8' }).status === 0) return c;
  }
  throw new Error('helm not found: run `bash .ci/install` (builds helm from the Go module proxy) or set HELM_BIN');
}
