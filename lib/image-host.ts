// Where the Kubernetes target's images go after `docker build`: an interface the Kubernetes target
// (lib/kube/build-image.ts) builds through, so it needs no other target. minikube (`image load`)
// and gke (a push to the registry) are implemented in lib/kube/build-image.ts; the own cluster's
// (its dockerd, the debootstrapped base, `ctr images import` into its containerd) in
// lib/cluster/image-host.ts, handed to the Kubernetes target by the tasks layer (tasks/steps.ts).
import type { Config } from './config.ts';
import type { Runner } from './runner.ts';

export interface ImageHost {
  /** `docker <args>` argv against the engine this target builds with. */
  docker(...args: string[]): string[];
  /** `docker build` needs the host's network (a dockerd without a bridge: apt in RUN). */
  readonly buildOnHostNetwork: boolean;
  /** Why no engine answers `docker info`, and the fix. */
  readonly noEngineHint: string;
  /** Besides the engine holding it: whether the image is where the kubelet takes it from
   * (undefined: the engine holding it is enough, or the registry is not checked). */
  loaded?(runner: Runner, image: string): Promise<boolean>;
  /** What healthy adds after "built" when loaded() is checked, e.g. " and in the cluster's containerd". */
  readonly loadedNote?: string;
  /** Before building: what the build needs on this host (the own cluster's base image); a line to log. */
  prepare?(runner: Runner, config: Config): Promise<string | undefined>;
  /** Brings a built image to the cluster (load it, import it, or push it). */
  load(runner: Runner, image: string): Promise<void>;
  /** A store of built images that outlives the engine (the own cluster's dockerd lives and dies
   * with the cluster): a build whose key it holds is loaded, not run again. */
  readonly imageCache?: ImageCache;
}

export interface ImageCache {
  /** Loads the image built under this key into the engine; false when the store has none. */
  restore(runner: Runner, image: string, key: string): Promise<boolean>;
  /** Keeps the image just built under this key (and drops the image's older builds). */
  keep(runner: Runner, image: string, key: string): Promise<void>;
}

/** The image host of a config's target. */
export type ImageHostFor = (config: Config) => ImageHost;
