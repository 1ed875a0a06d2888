// Config section Workflows: the user's own Digdag project pushed next to the sample.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';
import { group, str, type Values, type VarSpec } from './spec.ts';

export const WORKFLOWS_VARIABLES: readonly VarSpec[] = group('Workflows', [
  { name: 'WORKFLOW_DIR', default: '', kind: str('./my-project'),
    description: 'Your own Digdag project directory, pushed by push-workflow next to the ha-sample project verify-ha uses.' },
  { name: 'WORKFLOW_PROJECT', default: '', kind: str('my-project', /^([A-Za-z0-9_.-]+)?$/),
    description: 'Project name for WORKFLOW_DIR. Empty: the directory name.' },
]);

export interface WorkflowsConfig {
  /** The user's project directory (absolute), '' when none. */
  readonly dir: string;
  /** Its project name: WORKFLOW_PROJECT, else the directory name; '' when no directory. */
  readonly project: string;
}

export function workflowsConfig(v: Values): WorkflowsConfig {
  const dir = v.path('WORKFLOW_DIR');
  if (dir && !fs.existsSync(path.join(dir, '.'))) {
    throw new UserError(`WORKFLOW_DIR=${v.str('WORKFLOW_DIR')} does not exist`, 'point WORKFLOW_DIR at a directory holding your .dig files, or leave it empty');
  }
  return { dir, project: dir ? v.str('WORKFLOW_PROJECT') || path.basename(dir) : '' };
}
