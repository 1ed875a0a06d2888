// A dependency-free SVG bar chart (throughput per configuration), rendered to PNG by resvg.

export interface Bar {
  label: string;
  value: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function barChartSvg(title: string, unit: string, groups: { name: string; bars: Bar[] }[]): string {
  const width = 760;
  const height = 420;
  const left = 70;
  const bottom = 70;
  const top = 50;
  const plotH = height - top - bottom;
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.bars.map((b) => b.value))) * 1.15;
  const colors = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2'];
  const slot = (width - left - 20) / groups.length;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="28" text-anchor="middle" font-size="18">${esc(title)}</text>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#333"/>`,
    `<line x1="${left}" y1="${height - bottom}" x2="${width - 20}" y2="${height - bottom}" stroke="#333"/>`,
    `<text x="18" y="${top + plotH / 2}" font-size="13" transform="rotate(-90 18 ${top + plotH / 2})" text-anchor="middle">${esc(unit)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    const y = height - bottom - (v / max) * plotH;
    parts.push(`<text x="${left - 6}" y="${y + 4}" font-size="11" text-anchor="end">${v.toFixed(v < 10 ? 1 : 0)}</text>`);
    parts.push(`<line x1="${left}" y1="${y}" x2="${width - 20}" y2="${y}" stroke="#ddd"/>`);
  }
  groups.forEach((g, gi) => {
    const barW = (slot * 0.8) / g.bars.length;
    g.bars.forEach((b, bi) => {
      const h = (b.value / max) * plotH;
      const x = left + gi * slot + slot * 0.1 + bi * barW;
      const y = height - bottom - h;
      parts.push(`<rect x="${x}" y="${y}" width="${barW - 4}" height="${h}" fill="${colors[bi % colors.length]}"/>`);
      parts.push(`<text x="${x + (barW - 4) / 2}" y="${y - 4}" font-size="11" text-anchor="middle">${b.value.toFixed(2)}</text>`);
      parts.push(`<text x="${x + (barW - 4) / 2}" y="${height - bottom + 16}" font-size="11" text-anchor="middle">${esc(b.label)}</text>`);
    });
    parts.push(`<text x="${left + gi * slot + slot / 2}" y="${height - bottom + 40}" font-size="13" text-anchor="middle">${esc(g.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
