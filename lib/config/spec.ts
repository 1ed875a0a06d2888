// What a config section is made of: declared variables (name, group, default, kind, meaning),
// the value parser every variable goes through, and what a section may read when it derives its part.
import path from 'node:path';
import { UserError } from '../errors.ts';

export const TARGETS = ['local', 'minikube', 'gke', 'cluster'] as const;
export type Target = (typeof TARGETS)[number];

export type Kind =
  | { type: 'string'; pattern?: RegExp; example: string }
  | { type: 'int'; min: number; max: number; example: string }
  | { type: 'bool'; example: string }
  | { type: 'enum'; values: readonly string[]; example: string };

export interface VarSpec {
  name: string;
  group: string;
  description: string;
  default: string;
  kind: Kind;
  secret?: boolean;
}

export const IMAGE_REF = /^([a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?)?$/;
export const str = (example: string, pattern?: RegExp): Kind => ({ type: 'string', example, pattern });
export const int = (min: number, max: number, example: string): Kind => ({ type: 'int', min, max, example });
export const bool: Kind = { type: 'bool', example: 'true' };
export const oneOf = (values: readonly string[]): Kind => ({ type: 'enum', values, example: values[0] ?? '' });

/** A section's variables all in one group, in the order .env.example lists them. */
export function group(name: string, vars: readonly Omit<VarSpec, 'group'>[]): VarSpec[] {
  return vars.map((v) => ({ ...v, group: name }));
}

/** Checks one raw value against its declaration; names the variable, where it came from, the rule and an example. */
export function parseValue(spec: VarSpec, raw: string, source: string): string {
  const value = raw.trim();
  const bad = (why: string) =>
    new UserError(
      `${spec.name}=${spec.secret ? '***' : JSON.stringify(value)} (from ${source}) ${why}`,
      `set ${spec.name} to a value like ${spec.name}=${spec.kind.example} — ${spec.description}`,
    );
  switch (spec.kind.type) {
    case 'int': {
      if (!/^-?\d+$/.test(value)) throw bad('is not a whole number');
      const n = Number(value);
      if (n < spec.kind.min || n > spec.kind.max) throw bad(`is out of range (${spec.kind.min}..${spec.kind.max})`);
      return String(n);
    }
    case 'bool':
      if (!/^(true|false|1|0|yes|no)$/i.test(value)) throw bad('is not true or false');
      return /^(true|1|yes)$/i.test(value) ? 'true' : 'false';
    case 'enum':
      if (!spec.kind.values.includes(value)) throw bad(`is not one of: ${spec.kind.values.filter(Boolean).join(', ')}`);
      return value;
    case 'string':
      if (spec.kind.pattern && !spec.kind.pattern.test(value)) throw bad('has the wrong form');
      return value;
  }
}

/** What every section reads when it derives its part: the parsed values, the chosen target and the repository root. */
export class Values {
  constructor(
    readonly vars: Readonly<Record<string, string>>,
    readonly target: Target,
    readonly root: string,
    /** The process environment loadConfig was given (for HOME and XDG_CACHE_HOME, which are not ours). */
    readonly env: Readonly<Record<string, string | undefined>>,
  ) {}

  get isLocal(): boolean {
    return this.target === 'local';
  }

  str(name: string): string {
    const v = this.vars[name];
    if (v === undefined) throw new Error(`config: ${name} is not declared by any section`);
    return v;
  }

  num(name: string): number {
    return Number(this.str(name));
  }

  /** A path relative to the repository root made absolute; '' stays ''. */
  path(name: string): string {
    const p = this.str(name);
    return p ? path.resolve(this.root, p) : '';
  }

  /** A duration left empty takes the target's default: short on local (fast failover), Digdag-like on Kubernetes. */
  orDefault(name: string, local: number, kube: number): number {
    const v = this.str(name);
    return v ? Number(v) : this.isLocal ? local : kube;
  }
}
