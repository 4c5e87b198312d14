/**
 * A small hand-written SVG line chart for the benchmark plots (no dependency, no scripts, no
 * external fonts): axes with ticks and labels, one polyline with point markers per series, a legend
 * and a title. Laid out for 640x400, the size BENCHMARKS.md shows it at.
 */

export interface ChartSeries {
  name: string;
  points: Array<[x: number, y: number]>;
}

export interface LineChartOptions {
  title: string;
  /** A second, smaller line under the title (e.g. the machine the figures come from). */
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  xScale?: 'linear' | 'log2';
  /** Latencies span orders of magnitude; a log axis keeps p50 visible next to p99.9. */
  yScale?: 'linear' | 'log10';
  xFormat?: (x: number) => string;
  yFormat?: (y: number) => string;
  /** Dashed vertical lines with a label, e.g. the moment of a crash. */
  markers?: Array<{ x: number; label: string }>;
  width?: number;
  height?: number;
}

/** Okabe-Ito colours: distinguishable with the common colour-vision deficiencies. */
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'];

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => `&${{ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot', "'": 'apos' }[character]};`);
}

/** 1234567 -> "1.23M", 16384 -> "16.4k", 4096 -> "4096", 0.25 -> "0.25": short enough for a tick label. */
export function compactNumber(value: number): string {
  const magnitude = Math.abs(value);
  if (magnitude >= 1e9) return `${trim(value / 1e9)}G`;
  if (magnitude >= 1e6) return `${trim(value / 1e6)}M`;
  if (magnitude >= 1e4) return `${trim(value / 1e3)}k`;
  // Batch sizes and byte counts are whole numbers a reader expects exactly (1024, not 1020).
  return Number.isInteger(value) ? String(value) : trim(value);
}

function trim(value: number): string {
  return String(Number(value.toPrecision(3)));
}

interface Axis {
  /** Maps a data value to [0, 1] along the axis. */
  position(value: number): number;
  ticks: number[];
}

/** Ticks at 1, 2 or 5 times a power of ten; `extend` widens the domain to whole ticks. */
function linearAxis(min: number, max: number, extend: boolean): Axis {
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / 5);
  if (extend) {
    min = Math.floor(min / step) * step;
    max = Math.ceil(max / step) * step;
  }
  const ticks: number[] = [];
  for (let tick = Math.ceil(min / step) * step; tick <= max + step * 1e-9; tick += step) ticks.push(Number(tick.toPrecision(12)));
  return { position: (value) => (value - min) / (max - min), ticks };
}

