// Test tools that come from outside npm: helm and the Kubernetes OpenAPI spec — never a silent skip.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeObject } from '../../lib/kube/render.ts';
import { crdValidator } from '../../lib/crd-schema.ts';
import { strictValidator, validateObjects } from '../../lib/schema.ts';
import { K8S_SCHEMA_VERSION, PROMETHEUS_OPERATOR_VERSION } from '../../lib/versions.ts';

/** The Prometheus Operator CRDs from the Go module cache (.ci/install-monitoring fetches them). */
export function operatorCrds(): string {
  const modcache = spawnSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).stdout?.trim();
  const dir = modcache && path.join(modcache, `github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}`, 'example', 'prometheus-operator-crd');
  if (!dir || !fs.existsSync(dir)) throw new Error(`the Prometheus Operator ${PROMETHEUS_OPERATOR_VERSION} CRDs are not in the Go module cache: run \`bash .ci/install-monitoring\``);
  return dir;
}

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
let operator: ((o: KubeObject) => string[]) | undefined;
const isOperatorKind = (o: KubeObject) => o.apiVersion.startsWith('monitoring.coreos.com/');

/** Both validators: kubernetes-models (incl. KEDA CRDs) and, for built-in kinds, the strict spec. */
export async function validateStrictly(objects: readonly KubeObject[]): Promise<string[]> {
  strict ??= await strictValidator(kubernetesSwagger());
  const errors = (await validateObjects(objects.filter((o) => !isOperatorKind(o)))).map((e) => `${e.object}: ${e.message}`);
  for (const o of objects) if (!o.apiVersion.startsWith('keda.sh/') && !isOperatorKind(o)) errors.push(...strict(o));
  // Prometheus Operator kinds: strictly against the CRDs' own schemas.
  if (objects.some(isOperatorKind)) {
    operator ??= (await crdValidator(operatorCrds())) as (o: KubeObject) => string[];
    for (const o of objects.filter(isOperatorKind)) errors.push(...operator(o).map((e) => `${o.kind}/${o.metadata.name}: ${e}`));
  }
  return errors;
}
