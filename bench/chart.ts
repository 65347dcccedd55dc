/**
 * The benchmark's chart: an SVG with two panels of grouped bars per scenario and server: the
 * CPU a round trip costs the server (all its threads; lower is better), each bar labelled with
 * its multiple of the scenario's reference (the bare isolate, for echo), and the round trips per
 * second measured. Each scenario group has its own scale (S3 moves 64 KiB per round trip, S1
 * 64 B), so bars compare servers within a scenario, not scenarios.
 *
 * Runs on the benchmark's main thread.
 *
 * @module
 */

/** One bar: a server's figures in a scenario. */
export interface ChartBar {
  scenario: string;
  server: string;
  /** Measured round trips per second. */
  measured: number;
  /** The server's CPU per round trip, all threads, in microseconds; null if unknown. */
  cpuUs: number | null;
  /** `cpuUs` as a multiple of the scenario's reference; null for the reference itself. */
  cpuRatio: number | null;
}

const COLORS: Record<string, string> = {
  "kernel-1w": "#f28e2b",
  "kernel-1w-streams": "#ffbe7d",
  kernel: "#e15759",
  main: "#4e79a7",
  baseline: "#59a14f",
  node: "#76b7b2",
  "c-epoll": "#9c755f",
  bun: "#edc948",
};
const FALLBACK_COLORS = ["#b07aa1", "#ff9da7", "#bab0ac", "#8cd17d"];

/**
 * Renders the chart.
 *
 * @param bars Every scenario and server's figures.
 * @param caption A line under the title (date, machine).
 * @returns SVG text.
 */
export function renderChart(bars: ChartBar[], caption: string): string {
  const scenarios = [...new Set(bars.map((b) => b.scenario))];
  const servers = [...new Set(bars.map((b) => b.server))];
  const color = (server: string, i: number) =>
    COLORS[server] ?? FALLBACK_COLORS[i % FALLBACK_COLORS.length]!;
  const barWidth = 20;
  const groupWidth = servers.length * barWidth + 24;
  const panelWidth = scenarios.length * groupWidth + 20;
  const panelHeight = 220;
  const top = 70;
  const width = Math.max(panelWidth * 2 + 60, 900);
  const legendRows = Math.ceil(servers.length / 6);
  const height = top + panelHeight + 60 + legendRows * 18 + 30;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="20" y="24" font-size="15" font-weight="bold">Echo servers: CPU per round trip, and round trips per second</text>`,
    `<text x="20" y="42" fill="#555">${escape(caption)}</text>`,
  ];
  const panel = (
    x0: number,
    title: string,
    value: (b: ChartBar) => number | null,
    label: (b: ChartBar, v: number) => string,
    unit: string,
  ) => {
    parts.push(`<text x="${x0}" y="${top - 8}" font-weight="bold">${escape(title)}</text>`);
    const baseY = top + panelHeight;
    parts.push(
      `<line x1="${x0}" y1="${baseY}" x2="${x0 + panelWidth - 20}" y2="${baseY}" stroke="#333"/>`,
    );
    scenarios.forEach((scenario, g) => {
      const group = bars.filter((b) => b.scenario === scenario);
      const max = Math.max(1e-9, ...group.map((b) => value(b) ?? 0));
      const gx = x0 + g * groupWidth + 10;
      servers.forEach((server, i) => {
        const bar = group.find((b) => b.server === server);
        const v = bar === undefined ? null : value(bar);
        if (v === null || bar === undefined || !Number.isFinite(v)) return;
        const h = (v / max) * (panelHeight - 30);
        const x = gx + i * barWidth;
        parts.push(
          `<rect x="${x}" y="${baseY - h}" width="${barWidth - 4}" height="${h}" ` +
            `fill="${color(server, i)}"><title>${
              escape(`${scenario} ${server}: ${v.toLocaleString("en-US")} ${unit}`)
            }</title></rect>`,
          `<text x="${x + (barWidth - 4) / 2}" y="${baseY - h - 4}" text-anchor="middle" ` +
            `font-size="8">${escape(label(bar, v))}</text>`,
        );
      });
      parts.push(
        `<text x="${gx + (servers.length * barWidth) / 2}" y="${baseY + 16}" ` +
          `text-anchor="middle">${escape(scenario)}</text>`,
      );
    });
  };
  panel(
    20,
    "CPU per round trip, all server threads (lower is better); label: x the reference",
    (b) => b.cpuUs,
    (b, v) => b.cpuRatio === null ? v.toFixed(1) : `${b.cpuRatio.toFixed(2)}x`,
    "us per round trip",
  );
  panel(
    panelWidth + 40,
    "Round trips per second, measured here",
    (b) => b.measured,
    (_, v) => short(v),
    "round trips/s",
  );
  servers.forEach((server, i) => {
    const x = 20 + (i % 6) * 145;
    const y = top + panelHeight + 46 + Math.floor(i / 6) * 18;
    parts.push(
      `<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${color(server, i)}"/>`,
      `<text x="${x + 18}" y="${y}">${escape(server)}</text>`,
    );
  });
  parts.push(
    `<text x="20" y="${height - 12}" fill="#555">Bars within a scenario share a scale; ` +
      `scenarios do not. Reference: the bare Deno isolate (baseline) for echo, 1 worker for S5, ` +
      `memcached for S6.</text>`,
    "</svg>",
  );
  return parts.join("\n") + "\n";
}

function short(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)}k`;
  return v.toFixed(0);
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
