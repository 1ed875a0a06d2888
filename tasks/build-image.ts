// build-image: local: fetch the pinned Digdag runtime into the cache and check it starts (lib/local/build-image.ts).
// Kubernetes: build the container image and load or push it (lib/kube/build-image.ts).
import { isMain, main } from '../lib/cli.ts';
import { kubeImpls } from '../lib/kube/index.ts';
import { localImpls } from '../lib/local/index.ts';
import { byTarget } from '../lib/pipeline.ts';
import { DIGDAG_VERSION } from '../lib/versions.ts';

export const buildImage = byTarget('build-image', `Get Digdag ${DIGDAG_VERSION}`, { local: localImpls['build-image'], kube: kubeImpls['build-image'] });

if (isMain(import.meta.url)) await main([buildImage], 'tasks/build-image.ts');
