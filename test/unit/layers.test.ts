// Layers point down: core (lib/*.ts, lib/config/) under the targets (lib/local, lib/kube,
// lib/cluster) under the tasks. Checked by reading every import in lib/, so a new upward or
// sideways import fails here rather than in a review.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../lib/paths.ts';

const TARGETS = ['local', 'kube', 'cluster'] as const;

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) return sources(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

/** Repository paths of the modules `file` imports (static, re-exports and dynamic), relative ones only. */
export function importsOf(file: string, text = fs.readFileSync(path.join(ROOT, file), 'utf8')): string[] {
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?\bfrom\s+['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s+['"]([^'"]+)['"]/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
  return specs.filter((s) => s.startsWith('.')).map((s) => path.posix.normalize(path.posix.join(path.posix.dirname(file), s)));
}

type Layer = 'core' | 'cli' | (typeof TARGETS)[number] | 'tasks' | 'other';

function layerOf(file: string): Layer {
  if (file === 'lib/cli.ts') return 'cli';
  const [top, sub] = file.split('/');
  if (top === 'tasks') return 'tasks';
  if (top !== 'lib') return 'other';
  return (TARGETS as readonly string[]).includes(sub!) ? (sub as Layer) : 'core';
}

/** Why `from` may not import `to`, or undefined when it may. */
export function violation(from: string, to: string): string | undefined {
  const [a, b] = [layerOf(from), layerOf(to)];
  if (a === 'other' || a === 'tasks') return undefined;
  if (b === 'tasks') return 'lib/ never imports tasks/';
  if (b === 'cli' && a !== 'cli') return 'lib/cli.ts is the command-line entry above the libraries (ROOT is in lib/paths.ts)';
  if (a === 'core' && b !== 'core' && b !== 'other') return `core never imports a target (lib/${b})`;
  if (a !== 'core' && a !== 'cli' && b !== 'core' && b !== 'other' && a !== b) return `a target never imports another target (lib/${a} -> lib/${b})`;
  return undefined;
}

test('import scanning finds static, type-only, re-exported and dynamic imports', () => {
  const text = "import fs from 'node:fs';\nimport type { X } from './a.ts';\nexport { y } from '../b.ts';\nconst m = await import('./kube/c.ts');\nimport {\n  z,\n} from './local/d.ts';\n";
  assert.deepEqual(importsOf('lib/x/f.ts', text), ['lib/x/a.ts', 'lib/b.ts', 'lib/x/kube/c.ts', 'lib/x/local/d.ts']);
  assert.match(violation('lib/roles.ts', 'lib/kube/render.ts') ?? '', /core never imports a target/);
  assert.match(violation('lib/local/apply.ts', 'lib/kube/kubectl.ts') ?? '', /target never imports another/);
  assert.match(violation('lib/kube/x.ts', 'tasks/all.ts') ?? '', /never imports tasks/);
  assert.match(violation('lib/verify.ts', 'lib/cli.ts') ?? '', /command-line entry/);
  assert.equal(violation('lib/kube/apply.ts', 'lib/config/roles.ts'), undefined);
  assert.equal(violation('tasks/all.ts', 'lib/local/index.ts'), undefined);
});

test('layers point down: core under targets under tasks; no target imports another; lib never imports tasks', () => {
  const found: string[] = [];
  for (const file of sources('lib')) {
    for (const to of importsOf(file)) {
      const why = violation(file, to);
      if (why) found.push(`${file} -> ${to}: ${why}`);
    }
  }
  assert.deepEqual(found, [], `new imports against the layering:\n${found.join('\n')}`);
});
