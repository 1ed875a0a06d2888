// The bench's charts, drawn by Vega-Lite (rendered offline to SVG by Vega's headless view, to PNG
// by resvg): grouped bars with the configurations in a legend, so long labels never run into each
// other, axes with Vega's "nice" ticks; the cluster mode's bars side by side, and its bursts over
// time (the queue and the workers), where the autoscaler is seen acting.
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { Resvg } from '@resvg/resvg-js';

export interface Bar {
  label: string;
  value: number;
}

/** Renders a Vega-Lite spec to an SVG document, without a browser or a canvas. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Bars per configuration, side by side within each group (a workload), values printed on top. */
export function barChartSpec(title: string, unit: string, groups: readonly { name: string; bars: readonly Bar[] }[]): TopLevelSpec {
  const values = groups.flatMap((g) => g.bars.map((b) => ({ group: g.name, configuration: b.label, value: b.value })));
  const order = [...new Set(values.map((v) => v.configuration))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 16 },
    width: { step: 56 },
    height: 300,
    data: { values },
    encoding: {
      x: { field: 'group', type: 'nominal', title: null, axis: { labelAngle: 0, labelLimit: 260, labelFontSize: 12 } },
      xOffset: { field: 'configuration', type: 'nominal', sort: order },
      y: { field: 'value', type: 'quantitative', title: unit, scale: { nice: true, zero: true }, axis: { tickCount: 6 } },
    },
    layer: [
      { mark: { type: 'bar' }, encoding: { color: { field: 'configuration', type: 'nominal', sort: order, title: 'configuration', legend: { orient: 'bottom', columns: 3, labelLimit: 240 } } } },
      { mark: { type: 'text', dy: -6, fontSize: 10 }, encoding: { text: { field: 'value', type: 'quantitative', format: '.2f' } } },
    ],
    config: { font: 'DejaVu Sans', view: { stroke: null } },
  } as TopLevelSpec;
}

export const barChartSvg = (title: string, unit: string, groups: readonly { name: string; bars: readonly Bar[] }[]): Promise<string> =>
  renderSvg(barChartSpec(title, unit, groups));

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const CONFIG = { font: 'DejaVu Sans', view: { stroke: null }, legend: { labelLimit: 240 } };

/** One configuration of a cluster run as the charts need it. */
export interface ClusterBarRow {
  configuration: string;
  tasksPerSecond: number;
  drainSeconds: number;
  /** null: no ideal (tiny tasks without a 1-worker run); no tick drawn. */
  idealSeconds: number | null;
}

/** The cluster mode side by side: tasks/s, and the drain time against its ideal (a black tick). */
export function clusterChartSpec(title: string, rows: readonly ClusterBarRow[]): TopLevelSpec {
  const order = rows.map((r) => r.configuration);
  // "fixed: 4 workers" on two lines ("fixed:" / "4 workers"): neighbours' labels never touch.
  const x = { field: 'configuration', type: 'nominal', sort: order, title: null, axis: { labelAngle: 0, labelExpr: "split(datum.label, ': ')", labelLineHeight: 13 } } as const;
  const color = { field: 'configuration', type: 'nominal', sort: order, legend: null } as const;
  return {
    $schema: SCHEMA,
    title: { text: title, fontSize: 16 },
    data: { values: rows.map((r) => ({ ...r })) },
    hconcat: [
      {
        title: 'throughput',
        width: { step: 100 },
        height: 280,
        encoding: { x, y: { field: 'tasksPerSecond', type: 'quantitative', title: 'tasks / second', scale: { nice: true, zero: true }, axis: { tickCount: 6 } } },
        layer: [
          { mark: { type: 'bar' }, encoding: { color } },
          { mark: { type: 'text', dy: -6, fontSize: 10 }, encoding: { text: { field: 'tasksPerSecond', type: 'quantitative', format: '.2f' } } },
        ],
      },
      {
        title: 'drain time (tick: ideal at the most workers)',
        width: { step: 100 },
        height: 280,
        encoding: { x },
        layer: [
          { mark: { type: 'bar' }, encoding: { color, y: { field: 'drainSeconds', type: 'quantitative', title: 'seconds', scale: { nice: true, zero: true }, axis: { tickCount: 6 } } } },
          { mark: { type: 'tick', color: 'black', thickness: 2, size: 60 }, encoding: { y: { field: 'idealSeconds', type: 'quantitative' } } },
          { mark: { type: 'text', dy: -6, fontSize: 10 }, encoding: { y: { field: 'drainSeconds', type: 'quantitative' }, text: { field: 'drainSeconds', type: 'quantitative', format: '.0f' } } },
        ],
      },
    ],
    config: CONFIG,
  } as TopLevelSpec;
}

