/** A small, dependency-free SVG line chart: enough for perplexity along a text. */

/** One line of the chart. */
export interface Series {
  label: string;
  color: string;
  points: readonly [number, number][];
}

/** Options of {@link lineChartSvg}. */
export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** Logarithmic y axis (for values spanning orders of magnitude, like perplexity). */
  yLog?: boolean;
  /** Bottom of a linear y axis (default: 0, or the least value when it is negative). */
  yMin?: number;
}

const escape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Round tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** Tick values 1, 2, 5 x 10^k covering [lo, hi] (lo > 0), for a log axis. */
export function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = Number((m * 10 ** e).toPrecision(12));
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out.length ? out : [lo];
}

/** An SVG document with one polyline per series, axes with ticks and labels, and a legend. */
export function lineChartSvg(series: readonly Series[], options: ChartOptions): string {
  const width = options.width ?? 900;
  const height = options.height ?? 420;
  const margin = { left: 70, right: 20, top: 40, bottom: 55 };
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin = Math.min(...xs), xMax = Math.max(...xs);
  const log = options.yLog ?? false;
  const yMin = log ? Math.min(...ys) / 1.1 : options.yMin ?? Math.min(0, ...ys);
  const yMax = Math.max(...ys) * (log ? 1.1 : 1.05);
  const fy = (y: number) => (log ? Math.log(y) : y);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const sx = (x: number) => margin.left + (xMax > xMin ? (x - xMin) / (xMax - xMin) : 0.5) * plotW;
  const sy = (y: number) =>
    margin.top + plotH - (yMax > yMin ? (fy(y) - fy(yMin)) / (fy(yMax) - fy(yMin)) : 0.5) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${
      escape(options.title)
    }</text>`,
  ];
  for (const t of ticks(xMin, xMax)) {
    const x = sx(t).toFixed(1);
    parts.push(
      `<line x1="${x}" y1="${margin.top}" x2="${x}" y2="${margin.top + plotH}" stroke="#eee"/>`,
      `<text x="${x}" y="${margin.top + plotH + 18}" text-anchor="middle">${t}</text>`,
    );
  }
  for (const t of log ? logTicks(yMin, yMax) : ticks(yMin, yMax)) {
    const y = sy(t).toFixed(1);
    parts.push(
      `<line x1="${margin.left}" y1="${y}" x2="${margin.left + plotW}" y2="${y}" stroke="#eee"/>`,
      `<text x="${
        margin.left - 8
      }" y="${y}" text-anchor="end" dominant-baseline="middle">${t}</text>`,
    );
  }
  parts.push(
    `<line x1="${margin.left}" y1="${margin.top + plotH}" x2="${margin.left + plotW}" ` +
      `y2="${margin.top + plotH}" stroke="black"/>`,
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${margin.top + plotH}" ` +
      `stroke="black"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle">` +
      `${escape(options.xLabel)}</text>`,
    `<text transform="translate(18 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">` +
      `${escape(options.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    parts.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${points}"/>`,
      `<line x1="${margin.left + plotW - 170}" y1="${margin.top + 14 + 18 * i}" ` +
        `x2="${margin.left + plotW - 145}" y2="${margin.top + 14 + 18 * i}" stroke="${s.color}" ` +
        `stroke-width="3"/>`,
      `<text x="${margin.left + plotW - 138}" y="${margin.top + 14 + 18 * i}" ` +
        `dominant-baseline="middle">${escape(s.label)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}
