// The dry-run rule, decided in one place: lib/runner.ts. Everywhere else a change goes through
// run({ mutates }), spawnBackground or change, and what depends on a change asks the runner's
// helpers; so a new `if (runner.dryRun)` in lib/ or tasks/ fails here rather than in a review.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';
import { changesApplied, outcome, RecordingRunner, skippedInDryRun } from '../../lib/runner.ts';

/** Files that may read `dryRun`, and why. */
const ALLOWED: Record<string, string> = {
  'lib/runner.ts': 'the one place dry-run is decided',
  // --dry-run is a flag: these build the runner from it (or refuse it), they never test a runner.
  'lib/cli.ts': 'flags.dryRun: constructs the runner',
  'tasks/e2e.ts': 'flags.dryRun: constructs the runner',
  'tasks/down.ts': 'flags.dryRun: constructs the runner',
  'tasks/cluster.ts': 'flags.dryRun: constructs the runner; up/down refuse --dry-run',
  'tasks/gcp.ts': 'flags.dryRun: constructs the runner (plan is up with a dry-run runner)',
};

/** Files that only construct the runner: `flags.dryRun` is fine there, `runner.dryRun` is not. */
const FLAGS_ONLY = new Set(['lib/cli.ts', 'tasks/e2e.ts', 'tasks/down.ts', 'tasks/cluster.ts', 'tasks/gcp.ts']);

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) return sources(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

/** Lines (1-based, with text) that read `dryRun`: any use except an object key or a type field (`dryRun:`). */
export function dryRunReads(text: string): { line: number; text: string }[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' '));
  return code.split('\n').flatMap((l, i) => {
    const line = l.replace(/(^|[^:'"`])\/\/.*$/, '$1');
    return /\bdryRun\b(?!\s*:|\?:)/.test(line) ? [{ line: i + 1, text: line.trim() }] : [];
  });
}

test('the scanner sees reads and ignores keys, types, comments and longer names', () => {
  assert.deepEqual(dryRunReads('if (ctx.runner.dryRun) return;').map((r) => r.line), [1]);
  assert.deepEqual(dryRunReads('const { dryRun } = runner;').map((r) => r.line), [1]);
  assert.deepEqual(dryRunReads("x = flags.dryRun ? ' — dry run' : '';").map((r) => r.line), [1]);
  assert.equal(dryRunReads("x = { dryRun: false };\n  dryRun: boolean;\n  dryRun?: boolean;\n// runner.dryRun\n/* runner.dryRun */\nuseDryRunSecrets(c); dryRunSecrets.get(k);").length, 0);
});

test('nothing outside the allow-list reads dryRun', () => {
  const offenders = [...sources('lib'), ...sources('tasks')]
    .filter((f) => !(f in ALLOWED))
    .flatMap((f) => dryRunReads(fs.readFileSync(path.join(ROOT, f), 'utf8')).map((r) => `${f}:${r.line}: ${r.text}`));
  assert.deepEqual(offenders, [], 'go through runner.run({ mutates }), runner.change, or changesApplied/skippedInDryRun/outcome in lib/runner.ts');
});

test('files that build the runner from --dry-run read the flag, never a runner', () => {
  for (const f of FLAGS_ONLY) {
    const reads = dryRunReads(fs.readFileSync(path.join(ROOT, f), 'utf8'));
    assert.ok(reads.length > 0, `${f} no longer reads dryRun: drop it from the allow-list`);
    for (const r of reads) assert.match(r.text, /\bflags\.dryRun\b/, `${f}:${r.line}`);
    for (const r of reads) assert.doesNotMatch(r.text, /runner\.dryRun/, `${f}:${r.line}`);
  }
});

test('every allow-listed file exists and still needs its entry', () => {
  for (const f of Object.keys(ALLOWED)) {
    const text = fs.readFileSync(path.join(ROOT, f), 'utf8');
    assert.ok(dryRunReads(text).length > 0, `${f} no longer reads dryRun: drop it from the allow-list`);
  }
});

test('the helpers: changes applied, a skipped wait printed, the wording of a result', () => {
  const real = new RecordingRunner();
  const dry = new RecordingRunner(undefined, true);
  assert.equal(changesApplied(real), true);
  assert.equal(changesApplied(dry), false);
  assert.equal(skippedInDryRun(real, 'kubectl rollout status deployment/x'), false);
  assert.deepEqual(real.lines, []);
  assert.equal(skippedInDryRun(dry, 'kubectl rollout status deployment/x'), true);
  assert.deepEqual(dry.lines, ['[dry-run] kubectl rollout status deployment/x']);
  assert.equal(outcome(real, 'pushed', 'would push'), 'pushed');
  assert.equal(outcome(dry, 'pushed', 'would push'), 'would push');
});
