// The own cluster's images into containerd: an image the image cache restored or kept is imported
// from the cache file itself (no `docker save` of the same bytes first), but only while dockerd
// still holds that very image; anything else goes through `docker save`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadClusterConfig } from '../../lib/cluster/config.ts';
import { clusterImageCache, loadImage } from '../../lib/cluster/images.ts';
import type { Cmd, Result, Runner } from '../../lib/runner.ts';
import { tempDir, testConfig } from '../helpers/fixtures.ts';

/** A runner that answers like dockerd and ctr would: `image inspect` gives the current ID. */
function fakeDocker(): { runner: Runner; calls: string[]; setId: (id: string) => void } {
  let id = 'sha256:aaa';
  const calls: string[] = [];
  const runner: Runner = {
    dryRun: false,
    run: async (cmd: Cmd): Promise<Result> => {
      const a = cmd.argv;
      const verb = a.includes('inspect') ? 'inspect' : a.includes('load') ? 'load' : a.includes('save') ? 'save' : a.includes('import') ? 'import' : a.join(' ');
      // save names the file it writes (-o), load and import the file they read.
      const file = verb === 'save' ? a[a.indexOf('-o') + 1]! : a[a.length - 1]!;
      if (verb !== 'inspect') calls.push(`${verb} ${path.basename(file)}`);
      if (verb === 'save') fs.writeFileSync(file, 'image');
      return { code: 0, stdout: verb === 'inspect' ? `${id}\n` : '', stderr: '' };
    },
    spawnBackground: async () => 0,
    change: async (_what, effect) => effect(),
    log: () => {},
  };
  return { runner, calls, setId: (v) => (id = v) };
}

test('a restored or kept image is imported from its cache file; a rebuilt one through docker save', async () => {
  const state = tempDir('dh-images-');
  const cc = loadClusterConfig(testConfig({ DIGDAG_HA_STATE_DIR: state, DIGDAG_HA_CLUSTER_DIR: path.join(state, 'c'), DIGDAG_HA_CACHE_DIR: path.join(state, 'cache') }));
  const cache = clusterImageCache(cc);
  const { runner, calls, setId } = fakeDocker();

  // Nothing in the cache: restore says so; the image goes through docker save.
  assert.equal(await cache.restore(runner, 'img:1', 'k1'.repeat(12)), false);
  await loadImage(runner, cc, 'img:1');
  assert.deepEqual(calls.splice(0), [`save image-${process.pid}-img_1.tar`, `import image-${process.pid}-img_1.tar`]);

  // Kept after a build: the next load imports the kept file.
  await cache.keep(runner, 'img:1', 'k1'.repeat(12));
  calls.splice(0);
  await loadImage(runner, cc, 'img:1');
  const kept = fs.readdirSync(path.join(cc.cacheDir, 'images')).filter((f) => f.endsWith('.tar'));
  assert.equal(kept.length, 1);
  assert.deepEqual(calls.splice(0), [`import ${kept[0]}`]);

  // Restored into a new dockerd: imported from the same file.
  assert.equal(await cache.restore(runner, 'img:1', 'k1'.repeat(12)), true);
  calls.splice(0);
  await loadImage(runner, cc, 'img:1');
  assert.deepEqual(calls.splice(0), [`import ${kept[0]}`]);

  // dockerd now holds another build under that name (its ID changed): never the stale file.
  setId('sha256:bbb');
  await loadImage(runner, cc, 'img:1');
  assert.deepEqual(calls.splice(0), [`save image-${process.pid}-img_1.tar`, `import image-${process.pid}-img_1.tar`]);

  // The file gone (another checkout replaced the image's build): docker save again.
  setId('sha256:aaa');
  fs.rmSync(path.join(cc.cacheDir, 'images', kept[0]!));
  await loadImage(runner, cc, 'img:1');
  assert.deepEqual(calls.splice(0), [`save image-${process.pid}-img_1.tar`, `import image-${process.pid}-img_1.tar`]);
});
