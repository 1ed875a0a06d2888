// Strict validation of custom resources against their CustomResourceDefinitions' openAPIV3Schema
// (the Prometheus Operator's, from its Go module): unknown fields are errors, as for built-in kinds.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

type Schema = Record<string, unknown>;

export interface CustomObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string };
}

/** openAPIV3Schema → JSON Schema for ajv: int-or-string, closed objects unless preserve-unknown-fields. */
export function crdToJsonSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(crdToJsonSchema);
  if (!s || typeof s !== 'object') return s;
  const o = s as Schema;
  if (o['x-kubernetes-int-or-string']) return { anyOf: [{ type: 'integer' }, { type: 'string' }] };
  const out: Schema = {};
  for (const [k, v] of Object.entries(o)) {
    if (k === 'description' || k === 'format' || k.startsWith('x-kubernetes-')) continue;
    out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v as object).map(([p, d]) => [p, crdToJsonSchema(d)])) : crdToJsonSchema(v);
  }
  if (out.type === 'object' && out.properties && out.additionalProperties === undefined && !o['x-kubernetes-preserve-unknown-fields']) out.additionalProperties = false;
  return out;
}

/** A validator for every kind defined by the CRD files in `dir`, keyed by apiVersion/kind. */
export async function crdValidator(dir: string): Promise<(o: CustomObject) => string[]> {
  const { Ajv } = await import('ajv');
  // CRD patterns are Go RE2: an inline (?i) becomes JavaScript's i flag.
  const regExp = Object.assign((pattern: string, flags: string) => (pattern.includes('(?i)') ? new RegExp(pattern.replaceAll('(?i)', ''), `${flags}i`) : new RegExp(pattern, flags)), { code: 'new RegExp' });
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false, code: { regExp } });
  // Compiled on first use: the Prometheus CRD alone takes seconds.
  const byGvk = new Map<string, Schema>();
  const compiled = new Map<string, ReturnType<typeof ajv.compile>>();
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.yaml'))) {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), 'utf8'))) {
      const crd = doc.toJSON() as { kind?: string; spec?: { group: string; names: { kind: string }; versions: { name: string; schema: { openAPIV3Schema: unknown } }[] } };
      if (crd?.kind !== 'CustomResourceDefinition' || !crd.spec) continue;
      for (const v of crd.spec.versions) {
        const schema = crdToJsonSchema(v.schema.openAPIV3Schema) as Schema;
        // metadata is the apiserver's ObjectMeta: names and labels are all this project sets.
        (schema.properties as Schema).metadata = { type: 'object' };
        byGvk.set(`${crd.spec.group}/${v.name}/${crd.spec.names.kind}`, schema);
      }
    }
  }
  return (obj) => {
    const gvk = `${obj.apiVersion}/${obj.kind}`;
    const schema = byGvk.get(gvk);
    if (!schema) return [`${obj.kind}/${obj.metadata?.name}: no CRD for ${obj.apiVersion}`];
    if (!compiled.has(gvk)) compiled.set(gvk, ajv.compile(schema));
    const validate = compiled.get(gvk)!;
    if (validate(obj)) return [];
    return (validate.errors ?? []).map((e) => `${obj.kind}/${obj.metadata?.name}${e.instancePath} ${e.message}${'additionalProperty' in e.params ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}`);
  };
}
