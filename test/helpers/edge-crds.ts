// The edge's custom resources (GKE ManagedCertificate, FrontendConfig, BackendConfig) have no
// published schema here: structural ones from the GKE docs, strict about unknown fields.
import { Ajv } from 'ajv';
import type { KubeObject } from '../../lib/kube/render.ts';
import { validateStrictly } from './tools.ts';

const CRD_SCHEMAS: Record<string, object> = {
  'networking.gke.io/v1/ManagedCertificate': {
    type: 'object', required: ['spec'],
    properties: { spec: { type: 'object', additionalProperties: false, required: ['domains'], properties: { domains: { type: 'array', minItems: 1, maxItems: 100, items: { type: 'string', pattern: '^[a-z0-9.-]+$' } } } } },
  },
  'networking.gke.io/v1beta1/FrontendConfig': {
    type: 'object', required: ['spec'],
    properties: { spec: { type: 'object', additionalProperties: false, properties: {
      redirectToHttps: { type: 'object', additionalProperties: false, required: ['enabled'], properties: { enabled: { type: 'boolean' }, responseCodeName: { enum: ['MOVED_PERMANENTLY_DEFAULT', 'FOUND', 'SEE_OTHER', 'TEMPORARY_REDIRECT', 'PERMANENT_REDIRECT'] } } },
      sslPolicy: { type: 'string' } } } },
  },
  'cloud.google.com/v1/BackendConfig': {
    type: 'object', required: ['spec'],
    properties: { spec: { type: 'object', additionalProperties: false, properties: {
      healthCheck: { type: 'object', additionalProperties: false, properties: { type: { enum: ['HTTP', 'HTTPS', 'HTTP2'] }, requestPath: { type: 'string', pattern: '^/' }, port: { type: 'integer' }, checkIntervalSec: { type: 'integer' }, timeoutSec: { type: 'integer' }, healthyThreshold: { type: 'integer' }, unhealthyThreshold: { type: 'integer' } } },
      sessionAffinity: { type: 'object', additionalProperties: false, properties: { affinityType: { enum: ['NONE', 'CLIENT_IP', 'GENERATED_COOKIE'] }, affinityCookieTtlSec: { type: 'integer' } } },
      timeoutSec: { type: 'integer' },
      iap: { type: 'object', additionalProperties: false, required: ['enabled'], properties: { enabled: { type: 'boolean' }, oauthclientCredentials: { type: 'object', additionalProperties: false, required: ['secretName'], properties: { secretName: { type: 'string' } } } } } } } },
  },
};
const ajv = new Ajv({ allErrors: true, strict: false });

/** Built-in kinds strictly (tools.ts), the edge CRDs against the schemas above. */
export async function validateAll(objects: KubeObject[]): Promise<string[]> {
  const crds = objects.filter((o) => CRD_SCHEMAS[`${o.apiVersion}/${o.kind}`]);
  const errors = await validateStrictly(objects.filter((o) => !crds.includes(o)));
  for (const o of crds) {
    const v = ajv.compile(CRD_SCHEMAS[`${o.apiVersion}/${o.kind}`]!);
    const ok = v(o) as boolean;
    if (!ok) errors.push(`${o.kind}/${o.metadata.name}: ${ajv.errorsText(v.errors)}`);
  }
  return errors;
}
