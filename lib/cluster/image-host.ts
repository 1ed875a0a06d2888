// The own cluster's image host (lib/image-host.ts): builds through its own dockerd (unix socket in
// its state dir, no bridge: the host's network), on the debootstrapped base, and imports the
// images into its containerd with ctr, since it has no registry.
import type { Config } from '../config.ts';
import type { ImageHost } from '../image-host.ts';
import { loadClusterConfig } from './config.ts';
import { clusterImageCache, containerdHasImage, docker, ensureBaseImage, loadImage } from './images.ts';

export function clusterImageHost(config: Config): ImageHost {
  const cc = loadClusterConfig(config);
  return {
    docker: (...args) => docker(cc, ...args),
    buildOnHostNetwork: true,
    noEngineHint: 'bring the test cluster up first: npx tsx tasks/cluster.ts up (it starts its own dockerd)',
    loaded: (runner, image) => containerdHasImage(runner, cc, image),
    loadedNote: ' and in the cluster\'s containerd',
    prepare: async (runner, c) => (c.k8s.baseImage === cc.baseImage ? await ensureBaseImage(runner, cc) : undefined),
    load: async (runner, image) => {
      await runner.change(`import ${image} into the cluster's containerd`, () => loadImage(runner, cc, image));
    },
    imageCache: clusterImageCache(cc),
  };
}
