// status on Kubernetes: the autoscaler's view of the task-running role, read from the objects
// that decide it — the ScaledObject (KEDA) and the HPA it owns, or the chart's own HPA — and the
// Deployment they scale, plus the newest scaling Event of either. Reads only.
import type { Config } from '../config.ts';
import type { Ctx } from '../pipeline.ts';
import { taskRole } from '../roles.ts';
import { fixedCount, fixedNote, type AutoscalerStatus, type ProcessStatus, type ScalingEvent } from '../status.ts';
import { kubectl } from './kubectl.ts';

/** The chart's autoscaler name (chart/digdag-ha/templates/autoscaling.yaml): the ScaledObject, or the HPA with mode=hpa. */
export const AUTOSCALER_NAME = 'digdag-autoscaler';
/** The HPA KEDA makes for a ScaledObject unless told otherwise: keda-hpa-<ScaledObject>. */
export const KEDA_HPA_NAME = `keda-hpa-${AUTOSCALER_NAME}`;

/** Event reasons that record a change of the count: the HPA's, and KEDA's own to and from zero. */
const SCALING_REASONS = ['SuccessfulRescale', 'KEDAScaleTargetActivated', 'KEDAScaleTargetDeactivated'];

interface Condition { type: string; status: string; reason?: string; message?: string }
interface Obj { kind: string; metadata: { name: string }; spec?: Record<string, unknown>; status?: Record<string, unknown> }
interface ScaledObject extends Obj {
  spec: { minReplicaCount?: number; maxReplicaCount?: number };
  status?: { hpaName?: string; conditions?: Condition[] };
}
interface MetricStatus {
  type: string;
  external?: { metric: { name: string }; current: { averageValue?: string; value?: string } };
  resource?: { name: string; current: { averageUtilization?: number } };
}
interface MetricSpec {
  type: string;
  external?: { target: { averageValue?: string; value?: string } };
  resource?: { target: { averageUtilization?: number } };
}
interface Hpa extends Obj {
  spec: { minReplicas?: number; maxReplicas: number; metrics?: MetricSpec[] };
  status?: { desiredReplicas?: number; currentReplicas?: number; lastScaleTime?: string; currentMetrics?: MetricStatus[] | null; conditions?: Condition[] };
}
interface Deployment extends Obj { spec: { replicas?: number }; status?: { replicas?: number; readyReplicas?: number } }
interface KubeEvent {
  involvedObject: { kind: string; name: string };
  reason: string;
  message?: string;
  lastTimestamp?: string | null;
  eventTime?: string | null;
  series?: { lastObservedTime?: string };
  metadata: { creationTimestamp?: string };
}

/** A Kubernetes quantity as a number ("4", "3500m", "1k"). */
export function quantity(q: string | undefined): number | undefined {
  if (q === undefined) return undefined;
  const m = /^([0-9.]+)(m|k|M|G)?$/.exec(q);
  if (!m) return undefined;
  const scale = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9 }[m[2] as 'm' | 'k' | 'M' | 'G'] ?? 1;
  return Number(m[1]) * scale;
}

const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).pop() ?? '';
const when = (e: KubeEvent) => e.lastTimestamp || e.series?.lastObservedTime || e.eventTime || e.metadata.creationTimestamp || '';

/** The newest Event that changed the count, of these objects (kind/name). */
export function lastScalingEvent(events: KubeEvent[], objects: string[]): ScalingEvent | undefined {
  const mine = events
    .filter((e) => SCALING_REASONS.includes(e.reason) && objects.includes(`${e.involvedObject.kind}/${e.involvedObject.name}`))
    .sort((a, b) => Date.parse(when(a)) - Date.parse(when(b)));
  const e = mine.pop();
  return e && { at: when(e), object: `${e.involvedObject.kind}/${e.involvedObject.name}`, reason: e.reason, message: e.message ?? '' };
}

/** The HPA's first metric: its last reading against its target. */
export function hpaMetric(hpa: Hpa): AutoscalerStatus['metric'] {
  const cur = hpa.status?.currentMetrics?.[0];
  const spec = hpa.spec.metrics?.[0];
  if (cur?.external) {
    const current = quantity(cur.external.current.averageValue ?? cur.external.current.value);
    if (current === undefined) return undefined;
    return { name: cur.external.metric.name, current, target: quantity(spec?.external?.target.averageValue ?? spec?.external?.target.value), unit: 'tasks per pod' };
  }
  if (cur?.resource?.current.averageUtilization !== undefined) {
    return { name: cur.resource.name, current: cur.resource.current.averageUtilization, target: spec?.resource?.target.averageUtilization, unit: '% CPU' };
  }
  return undefined;
}

