// Config section Metrics: the local metrics ports and, on Kubernetes, the Prometheus Operator
// objects (every Digdag process always exports its metrics; see README "What to watch").
import { UserError } from '../errors.ts';
import type { LocalConfig } from './local.ts';
import { processCount, type RolesConfig } from './roles.ts';
import { group, int, oneOf, str, type Values, type VarSpec } from './spec.ts';

export const METRICS_VARIABLES: readonly VarSpec[] = group('Metrics', [
  { name: 'LOCAL_METRICS_PORT_BASE', default: '9400', kind: int(1024, 65000, '9400'),
    description: 'Local target: first metrics port. The queue exporter listens on it; process n (in the layout\'s order, from 0) serves Prometheus metrics on base+1+2n and keeps Digdag\'s loopback JMX port (server.jmx.port) on base+2+2n.' },
  { name: 'MONITORING', default: 'none', kind: oneOf(['none', 'prometheus-operator']),
    description: 'Kubernetes: none (pods carry prometheus.io/* scrape annotations only) or prometheus-operator (adds the PodMonitor, the PrometheusRule with the alerts and the one queue exporter; needs the monitoring.coreos.com CRDs).' },
  { name: 'PROMETHEUS_NAMESPACE', default: 'monitoring', kind: str('monitoring', /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
    description: 'Kubernetes, MONITORING=prometheus-operator: namespace of the Prometheus that scrapes the pods (a NetworkPolicy lets it reach the metrics ports).' },
  { name: 'QUEUE_EXPORTER_IMAGE', default: 'quay.io/prometheuscommunity/postgres-exporter:v0.11.1', kind: str('registry.example.com/mirror/postgres-exporter@sha256:…', /^[a-z0-9][a-z0-9._\-/:@]*$/),
    description: 'Kubernetes, MONITORING=prometheus-operator: image of the queue exporter (postgres_exporter 0.11.1, the version the local target runs). Point it at your mirror, ideally by digest.' },
]);

export interface MetricsConfig {
  /** Local: queue exporter on this port; process n: metrics base+1+2n, JMX base+2+2n. */
  readonly localPortBase: number;
  readonly monitoring: 'none' | 'prometheus-operator';
  readonly queueExporterImage: string;
  readonly prometheusNamespace: string;
}

export function metricsConfig(v: Values, roles: Pick<RolesConfig, 'replicas'>, local: LocalConfig): MetricsConfig {
  if (v.isLocal) {
    const processes = processCount(roles);
    const [http, metrics] = [local.portBase, v.num('LOCAL_METRICS_PORT_BASE')];
    const metricsEnd = metrics + 2 * processes; // the queue exporter, then two ports per process
    if (metricsEnd > 65535) throw new UserError(`LOCAL_METRICS_PORT_BASE=${metrics} leaves no room for ${2 * processes + 1} metrics ports`, 'set LOCAL_METRICS_PORT_BASE=9400');
    if (metrics <= http + processes - 1 && http <= metricsEnd) {
      throw new UserError(`LOCAL_METRICS_PORT_BASE=${metrics} (ports ${metrics}-${metricsEnd}) overlaps the HTTP ports ${http}-${http + processes - 1} of LOCAL_PORT_BASE`, `set LOCAL_METRICS_PORT_BASE=${http + processes} or a range elsewhere`);
    }
  }
  return {
    localPortBase: v.num('LOCAL_METRICS_PORT_BASE'),
    monitoring: v.str('MONITORING') as MetricsConfig['monitoring'],
    queueExporterImage: v.str('QUEUE_EXPORTER_IMAGE'),
    prometheusNamespace: v.str('PROMETHEUS_NAMESPACE'),
  };
}
