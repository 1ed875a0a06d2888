// The bench's charts, drawn by Vega-Lite (rendered offline to SVG by Vega's headless view; run.ts
// turns the SVG into PNG with resvg): grouped bars with the configurations in a legend, so long
// labels never run into each other, and axes with Vega's "nice" ticks.
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

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