function niceStep(rough: number): number {
  const power = 10 ** Math.floor(Math.log10(rough));
  const fraction = rough / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

/** Ticks at powers of `base` (thinned to at most 9); for base 10 over a short span also at 2x and 5x. */
function logAxis(base: 2 | 10, min: number, max: number): Axis {
  const log = (value: number): number => Math.log(value) / Math.log(base);
  const low = Math.floor(log(min));
  const high = Math.max(Math.ceil(log(max)), low + 1);
  const every = Math.ceil((high - low + 1) / 9);
  const ticks: number[] = [];
  for (let exponent = low; exponent <= high; exponent++) {
    if ((exponent - low) % every === 0) ticks.push(base ** exponent);
    if (base === 10 && high - low <= 2 && exponent < high) ticks.push(2 * 10 ** exponent, 5 * 10 ** exponent);
  }
  ticks.sort((a, b) => a - b);
  return { position: (value) => (log(value) - low) / (high - low), ticks };
}

const round = (value: number): string => String(Math.round(value * 10) / 10);

export function lineChart(options: LineChartOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 400;
  const xFormat = options.xFormat ?? compactNumber;
  const yFormat = options.yFormat ?? compactNumber;
  const xLog = options.xScale === 'log2';
  const yLog = options.yScale === 'log10';
  // A log axis cannot show zero or negative values; they are left out rather than drawn wrong.
  const series = options.series.map((line) => ({
    name: line.name,
    points: line.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!xLog || x > 0) && (!yLog || y > 0)),
  }));
  const xs = series.flatMap((line) => line.points.map(([x]) => x)).concat((options.markers ?? []).map((marker) => marker.x));
  const ys = series.flatMap((line) => line.points.map(([, y]) => y));
  if (xs.length === 0 || ys.length === 0) throw new Error(`lineChart: no points to draw for "${options.title}"`);

  const plot = { left: 78, right: width - 36, top: options.subtitle === undefined ? 62 : 76, bottom: height - 54 };
  const xAxis = xLog ? logAxis(2, Math.min(...xs), Math.max(...xs)) : linearAxis(Math.min(...xs), Math.max(...xs), false);
  // A linear throughput or latency axis starts at zero so heights compare honestly.
  const yAxis = yLog ? logAxis(10, Math.min(...ys), Math.max(...ys)) : linearAxis(Math.min(0, ...ys), Math.max(0, ...ys), true);
  const px = (x: number): number => plot.left + xAxis.position(x) * (plot.right - plot.left);
  const py = (y: number): number => plot.bottom - yAxis.position(y) * (plot.bottom - plot.top);

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12" fill="#222">`,
    `<title>${escapeXml(options.title)}</title>`,
    // Opaque background: the plots stay readable on a dark page.
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
  );
  if (options.subtitle !== undefined) {
    parts.push(`<text x="${width / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">${escapeXml(options.subtitle)}</text>`);
  }
  parts.push(legend(series.map((line) => line.name), plot.left, plot.top - 14));

  // Grid and tick labels.
  for (const tick of yAxis.ticks) {
    const y = round(py(tick));
    parts.push(
      `<line x1="${plot.left}" y1="${y}" x2="${plot.right}" y2="${y}" stroke="#e4e4e4"/>`,
      `<text x="${plot.left - 6}" y="${y}" dy="0.32em" text-anchor="end">${escapeXml(yFormat(tick))}</text>`,
    );
  }
  for (const tick of xAxis.ticks) {
    const x = round(px(tick));
    parts.push(
      `<line x1="${x}" y1="${plot.top}" x2="${x}" y2="${plot.bottom}" stroke="#f0f0f0"/>`,
      `<line x1="${x}" y1="${plot.bottom}" x2="${x}" y2="${plot.bottom + 5}" stroke="#222"/>`,
      `<text x="${x}" y="${plot.bottom + 18}" text-anchor="middle">${escapeXml(xFormat(tick))}</text>`,
    );
  }
  parts.push(
    // The axes are a path so that every polyline in the file is a series.
    `<path d="M${plot.left} ${plot.top}V${plot.bottom}H${plot.right}" fill="none" stroke="#222"/>`,
    `<text x="${(plot.left + plot.right) / 2}" y="${height - 14}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`,
    `<text transform="translate(18 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`,
  );

  for (const marker of options.markers ?? []) {
    const x = round(px(marker.x));
    parts.push(
      `<line x1="${x}" y1="${plot.top}" x2="${x}" y2="${plot.bottom}" stroke="#888" stroke-dasharray="4 3"/>`,
      `<text x="${x}" y="${plot.top + 12}" dx="4" font-size="11" fill="#555">${escapeXml(marker.label)}</text>`,
    );
  }

  series.forEach((line, index) => {
    const colour = PALETTE[index % PALETTE.length]!;
    const points = [...line.points].sort(([a], [b]) => a - b).map(([x, y]) => [round(px(x)), round(py(y))] as const);
    // Dense series (time lines) get small markers so the line stays readable.
    const radius = points.length > 40 ? 1.5 : 3.5;
    parts.push(
      `<g data-series="${escapeXml(line.name)}">`,
      `<polyline points="${points.map(([x, y]) => `${x},${y}`).join(' ')}" fill="none" stroke="${colour}" stroke-width="2" stroke-linejoin="round"/>`,
      ...points.map(([x, y]) => `<circle cx="${x}" cy="${y}" r="${radius}" fill="${colour}"/>`),
      '</g>',
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** One row of swatches and names; text width estimated at 0.6 em per character (no font metrics here). */
function legend(names: string[], left: number, baseline: number): string {
  const items: string[] = [];
  let x = left;
  names.forEach((name, index) => {
    const colour = PALETTE[index % PALETTE.length]!;
    items.push(
      `<line x1="${x}" y1="${baseline - 4}" x2="${x + 18}" y2="${baseline - 4}" stroke="${colour}" stroke-width="2"/>`,
      `<circle cx="${x + 9}" cy="${baseline - 4}" r="3" fill="${colour}"/>`,
      `<text x="${x + 24}" y="${baseline}">${escapeXml(name)}</text>`,
    );
    x += 24 + name.length * 7.2 + 18;
  });
  return `<g>\n${items.join('\n')}\n</g>`;
}