/** One sample of a burst for the time series: seconds after the first submission. */
export interface TimelineRow {
  configuration: string;
  t: number;
  /** Tasks waiting for a worker plus tasks running (what KEDA scales on). */
  queue: number;
  /** Worker pods (not being removed), and of them Ready. */
  workers: number;
  ready: number;
}

/**
 * The bursts over time, one row per configuration on the same time axis: the queue as an area
 * (left axis) and the workers as steps (right axis: pods solid, Ready dashed), so a reader sees
 * the autoscaler act on the queue, and the fixed counts not.
 */
export function timelineSpec(title: string, rows: readonly TimelineRow[]): TopLevelSpec {
  const order = [...new Set(rows.map((r) => r.configuration))];
  const most = Math.max(1, ...rows.map((r) => r.workers));
  // Shared by every row (set, not resolved: a facet cannot hold layers with two y axes).
  const tMax = Math.max(1, ...rows.map((r) => r.t));
  const qMax = Math.max(1, ...rows.map((r) => r.queue));
  const row = (configuration: string, last: boolean) => ({
    title: { text: configuration, anchor: 'start', fontSize: 13 },
    width: 720,
    height: 110,
    transform: [{ filter: { field: 'configuration', equal: configuration } }],
    encoding: { x: { field: 't', type: 'quantitative', title: last ? 'seconds after the burst was submitted' : null, scale: { domain: [0, tMax], nice: true }, axis: { tickCount: 10 } } },
    layer: [
      {
        mark: { type: 'area', interpolate: 'step-after', color: '#9ecae1', opacity: 0.8 },
        encoding: { y: { field: 'queue', type: 'quantitative', title: 'queued + running', scale: { domain: [0, qMax], nice: true }, axis: { tickCount: 4, titleColor: '#3182bd' } } },
      },
      {
        transform: [{ fold: ['workers', 'ready'], as: ['what', 'n'] }, { calculate: "datum.what === 'workers' ? 'worker pods' : 'Ready'", as: 'what' }],
        mark: { type: 'line', interpolate: 'step-after', strokeWidth: 2 },
        encoding: {
          y: { field: 'n', type: 'quantitative', title: 'workers', scale: { domain: [0, most] }, axis: { orient: 'right', values: Array.from({ length: most + 1 }, (_, i) => i), format: 'd', titleColor: '#a50f15', grid: false } },
          color: { field: 'what', type: 'nominal', title: null, sort: ['worker pods', 'Ready'], scale: { range: ['#a50f15', '#fb6a4a'] }, legend: { orient: 'bottom' } },
          strokeDash: { field: 'what', type: 'nominal', title: null, sort: ['worker pods', 'Ready'], scale: { range: [[1, 0], [5, 3]] } },
        },
      },
    ],
    resolve: { scale: { y: 'independent' } },
  });
  return {
    $schema: SCHEMA,
    title: { text: title, fontSize: 16 },
    // The sample before the burst (its starting workers) drawn at 0.
    data: { values: rows.map((r) => ({ ...r, t: Math.max(0, r.t) })) },
    vconcat: order.map((c, i) => row(c, i === order.length - 1)),
    config: CONFIG,
  } as TopLevelSpec;
}

/** An SVG (from renderSvg) as PNG, by resvg with the system's fonts. */
export function svgToPng(svg: string): Buffer {
  return Buffer.from(new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng());
}
