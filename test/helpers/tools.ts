// Test tools that come from outside npm: helm and the Kubernetes OpenAPI spec — never a silent skip.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeObject } from '../../lib/kube/render.ts';
import { strictValidator, validateObjects } from '../../lib/schema.ts';
import { K8S_SCHEMA_VERSION } from '../../lib/versions.ts';

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

/** swagger.json of the pinned Kubernetes release, from the Go module cache (.ci/install fetches it). */
export function kubernetesSwagger(): string {
  const modcache = spawnSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).stdout?.trim();
  const file = modcache && path.join(modcache, `k8s.io/kubernetes@${K8S_SCHEMA_VERSION}`, 'api', 'openapi-spec', 'swagger.json');
  if (!file || !fs.existsSync(file)) {
    throw new Error(`the Kubernetes ${K8S_SCHEMA_VERSION} OpenAPI spec is not in the Go module cache: run \`bash .ci/install\` (go mod download k8s.io/kubernetes@${K8S_SCHEMA_VERSION})`);
  }
  return file;
}

let strict: ((o: KubeObject) => string[]) | undefined;

/** Both validators: kubernetes-models (incl. KEDA CRDs) and, for built-in kinds, the strict spec. */
export async function validateStrictly(objects: readonly KubeObject[]): Promise<string[]> {
  strict ??= await strictValidator(kubernetesSwagger());
  const errors = (await validateObjects(objects)).map((e) => `${e.object}: ${e.message}`);
  for (const o of objects) if (!o.apiVersion.startsWith('keda.sh/')) errors.push(...strict(o));
  return errors;
}
