// Validates rendered objects against the Kubernetes schemas (kubernetes-models, generated from
// the Kubernetes OpenAPI spec) and KEDA's CRD schemas (@kubernetes-models/keda). Unknown kinds
// are errors, not passes.
import type { KubeObject } from './kube-render.ts';

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
