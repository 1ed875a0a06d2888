// Config section General: where to deploy (chosen or detected) and where state lives.
import path from 'node:path';
import { group, oneOf, str, TARGETS, type Target, type Values, type VarSpec } from './spec.ts';

export const GENERAL_VARIABLES: readonly VarSpec[] = group('General', [
  { name: 'DIGDAG_HA_TARGET', default: '', kind: oneOf(['', ...TARGETS]),
    description: 'Where to deploy: local (Digdag role processes on this machine), minikube, gke, or cluster (the project\'s own test cluster, npx tsx tasks/cluster.ts up). Empty: minikube when docker and minikube answer, else local.' },
  { name: 'DIGDAG_HA_STATE_DIR', default: '.state', kind: str('.state'),
    description: 'Directory for generated secrets, the Digdag runtime cache, PostgreSQL data, process ids and logs. Never commit it.' },
]);

export interface GeneralConfig {
  readonly target: Target;
  /** Why this target was chosen (printed by all.ts). */
  readonly targetReason: string;
  readonly root: string;
  /** <DIGDAG_HA_STATE_DIR>/<target>. */
  readonly stateDir: string;
}

/** The target: DIGDAG_HA_TARGET, else minikube when docker and minikube answer, else local. */
export function chooseTarget(vars: Readonly<Record<string, string>>, detectKube?: () => boolean): { target: Target; targetReason: string } {
  const set = vars.DIGDAG_HA_TARGET as Target | '';
  if (set) return { target: set, targetReason: `DIGDAG_HA_TARGET=${set}` };
  const kube = detectKube ? detectKube() : false;
  return kube
    ? { target: 'minikube', targetReason: 'no target set; docker and minikube answer, so minikube' }
    : { target: 'local', targetReason: 'no target set; docker or minikube does not answer here, so local (Digdag role processes on this machine)' };
}

export function generalConfig(v: Values, targetReason: string): GeneralConfig {
  return { target: v.target, targetReason, root: v.root, stateDir: path.join(v.path('DIGDAG_HA_STATE_DIR'), v.target) };
}