/** The view from what kubectl returned; conditions that stop scaling become problems. */
export function autoscalerView(config: Config, found: { scaledObject?: ScaledObject; hpa?: Hpa; deployment?: Deployment; events: KubeEvent[] }, problems: string[]): AutoscalerStatus {
  const mode = config.k8s.autoscaling as 'keda' | 'hpa';
  const { scaledObject: so, hpa, deployment: d } = found;
  const objects = [...(so ? [`ScaledObject/${so.metadata.name}`] : []), ...(hpa ? [`HorizontalPodAutoscaler/${hpa.metadata.name}`] : [])];
  const cond = (cs: Condition[] | undefined, type: string) => cs?.find((c) => c.type === type);
  const soReady = cond(so?.status?.conditions, 'Ready');
  if (so && soReady?.status !== 'True') problems.push(`autoscaler: ScaledObject ${so.metadata.name} is not Ready${soReady ? ` (${soReady.reason}: ${soReady.message})` : ''}`);
  const scaling = cond(hpa?.status?.conditions, 'ScalingActive');
  // KEDA holding the role at zero disables its HPA on purpose.
  if (hpa && scaling?.status === 'False' && scaling.reason !== 'ScalingDisabled') problems.push(`autoscaler: HorizontalPodAutoscaler ${hpa.metadata.name} cannot scale (${scaling.reason}: ${scaling.message})`);
  const spec = d?.spec.replicas;
  const lastScale = lastScalingEvent(found.events, objects)
    ?? (hpa?.status?.lastScaleTime ? { at: hpa.status.lastScaleTime, object: `HorizontalPodAutoscaler/${hpa.metadata.name}`, reason: 'lastScaleTime', message: 'its Event has expired' } : undefined);
  const active = cond(so?.status?.conditions, 'Active');
  return {
    mode,
    role: taskRole(config.layout),
    objects,
    // KEDA owns the bounds (its HPA's minReplicas is at least 1 even when KEDA's is 0).
    min: so ? (so.spec.minReplicaCount ?? 0) : (hpa?.spec.minReplicas ?? 1),
    max: so ? (so.spec.maxReplicaCount ?? 100) : (hpa?.spec.maxReplicas ?? config.k8s.agentMaxReplicas),
    desired: spec === 0 ? 0 : (hpa?.status?.desiredReplicas ?? spec),
    current: d?.status?.replicas ?? 0,
    ready: d?.status?.readyReplicas ?? 0,
    ...(hpa ? { metric: hpaMetric(hpa) } : {}),
    ...(so ? { active: active?.status === 'True' } : {}),
    ...(lastScale ? { lastScale } : {}),
  };
}

/** Reads the ScaledObject (keda), the Deployment and the HPA, and the namespace's Events. */
export async function kubeAutoscaler(ctx: Ctx, processes: ProcessStatus[], problems: string[]): Promise<AutoscalerStatus> {
  const { config } = ctx;
  if (config.k8s.autoscaling === 'none') return fixedCount(config, processes, fixedNote(config));
  const get = async <T>(what: string, ...args: string[]): Promise<T | undefined> => {
    const r = await ctx.runner.run({ argv: kubectl(config, 'get', ...args, '-o', 'json'), quiet: true, nothrow: true, timeoutMs: 30_000 });
    if (r.code !== 0) problems.push(`autoscaler: ${what}: ${lastLine(r.stderr) || `kubectl exited ${r.code}`}`);
    try {
      return r.stdout.trim() ? (JSON.parse(r.stdout) as T) : undefined;
    } catch {
      return undefined;
    }
  };
  const so = config.k8s.autoscaling === 'keda' ? await get<ScaledObject>(`ScaledObject ${AUTOSCALER_NAME}`, 'scaledobject', AUTOSCALER_NAME) : undefined;
  const hpaName = config.k8s.autoscaling === 'keda' ? (so?.status?.hpaName ?? KEDA_HPA_NAME) : AUTOSCALER_NAME;
  const deployment = `digdag-${taskRole(config.layout)}`;
  // One round trip for both; a missing one is named, the other still read.
  const list = await get<{ items?: Obj[] } & Obj>(`deployment ${deployment}, HorizontalPodAutoscaler ${hpaName}`, `deployment/${deployment}`, `horizontalpodautoscaler/${hpaName}`);
  const items = list?.items ?? (list ? [list] : []);
  const events = (await get<{ items: KubeEvent[] }>('events', 'events'))?.items ?? [];
  return autoscalerView(config, {
    scaledObject: so,
    hpa: items.find((o) => o.kind === 'HorizontalPodAutoscaler') as Hpa | undefined,
    deployment: items.find((o) => o.kind === 'Deployment') as Deployment | undefined,
    events,
  }, problems);
}
