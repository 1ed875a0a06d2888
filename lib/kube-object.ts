// A Kubernetes object as the toolkit handles it (rendered by lib/kube/render.ts, validated by
// lib/schema.ts): a core type, so the core and every target can name it without importing a target.

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  data?: Record<string, string>;
  [k: string]: unknown;
}
