// Validates rendered objects against the Kubernetes schemas (kubernetes-models, generated from
// the Kubernetes OpenAPI spec) and KEDA's CRD schemas (@kubernetes-models/keda). Unknown kinds
// are errors, not passes.
import type { KubeObject } from './kube-object.ts';

type Model = new (data: unknown) => { validate(): void };

const MODULES: Record<string, string> = {
  v1: 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'batch/v1': 'kubernetes-models/batch/v1',
  'policy/v1': 'kubernetes-models/policy/v1',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1',
  'autoscaling/v2': 'kubernetes-models/autoscaling/v2',
  'rbac.authorization.k8s.io/v1': 'kubernetes-models/rbac.authorization.k8s.io/v1',
  'keda.sh/v1alpha1': '@kubernetes-models/keda/keda.sh/v1alpha1',
};

export interface SchemaError {
  object: string;
  message: string;
}

export async function validateObjects(objects: readonly KubeObject[]): Promise<SchemaError[]> {
  const errors: SchemaError[] = [];
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata?.name}`;
    const mod = MODULES[o.apiVersion];
    if (!mod) {
      errors.push({ object: id, message: `no schema known for apiVersion ${o.apiVersion}` });
      continue;
    }
    const Cls = ((await import(mod)) as Record<string, Model | undefined>)[o.kind];
    if (!Cls) {
      errors.push({ object: id, message: `no schema for kind ${o.kind} in ${o.apiVersion}` });
      continue;
    }
    try {
      new Cls(o).validate();
    } catch (err) {
      errors.push({ object: id, message: (err as Error).message });
    }
  }
  return errors;
}

/**
 * Strict validation against the official OpenAPI spec of a pinned Kubernetes release
 * (api/openapi-spec/swagger.json of k8s.io/kubernetes, from the Go module proxy), kubeconform
 * style: unknown fields are errors too, which the generated models above let through.
 */
export async function strictValidator(swaggerFile: string): Promise<(o: KubeObject) => string[]> {
  const { Ajv } = await import('ajv');
  const fs = await import('node:fs');
  const swagger = JSON.parse(fs.readFileSync(swaggerFile, 'utf8')) as { definitions: Record<string, Record<string, unknown>> };
  const byGvk = new Map<string, string>();
  for (const [name, def] of Object.entries(swagger.definitions)) {
    for (const g of (def['x-kubernetes-group-version-kind'] as { group: string; version: string; kind: string }[] | undefined) ?? []) {
      byGvk.set(`${g.group ? `${g.group}/` : ''}${g.version}/${g.kind}`, name);
    }
  }
  const convert = (s: unknown): unknown => {
    if (Array.isArray(s)) return s.map(convert);
    if (!s || typeof s !== 'object') return s;
    const o = s as Record<string, unknown>;
    if (o.format === 'int-or-string') return { anyOf: [{ type: 'integer' }, { type: 'string' }] };
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(o)) {
      if (k === 'format' || k.startsWith('x-kubernetes-') || k === 'description') continue;
      out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v as object).map(([p, d]) => [p, convert(d)])) : convert(v);
    }
    if (out.$ref) return { $ref: `k8s${out.$ref as string}` };
    if (out.type === 'object' && out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
    return out;
  };
  const definitions = Object.fromEntries(Object.entries(swagger.definitions).map(([n, d]) => [n, convert(d)]));
  // Quantities are strings or numbers on the wire (cpu: 1, memory: 512Mi).
  definitions['io.k8s.apimachinery.pkg.api.resource.Quantity'] = { anyOf: [{ type: 'string' }, { type: 'number' }] };
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ $id: 'k8s', definitions });
  return (obj) => {
    const name = byGvk.get(`${obj.apiVersion}/${obj.kind}`);
    if (!name) return [`${obj.kind}/${obj.metadata?.name}: not a Kubernetes ${obj.apiVersion} kind`];
    const validate = ajv.getSchema(`k8s#/definitions/${name}`)!;
    if (validate(obj)) return [];
    return (validate.errors ?? []).map((e: { instancePath: string; message?: string; params: object }) => `${obj.kind}/${obj.metadata?.name}${e.instancePath} ${e.message}${e.params && 'additionalProperty' in e.params ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}`);
  };
}
