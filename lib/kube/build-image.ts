// build-image on Kubernetes: fetch the JMX exporter agent (checksum pinned) into the runtime cache,
// build the container image with it (named build contexts: no copy into docker/), then load it
// into the cluster (minikube) or push it to the registry (gke).
import path from 'node:path';
import { ROOT } from '../cli.ts';
import { tail, UserError } from '../errors.ts';
import type { Impl } from '../pipeline.ts';
import { cacheDir } from '../digdag.ts';
import { MONITORING_DIR, obtainJmxExporter } from '../metrics.ts';
import { listFiles } from '../state.ts';
import { DIGDAG_RELEASE_JAR_SHA256, DIGDAG_VERSION, JMX_EXPORTER_SHA256, JMX_EXPORTER_VERSION } from '../versions.ts';

export const buildImage: Impl = {
  inputs: (ctx) => ({
    values: { jmx: JMX_EXPORTER_SHA256, image: ctx.config.k8s.image, gcloud: ctx.config.k8s.installGcloud, tz: ctx.config.k8s.tz, lang: ctx.config.k8s.lang, target: ctx.config.target },
    files: [...listFiles(path.join(ROOT, 'docker')), path.join(MONITORING_DIR, 'jmx-exporter.yaml')],
  }),
  healthy: async (ctx) => {
    const res = await ctx.runner.run({ argv: ['docker', 'image', 'inspect', '--format', '{{.Id}}', ctx.config.k8s.image], nothrow: true, quiet: true });
    return res.code === 0 ? `image ${ctx.config.k8s.image} built` : false;
  },
  run: async (ctx) => {
    const info = await ctx.runner.run({ argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], nothrow: true });
    if (info.code !== 0) throw new UserError('no Docker engine answers', 'start Docker (or use --target local, which needs none)', tail(info.stderr, 3));
    const c = ctx.config.k8s;
    const agent = await obtainJmxExporter(cacheDir(ctx.config), ctx.config.digdag.mavenRepoUrl, ctx.runner);
    await ctx.runner.run({
      argv: ['docker', 'build', '-f', path.join(ROOT, 'docker', 'Dockerfile'), '-t', c.image,
        '--build-arg', `DIGDAG_VERSION=${DIGDAG_VERSION}`, '--build-arg', `DIGDAG_SHA256=${DIGDAG_RELEASE_JAR_SHA256}`,
        '--build-arg', `INSTALL_GCLOUD=${c.installGcloud}`, '--build-arg', `TZ=${c.tz}`, '--build-arg', `LANG=${c.lang}`,
        '--build-arg', `JMX_EXPORTER_VERSION=${JMX_EXPORTER_VERSION}`, '--build-arg', `JMX_EXPORTER_SHA256=${JMX_EXPORTER_SHA256}`,
        '--build-context', `jmx-exporter=${path.dirname(agent)}`, '--build-context', `monitoring=${MONITORING_DIR}`,
        path.join(ROOT, 'docker')],
      mutates: true,
    });
    if (ctx.config.target === 'minikube') await ctx.runner.run({ argv: ['minikube', '-p', c.minikubeProfile, 'image', 'load', c.image], mutates: true });
    else await ctx.runner.run({ argv: ['docker', 'push', c.image], mutates: true });
  },
};
