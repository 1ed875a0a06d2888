// Test fixtures: a config rooted in a throw-away state dir, and a context around a runner.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../../lib/paths.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import type { Ctx } from '../../lib/pipeline.ts';
import type { Runner } from '../../lib/runner.ts';

const made: string[] = [];
// Temporary state dirs go when the test process ends (teardown stopped their processes).
process.once('exit', () => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

export function tempDir(prefix = 'digdag-ha-test-'): string {
  // Under /tmp (world-traversable) so a PostgreSQL run as the postgres user can reach it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o711);
  made.push(dir);
  return dir;
}

export function testConfig(vars: Record<string, string> = {}, opts: { detectKube?: () => boolean } = {}): Config {
  const state = vars.DIGDAG_HA_STATE_DIR ?? tempDir();
  return loadConfig({
    root: ROOT,
    // Only where this machine keeps the test cluster's built binaries; nothing else of the user's.
    env: { HOME: process.env.HOME, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME, DIGDAG_HA_CACHE_DIR: process.env.DIGDAG_HA_CACHE_DIR },
    envFile: path.join(state, 'no-such.env'),
    overrides: { DIGDAG_HA_TARGET: 'local', ...vars, DIGDAG_HA_STATE_DIR: state },
    detectKube: opts.detectKube ?? (() => false),
  });
}

export function testCtx(config: Config, runner: Runner, force = false): Ctx {
  return { config, runner, force, started: [], facts: {} };
}
