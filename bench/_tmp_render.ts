import fs from 'node:fs';
import { clusterChartSpec, renderSvg, svgToPng, timelineSpec, type TimelineRow } from './charts.ts';
const rows: TimelineRow[] = [];
const confs = [['fixed: 1 worker', 1, 1, 270], ['fixed: 2 workers', 2, 2, 140], ['fixed: 4 workers', 4, 4, 80], ['KEDA: 1→4 workers', 1, 4, 120]] as const;
for (const [c, min, max, drain] of confs) {
  for (let t = -2; t < drain + 60; t += 1.3) {
    const q = t < 0 ? 0 : t > drain ? 0 : Math.max(0, 200 * (1 - t / drain) + 5);
    const w = c.startsWith('KEDA') ? (t < 12 ? 1 : t < drain + 30 ? max : Math.max(min, max - Math.floor((t - drain - 30) / 15))) : min;
    const r = c.startsWith('KEDA') && t > 12 && t < 45 ? 1 : w;
    rows.push({ configuration: c, t, queue: Math.round(q), workers: w, ready: r });
  }
}
fs.writeFileSync('/tmp/bench-charts/timeline.png', svgToPng(await renderSvg(timelineSpec('Burst of 200 × sleep 5 on the own cluster', rows))));
fs.writeFileSync('/tmp/bench-charts/cluster.png', svgToPng(await renderSvg(clusterChartSpec('Digdag on the own cluster: 50 × 4 sleep 5, 4 threads per worker', confs.map(([c, , max, d]) => ({ configuration: c, tasksPerSecond: 200 / d, drainSeconds: d, idealSeconds: 1000 / (max * 4) }))))));
