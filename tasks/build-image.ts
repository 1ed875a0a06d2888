// build-image: local: fetch the pinned Digdag runtime into the cache and check it starts (lib/local/build-image.ts).
// Kubernetes: build the container image and load or push it (lib/kube/build-image.ts).
import { isMain, main } from '../lib/cli.ts';
import { stepOf } from './steps.ts';

export const buildImage = stepOf('build-image');

if (isMain(import.meta.url)) await main([buildImage], 'tasks/build-image.ts');
