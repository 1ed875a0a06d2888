// Config section Local target: the HTTP ports the role processes take on this machine.
import { UserError } from '../errors.ts';
import { processCount, type RolesConfig } from './roles.ts';
import { group, int, type Values, type VarSpec } from './spec.ts';

export const LOCAL_VARIABLES: readonly VarSpec[] = group('Local target', [
  { name: 'LOCAL_PORT_BASE', default: '65432', kind: int(1024, 65500, '65432'),
    description: 'Local target: first HTTP port; the processes take consecutive ports in the layout\'s order (ui first). The first UI is the endpoint.' },
]);

export interface LocalConfig {
  readonly portBase: number;
}

export function localConfig(v: Values, roles: Pick<RolesConfig, 'replicas'>): LocalConfig {
  const processes = processCount(roles);
  if (v.isLocal && v.num('LOCAL_PORT_BASE') + processes > 65535) {
    throw new UserError(`LOCAL_PORT_BASE=${v.str('LOCAL_PORT_BASE')} leaves no room for ${processes} processes`, 'set LOCAL_PORT_BASE=65432 or lower');
  }
  return { portBase: v.num('LOCAL_PORT_BASE') };
}
